"""fgvc.train.optim: weight decay on every parameter as the authors' code does, the lr
rule's inverse, and the triangular schedule against FFCV's formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fgvc.models import NetSpec, build_model
from fgvc.train.optim import (
    TRIANGULAR_START,
    RecipeLR,
    Schedule,
    check_recipe,
    convert_step,
    parameter_groups,
    scaled_lr,
    unscaled_lr,
)

MULTS = {"backbone": 1.0, "head": 1.0, "classifier": 5.0}


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    spec = NetSpec("resnet18", 3, "isqrt", 8, {"iterations": 3})
    return build_model(spec)


def _train(net: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int = 2) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        images = torch.randn(2, 3, 32, 32, generator=gen)
        labels = torch.randint(0, 3, (2,), generator=gen)
        optimizer.zero_grad()
        F.cross_entropy(net(images), labels).backward()
        optimizer.step()


def _authors_sgd(net: torch.nn.Module, lr: float, wd: float) -> torch.optim.Optimizer:
    """fast-MPN-COV main.py, fine-tuning: three groups - features, representation,
    classifier x5 - every parameter decayed, SGD momentum 0.9."""
    groups = [
        {"params": net.backbone.parameters(), "lr": lr, "weight_decay": wd},
        {"params": net.head.parameters(), "lr": lr, "weight_decay": wd},
        {"params": net.classifier.parameters(), "lr": lr * 5, "weight_decay": wd},
    ]
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=wd)


@pytest.mark.parametrize("decay_all", [True, False])
def test_weight_decay_all_trains_as_the_authors_code(decay_all):
    lr, wd = 0.05, 0.01  # large enough that a missing decay shows after 2 steps
    authors, ours = _net(), _net()
    _train(authors, _authors_sgd(authors, lr, wd))
    groups = parameter_groups(ours, lr, wd, MULTS, decay_all=decay_all)
    _train(ours, torch.optim.SGD(groups, lr=lr, momentum=0.9))
    mine, theirs = dict(ours.named_parameters()), dict(authors.named_parameters())
    norm_weight = "backbone.bn1.weight"
    if decay_all:  # every parameter, norms and biases included, as theirs
        for name, value in theirs.items():
            torch.testing.assert_close(mine[name], value, rtol=1e-6, atol=1e-7)
        assert all(g["weight_decay"] == wd for g in groups)
    else:  # fgvc's default: norm weights and biases are not decayed
        assert not torch.allclose(mine[norm_weight], theirs[norm_weight], rtol=0, atol=1e-9)


def test_weight_decay_all_keeps_one_group_per_part():
    groups = parameter_groups(_net(), 0.1, 1e-4, MULTS, decay_all=True)
    assert [g["name"] for g in groups] == ["backbone", "head", "classifier"]
    assert [g["lr"] for g in groups] == pytest.approx([0.1, 0.1, 0.5])


@pytest.mark.parametrize("rule", ["linear", "sqrt", "none"])
@pytest.mark.parametrize("batch", [None, 4, 10, 80])
def test_unscaled_lr_is_what_scaling_turns_into_the_found_rate(rule, batch):
    found = 3.7e-3
    lr = unscaled_lr(found, 10, batch, rule)
    assert scaled_lr(lr, 10, batch, rule) == pytest.approx(found, rel=1e-12)
    expected = {"linear": found * 10 / (batch or 10), "sqrt": found * ((batch or 10) / 10) ** -0.5}
    assert lr == pytest.approx(expected.get(rule, found), rel=1e-12)


# -- the triangular schedule (FFCV's ImageNet "cyclic") -------------------------------------
def _ffcv_rate(step: int, steps_per_epoch: int, peak_epoch: float, epochs: int) -> float:
    """ffcv-imagenet train_imagenet.py, in float64: ``get_cyclic_lr(epoch)`` is
    ``interp(epoch, [0, peak, epochs], [1e-4, 1, 0])`` (times lr), and the rate of iteration
    ``ix`` of an epoch interpolates linearly between that epoch's and the next one's."""
    epoch, ix = divmod(step, steps_per_epoch)

    def at(e: float) -> float:
        return float(np.interp(e, [0.0, peak_epoch, epochs], [1e-4, 1.0, 0.0]))

    return float(np.interp(ix, [0, steps_per_epoch], [at(epoch), at(epoch + 1)]))


@pytest.mark.parametrize(("per_epoch", "peak", "epochs"), [(10, 2, 16), (7, 2, 40), (5, 1, 3)])
def test_triangular_is_ffcvs_cyclic_schedule(per_epoch, peak, epochs):
    s = Schedule("triangular", per_epoch, per_epoch * epochs, [], 0.1, peak)
    got = np.array([s(step) for step in range(per_epoch * epochs + 1)], dtype=np.float64)
    want = [_ffcv_rate(step, per_epoch, peak, epochs) for step in range(per_epoch * epochs)]
    np.testing.assert_allclose(got[:-1], want, rtol=1e-12, atol=1e-15)
    assert got[0] == TRIANGULAR_START and got[per_epoch * peak] == 1.0 and got[-1] == 0.0
    assert got.argmax() == per_epoch * peak and (np.diff(got[per_epoch * peak :]) < 0).all()


def test_triangular_edges():
    # no warm-up: linear decay from the first step
    s = Schedule("triangular", 4, 20, [], 0.1, 0)
    assert [s(0), s(5), s(10), s(20), s(30)] == pytest.approx([1, 0.75, 0.5, 0, 0], abs=1e-15)
    # a fractional peak (1.5 epochs of 4 steps: step 6)
    s = Schedule("triangular", 4, 20, [], 0.1, 1.5)
    assert s(3) == pytest.approx(1e-4 + (1 - 1e-4) * 3 / 6) and s(6) == 1.0
    assert s(13) == pytest.approx(1 - 7 / 14)
    # the frozen backbone's gate comes first
    s = Schedule("triangular", 5, 50, [], 0.1, 2, frozen_epochs=1)
    assert all(s(i) == 0 for i in range(5)) and s(5) == pytest.approx(1e-4 + (1 - 1e-4) * 0.5)


def test_triangular_accepted_by_check_recipe_and_others_refused():
    from fgvc.train.module import FGVCClassifier
    from tests.test_train_module import TINY

    assert FGVCClassifier(**TINY, scheduler="triangular").hparams.scheduler == "triangular"
    hp = dict(FGVCClassifier(**TINY).hparams, scheduler="onecycle")
    with pytest.raises(ValueError, match="model.scheduler must be one of step, cosine, triangular"):
        check_recipe(hp)


def _recipe_lr(per_epoch: int, epochs: int) -> RecipeLR:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [param], "lr": 0.8}], lr=0.8, momentum=0.9)
    return RecipeLR(optimizer, [Schedule("triangular", per_epoch, per_epoch * epochs, [], 1, 2)])


def test_triangular_resumes_at_the_same_point_of_training():
    """A checkpoint at step 37 of 10 steps an epoch, resumed with 4 steps an epoch (another
    global batch): epoch 3 plus 0.7 of it, the rate of that point in the new run."""
    old = _recipe_lr(10, 8)
    for _ in range(37):
        old.optimizer.step()
        old.step()
    assert old.get_last_lr()[0] == pytest.approx(0.8 * _ffcv_rate(37, 10, 2, 8))
    new = _recipe_lr(4, 8)
    new.load_state_dict(old.state_dict())
    step = convert_step(37, 10, 4)
    assert step == 3 * 4 + round(0.7 * 4) == new.last_epoch
    assert new.optimizer.param_groups[0]["lr"] == pytest.approx(0.8 * _ffcv_rate(step, 4, 2, 8))
    new.optimizer.step()
    new.step()
    assert new.get_last_lr()[0] == pytest.approx(0.8 * _ffcv_rate(step + 1, 4, 2, 8))
