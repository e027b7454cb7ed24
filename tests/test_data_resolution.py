"""Progressive resizing: FFCV's ramp, the transform that follows it, and the loaders that
change size per epoch with persistent workers while evaluation keeps its size."""

from __future__ import annotations

import functools
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fgvc.data import FolderDataModule
from fgvc.data.resolution import EpochSizedTransform, ProgressiveResize
from fgvc.data.transforms import build_transforms
from fgvc.errors import ConfigError
from tests.replicas import make_folders, pattern

#: ffcv-imagenet rn50_configs/rn50_<epochs>_epochs.yaml: (epochs, start_ramp, end_ramp), all
#: with min_res 160, max_res 192
FFCV_RN50 = [(16, 11, 13), (24, 17, 20), (32, 23, 27), (40, 29, 34), (56, 41, 48), (88, 65, 76)]


def ffcv_resolution(epoch: int, min_res: int, max_res: int, start: int, end: int) -> int:
    """ffcv-imagenet train_imagenet.py ``get_resolution``, restated with numpy."""
    if epoch <= start:
        return min_res
    if epoch >= end:
        return max_res
    interp = np.interp([epoch], [start, end], [min_res, max_res])
    return int(np.round(interp[0] / 32)) * 32


@pytest.mark.parametrize(("epochs", "start", "end"), FFCV_RN50)
def test_sizes_are_ffcvs_for_each_of_their_rn50_configs(epochs, start, end):
    schedule = ProgressiveResize(160, 192, start, end)
    got = [schedule.size(e) for e in range(epochs)]
    assert got == [ffcv_resolution(e, 160, 192, start, end) for e in range(epochs)]
    schedule.check_epochs(epochs)  # every one of their ramps ends within its run


def test_the_16_and_88_epoch_ramps_by_hand():
    # 16 epochs: epoch 12 interpolates to 176 = 5.5 x 32, a tie that rounds to even (6 x 32)
    sizes = [ProgressiveResize(160, 192, 11, 13).size(e) for e in range(16)]
    assert sizes == [160] * 12 + [192] * 4
    # 88 epochs: 160 + 32 (e - 65) / 11 is nearer 160 up to epoch 70 (5.45 x 32), 192 after
    sizes = [ProgressiveResize(160, 192, 65, 76).size(e) for e in range(88)]
    assert sizes == [160] * 71 + [192] * 17
    assert ProgressiveResize(160, 192, 65, 76).describe(88) == (
        "160 px in epochs 0-70, 192 px in epochs 71-87"
    )


def test_a_longer_ramp_passes_through_the_multiples_between():
    schedule = ProgressiveResize(128, 256, 2, 6)
    assert [schedule.size(e) for e in range(9)] == [128, 128, 128, 160, 192, 224, 256, 256, 256]
    assert list(schedule.plan(4)) == [(0, 2, 128), (3, 3, 160)]
    assert schedule.describe(4) == "128 px in epochs 0-2, 160 px in epoch 3"
    # sides that are not multiples: those in between are, kept within the two sides
    odd = ProgressiveResize(170, 180, 0, 10)
    assert {odd.size(e) for e in range(11)} == {170, 180}
    assert [ProgressiveResize(100, 140, 0, 4, multiple=1).size(e) for e in range(5)] == [
        100,
        110,
        120,
        130,
        140,
    ]
    assert ProgressiveResize(160, 160, 3, 3).size(99) == 160  # no ramp at all


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"start_size": 192, "end_size": 160, "start_epoch": 1, "end_epoch": 2},
            "end_size 160 is below start_size 192",
        ),
        (
            {"start_size": 160, "end_size": 192, "start_epoch": 5, "end_epoch": 2},
            "end_epoch 2 is before start_epoch 5",
        ),
        (
            {"start_size": 160, "end_size": 192, "start_epoch": -1, "end_epoch": 2},
            "start_epoch must be >= 0, got -1",
        ),
        (
            {"start_size": 0, "end_size": 192, "start_epoch": 0, "end_epoch": 2},
            "start_size must be >= 8, got 0",
        ),
        (
            {"start_size": 160, "end_size": 192, "start_epoch": 0, "end_epoch": 2, "multiple": 0},
            "multiple must be >= 1, got 0",
        ),
        (
            {"start_size": 160.5, "end_size": 192, "start_epoch": 0, "end_epoch": 2},
            "start_size must be an integer, got 160.5",
        ),
        (
            {"start_size": 160, "end_size": True, "start_epoch": 0, "end_epoch": 2},
            "end_size must be an integer, got True",
        ),
        (
            {"start_size": 160, "end_size": 192, "start_epoch": 0, "end_epochs": 2},
            r"unknown key\(s\) \['end_epochs'\]; it takes start_size, end_size",
        ),
        (
            {"start_size": 160, "end_size": 192},
            r"missing key\(s\) \['start_epoch', 'end_epoch'\]",
        ),
        ([160, 192], "must be a mapping of sizes and epochs, got \\[160, 192\\]"),
    ],
)
def test_bad_values_are_one_line_errors_naming_them(config, message):
    with pytest.raises(ValueError, match=message) as info:
        ProgressiveResize.from_config(config)
    assert "\n" not in str(info.value) and "data.init_args.progressive_resize" in str(info.value)


