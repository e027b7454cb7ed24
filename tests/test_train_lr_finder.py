"""fgvc.train.lr_finder: the finder's rates per part, its corrected curve, the data it sees."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.tuner.lr_finder import _LRCallback

from fgvc.data import SyntheticDataModule
from fgvc.train.lr_finder import (
    BETA,
    ProportionalGroups,
    TrainSplit,
    check_search,
    find_batch_size,
    steepest_descent,
    unbiased,
)
from fgvc.train.module import FGVCClassifier

TINY = dict(arch="resnet18", num_classes=3, reduce_dim=8, head={"iterations": 3}, pretrained=None)


def test_each_part_steps_at_its_multiple_of_the_searched_rate():
    """Lightning's finder gives every group the same rate r; during the step each part runs
    at r x lr_mult, and afterwards the groups hold r again (what the finder records)."""
    model = FGVCClassifier(**TINY, lr_mult_backbone=0.5, lr_mult_head=2.0, lr_mult_classifier=5.0)
    optimizer = torch.optim.SGD(model.parameter_groups(lr=1.0), lr=1.0)
    other = torch.nn.Linear(2, 2)
    other_opt = torch.optim.SGD(other.parameters(), lr=0.3)
    seen: list[dict[str, float]] = []
    # a per-optimizer hook runs after the global ones: it sees the rates the step uses
    optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append({g["name"]: g["lr"] for g in opt.param_groups})
    )
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    other.weight.grad = torch.ones_like(other.weight)
    with ProportionalGroups(model):
        for rate in (1e-3, 0.25):
            for group in optimizer.param_groups:  # what Lightning's _exchange_scheduler does
                group["lr"] = rate
            optimizer.step()
            assert [g["lr"] for g in optimizer.param_groups] == [rate] * 6
            other_opt.step()
            assert other_opt.param_groups[0]["lr"] == 0.3  # another optimizer: untouched
    mults = {"backbone": 0.5, "head": 2.0, "classifier": 5.0}
    for rate, rates in zip((1e-3, 0.25), seen):
        assert set(rates) == {f"{p}{s}" for p in mults for s in ("", "_no_decay")}
        for name, lr in rates.items():
            assert lr == pytest.approx(rate * mults[name.replace("_no_decay", "")], rel=1e-12)
    optimizer.step()  # outside the context: the rates as they are
    assert seen[-1] == {g["name"]: 0.25 for g in optimizer.param_groups}


@pytest.mark.parametrize("start", [0, 3])
def test_the_corrected_curve_of_a_constant_loss_is_flat(start):
    """Lightning's own smoothing (its callback, driven step by step) of a constant loss
    climbs from half of it; the corrected curve is the loss at every step."""
    callback = _LRCallback(num_training=60, early_stop_threshold=None)
    trainer = SimpleNamespace(
        fit_loop=SimpleNamespace(batch_idx=0),
        accumulate_grad_batches=1,
        strategy=SimpleNamespace(broadcast=lambda x: x),
        should_stop=False,
        global_step=start,
    )
    for _ in range(60):
        trainer.global_step += 1  # the step is taken before on_train_batch_end
        callback.on_train_batch_end(trainer, None, {"loss": torch.tensor(2.0)}, None, 0)
    assert callback.losses[0] < 1.05 and callback.losses[-1] < 1.99  # Lightning's curve
    assert unbiased(callback.losses, start, BETA) == pytest.approx([2.0] * 60, rel=1e-9)


@pytest.mark.parametrize("mode", ["exponential", "linear"])
def test_the_suggestion_is_the_steepest_descent_on_the_searched_axis(mode):
    """A loss falling fastest at lr 1e-3 (log mode) / 0.3 (linear mode), with a noise dip
    early on: the suggestion is the steepest point of the axis the rates are spaced on."""
    if mode == "exponential":
        lrs = [10 ** (-7 + 7 * k / 99) for k in range(100)]
        axis, centre, width, step = [math.log10(lr) for lr in lrs], -3.0, 0.4, 7 / 99
    else:
        lrs = [0.01 + k / 99 for k in range(100)]
        axis, centre, width, step = lrs, 0.3, 0.05, 1 / 99
    losses = [2.0 - 0.5 * math.tanh((x - centre) / width) for x in axis]
    losses[14] -= 1e-3  # noise at a tiny rate: a steep slope only against lr itself
    losses[40] = float("nan")  # a non-finite loss is left out
    index = steepest_descent(lrs, losses, mode)
    assert abs(axis[index] - centre) <= step
    assert steepest_descent(lrs[:12], losses[:12], mode) is None  # too few points


@pytest.mark.parametrize("val_split", [0.0, 0.25, None])
def test_the_finders_see_the_training_samples_fit_trains_on_and_never_the_test_split(
    tmp_path, val_split
):
    def data() -> SyntheticDataModule:
        return SyntheticDataModule(
            root=str(tmp_path), batch_size=4, num_workers=0, image_size=32,
            val_split=val_split, synth_classes=3, synth_train_per_class=8,
            synth_test_per_class=2, synth_image_size=40,
        )  # fmt: skip

    fit = data()
    fit.prepare_data()
    fit.setup("fit")
    tuned, asked = data(), []
    make = tuned.make_dataset
    tuned.make_dataset = lambda split: asked.append(split) or make(split)  # type: ignore[method-assign]
    split = TrainSplit(tuned)
    split.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    split.prepare_data()
    split.setup("fit")
    assert asked == ["train"]
    assert tuned.val_set is None and tuned.test_set is None
    assert tuned.train_set.samples == fit.train_set.samples  # the same images as fit's
    expected = 24 if val_split == 0.0 else 18 if val_split == 0.25 else 21
    assert len(tuned.train_set) == expected
    assert split.batch_size == 4
    split.batch_size = 7  # what the batch-size finder sets reaches the loaders
    assert tuned.batch_size == 7 and split.train_dataloader().batch_size == 7
    assert dict(split.hparams) == dict(tuned.hparams)


@pytest.mark.parametrize(
    "args, message",
    [
        ((1.0, 0.1, 100, "exponential"), "0 < min_lr < max_lr"),
        ((0.0, 1.0, 100, "exponential"), "0 < min_lr < max_lr"),
        ((1e-6, float("inf"), 100, "exponential"), "0 < min_lr < max_lr"),
        ((1e-6, 1.0, 5, "exponential"), "--num_training must be >= 20"),
        ((1e-6, 1.0, 100, "cosine"), "--mode must be exponential or linear"),
    ],
)
def test_searches_that_cannot_suggest_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        check_search(*args)


@pytest.mark.slow
def test_batch_size_finder_puts_the_configured_batch_back(tmp_path):
    """On the CPU nothing runs out of memory: the finder grows the batch to its cap, and the
    search continues at the configured batch."""
    data = SyntheticDataModule(
        root=str(tmp_path), batch_size=2, num_workers=0, image_size=32, val_split=0.0,
        synth_classes=3, synth_train_per_class=8, synth_test_per_class=2, synth_image_size=40,
    )  # fmt: skip
    model = FGVCClassifier(**TINY, scheduler="constant")
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
        enable_model_summary=False, max_epochs=50, default_root_dir=str(tmp_path),
    )  # fmt: skip
    found = find_batch_size(trainer, model, TrainSplit(data), max_val=8)
    assert found.configured == 2 and found.found is not None and 4 <= found.found <= 8
    assert found.used == 2 and data.batch_size == 2 and not found.reason
    assert not list(tmp_path.glob(".scale_batch_size_*"))


def test_with_progressive_resizing_the_search_trains_at_the_largest_side(tmp_path):
    """The batch-size finder must find a batch that fits the last epochs' larger images."""
    ramp = {"start_size": 16, "end_size": 32, "start_epoch": 0, "end_epoch": 1, "multiple": 8}
    data = SyntheticDataModule(
        root=str(tmp_path), batch_size=4, num_workers=0, image_size=24, preset="generic",
        synth_classes=3, synth_train_per_class=4, synth_test_per_class=1, synth_image_size=40,
        progressive_resize=ramp,
    )  # fmt: skip
    data.prepare_data()
    split = TrainSplit(data)
    split.trainer = pl.Trainer(accelerator="cpu", logger=False, max_epochs=3)
    split.setup("fit")
    assert {tuple(images.shape[-2:]) for images, _ in split.train_dataloader()} == {(32, 32)}
    data.train_set.transform.pin(None)  # without the pin, epoch 0 would train at 16
    assert {tuple(images.shape[-2:]) for images, _ in split.train_dataloader()} == {(16, 16)}
