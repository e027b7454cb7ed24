"""fgvc.train.optim: weight decay on every parameter as the authors' code does, and the lr
rule's inverse."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fgvc.models import NetSpec, build_model
from fgvc.train.optim import parameter_groups, scaled_lr, unscaled_lr

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