def test_a_ramp_ending_after_the_run_is_refused():
    schedule = ProgressiveResize(160, 192, 11, 13)
    schedule.check_epochs(14)  # epoch 13, the run's last, is at 192
    schedule.check_epochs(None)  # unlimited
    schedule.check_epochs(-1)
    with pytest.raises(ValueError, match=r"end_epoch 13 is past the run's last epoch 12 "):
        schedule.check_epochs(13)
    with pytest.raises(ConfigError, match="trainer.max_epochs 2"):
        EpochSizedTransform.for_run(schedule, lambda side: None, 2, 256)


# -- the transform ---------------------------------------------------------------------------
def test_the_transform_follows_the_epoch_and_each_sample_seed():
    schedule = ProgressiveResize(16, 32, 0, 2, multiple=8)
    transform = EpochSizedTransform(schedule, functools.partial(build_transforms, "generic", True))
    image = pattern(40, 56, 3)
    for epoch, side in ((0, 16), (1, 24), (2, 32), (7, 32), (1, 24)):
        transform.set_epoch(epoch)
        transform.set_random_seed(11)
        out = transform(image)
        assert transform.image_size == side and tuple(out.shape) == (3, side, side)
        # the sample is the side's own pipeline seeded with the sample's seed
        reference = build_transforms("generic", True, side, normalize=True)
        reference.set_random_seed(11)
        assert torch.equal(out, reference(image=image)["image"])
    assert sorted(transform._pipelines) == [16, 24, 32]  # one pipeline per side, reused
    # a pickled copy (what a spawned worker gets) follows the epoch as well
    clone = pickle.loads(pickle.dumps(transform))
    clone.set_epoch(0)
    assert tuple(clone(image).shape) == (3, 16, 16)


# -- the loaders -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ramped")
    make_folders(root, {"train": {"a": 6, "b": 6}})  # 10 training images, 2 held out
    return root


RAMP = {"start_size": 16, "end_size": 32, "start_epoch": 0, "end_epoch": 2, "multiple": 8}


def datamodule(root, num_workers: int, max_epochs: int = 4) -> FolderDataModule:
    dm = FolderDataModule(
        str(root),
        batch_size=5,
        num_workers=num_workers,
        image_size=20,
        preset="generic",
        seed=3,
        persistent_workers=True,
        progressive_resize=RAMP,
    )
    dm.trainer = SimpleNamespace(
        current_epoch=0,
        max_epochs=max_epochs,
        global_rank=0,
        world_size=1,
        num_nodes=1,
        log_dir=None,
        is_global_zero=True,
    )
    dm.setup("fit")
    return dm


def epochs_of(dm: FolderDataModule, epochs: int) -> list[list[torch.Tensor]]:
    """Each epoch's training images from one loader (built once, as Lightning keeps it)."""
    loader = dm.train_dataloader()
    seen = []
    for epoch in range(epochs):
        dm.trainer.current_epoch = epoch
        seen.append([images.clone() for images, _ in loader])
    return seen


@pytest.mark.parametrize("workers", [0, 2])
def test_training_batches_change_size_per_epoch_and_evaluation_does_not(folder, workers):
    dm = datamodule(folder, workers)
    assert dm.hparams.progressive_resize == RAMP  # the config as given, a plain mapping
    seen = epochs_of(dm, 4)
    sides = [{tuple(images.shape[-2:]) for images in batches} for batches in seen]
    assert sides == [{(16, 16)}, {(24, 24)}, {(32, 32)}, {(32, 32)}]
    for loader in (dm.val_dataloader(), dm.val_dataloader()):
        assert {tuple(images.shape[-2:]) for images, _ in loader} == {(20, 20)}
    assert dm.state_dict()["eval_preprocessing"]["image_size"] == 20


def test_persistent_workers_give_the_batches_of_no_workers(folder):
    in_process = epochs_of(datamodule(folder, 0), 3)
    torch.manual_seed(99)  # the workers' base seed must not matter
    in_workers = epochs_of(datamodule(folder, 2), 3)
    for got, want in zip(in_workers, in_process):
        assert len(got) == len(want) == 2
        assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_the_datamodule_refuses_a_ramp_past_the_run_and_logs_its_plan(folder, caplog):
    with pytest.raises(ConfigError, match=r"end_epoch 2 is past the run's last epoch 1 "):
        datamodule(folder, 0, max_epochs=2)
    with caplog.at_level("INFO"):
        datamodule(folder, 0, max_epochs=5)
    assert (
        "progressive resizing: training images 16 px in epoch 0, 24 px in epoch 1, 32 px in "
        "epochs 2-4; evaluation at 20 px" in caplog.text
    )
    with pytest.raises(ValueError, match="end_size 8 is below start_size 16"):
        FolderDataModule(str(folder), progressive_resize={**RAMP, "end_size": 8})
