"""``fgvc.data.ShardDataModule``: the folder DataModule's classes, protocols and evaluation
pixels from shards; ``fgvc fit`` from shards on 1 and 2 gloo processes (every image once an
epoch, evaluation equal to one process); the ImageNet recipe's config reading shards."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

import fgvc.data
from fgvc.commands.main import main
from fgvc.data.datamodules import FolderDataModule
from fgvc.data.shards.write import write_shards
from tests.replicas import make_folders
from tests.test_commands_train import (  # noqa: F401 - the fixture
    REPO,
    last_value,
    read_metrics,
    run_fgvc,
    workdir,
    write_config,
)
from tests.test_configs_imagenet import tiny_imagenet_args
from tests.test_data_datasets_imagenet import make_imagenet

SPLITS = {"train": {"a": 6, "b": 5, "c": 4}, "val": {"a": 2, "b": 2, "c": 1}}


def shard_folders(root: Path, splits=SPLITS) -> tuple[Path, Path]:
    folders = make_folders(root / "folders", splits)
    write_shards("folder", folders, str(root / "shards"), jobs=1, chunk_bytes="3KB", log=str)
    return folders, root / "shards"


def both(folders: Path, shards: Path, **kwargs) -> tuple:
    args = {"batch_size": 4, "num_workers": 0, "image_size": 16, **kwargs}
    return FolderDataModule(str(folders), **args), fgvc.data.ShardDataModule(str(shards), **args)


def pixels(dataset) -> list[tuple[bytes, int]]:
    return [(image.numpy().tobytes(), label) for image, label in dataset]


def test_official_val_and_test_are_the_folder_modules_pixels(tmp_path):
    folders, shards = shard_folders(tmp_path)
    folder, shard = both(folders, shards)
    assert shard.classes == folder.classes == ["a", "b", "c"] and shard.num_classes == 3
    assert shard.preset == "generic" and shard.state_dict() == folder.state_dict()
    for dm in (folder, shard):
        dm.setup("fit")
        dm.setup("test")
    assert shard.val_set.ids == folder.val_set.ids and len(shard.val_set) == 5
    assert pixels(shard.val_set) == pixels(folder.val_set)
    assert pixels(shard.test_set) == pixels(folder.test_set)
    assert shard.train_class_counts() == folder.train_class_counts() == [6, 5, 4]


def test_held_out_fraction_is_the_folder_modules_draw(tmp_path):
    folders, shards = shard_folders(tmp_path)
    folder, shard = both(folders, shards, val_split=0.4, split_dir=str(tmp_path / "split"))
    folder.setup("fit")
    shard.setup("fit")
    assert shard.val_ids == folder.val_ids and len(shard.val_ids) == 6
    assert pixels(shard.val_set) == pixels(folder.val_set)
    assert shard.train_class_counts() == folder.train_class_counts()
    # the training stream holds the other images, each once
    streamed = [lab for _, labels in shard.train_dataloader() for lab in labels.tolist()]
    assert sorted(streamed) == sorted(folder.train_set.targets) and len(streamed) == 9
    # the recorded split reproduces itself
    again = fgvc.data.ShardDataModule(
        str(shards), image_size=16, val_ids_file=str(tmp_path / "split" / "val_split.json")
    )
    again.setup("fit")
    assert again.val_set.ids == shard.val_set.ids
    zero = fgvc.data.ShardDataModule(str(shards), image_size=16, val_split=0)
    zero.setup("fit")
    assert zero.val_set.split == "val" and len(zero.train_set) == 15


def test_bad_settings_are_one_line(tmp_path):
    _, shards = shard_folders(tmp_path)
    with pytest.raises(ValueError, match="ShardDataModule streams every image once an epoch"):
        fgvc.data.ShardDataModule(str(shards), sampler="balanced")
    with pytest.raises(FileNotFoundError, match="is not a complete shard folder; write one with"):
        fgvc.data.ShardDataModule(str(tmp_path / "folders"))
    dm = fgvc.data.ShardDataModule(str(shards), val_split=0)
    (shards / "samples-val.json.gz").unlink()
    with pytest.raises(FileNotFoundError, match="samples-val.json.gz not found"):
        dm.check_splits("fit")


def one_image_a_class_config(folder: Path, count: int = 11) -> Path:
    """The tiny fit config on shards of ``count`` classes of one image each (the logged
    training labels name the images), validated on one image a class."""
    names = {f"c{i:02d}": 1 for i in range(count)}
    shard_folders(folder, {"train": names, "val": names})
    cfg = write_config(folder, max_epochs=2, logger=[_csv(folder)])
    config = yaml.safe_load(cfg.read_text())
    config["data"] = {
        "class_path": "fgvc.data.ShardDataModule",
        "init_args": {
            "root": str(folder / "shards"),
            "batch_size": 2,
            "num_workers": 1,
            "image_size": 32,
        },
    }
    config["trainer"]["callbacks"] = [
        {"class_path": "tests.cli_helpers.LogTrainLabels", "init_args": {"folder": "seen"}}
    ]
    cfg.write_text(yaml.safe_dump(config))
    return cfg


def _csv(folder: Path) -> dict:
    return {
        "class_path": "fgvc.train.loggers.CSVLogger",
        "init_args": {"save_dir": str(folder / "runs"), "name": "tiny"},
    }


def seen(folder: Path, rank: int, epoch: int) -> list[list[int]]:
    return json.loads((folder / f"rank{rank}-epoch{epoch}.json").read_text())


@pytest.mark.slow
def test_fit_on_one_and_two_processes_sees_every_image_once(workdir):  # noqa: F811
    cfg = one_image_a_class_config(workdir)
    assert main(["fit", "--config", str(cfg)]) == 0
    (workdir / "seen").rename(workdir / "seen1")
    proc = run_fgvc(
        workdir, "fit", "--config", str(cfg), "--trainer.devices", "2", "--trainer.strategy", "ddp"
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for epoch in (0, 1):
        one = seen(workdir / "seen1", 0, epoch)
        assert sorted(v for b in one for v in b) == list(range(11)) and len(one) == 6
        ranks = [seen(workdir / "seen", r, epoch) for r in (0, 1)]
        assert len(ranks[0]) == len(ranks[1]) == 3  # ceil(11 / (2 x 2)) batches each
        assert sorted(v for r in ranks for b in r for v in b) == list(range(11))
    assert seen(workdir / "seen1", 0, 0) != seen(workdir / "seen1", 0, 1)  # reshuffled
    # the two-process run's last validation equals one process validating its weights
    two = workdir / "runs" / "tiny" / "version_1"
    ckpt = two / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    assert main(["validate", "--config", str(cfg), "--ckpt_path", str(ckpt)]) == 0
    proc = run_fgvc(
        workdir, "test", "--config", str(cfg), "--ckpt_path", str(ckpt),
        "--trainer.devices", "2", "--trainer.strategy", "ddp",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(["test", "--config", str(cfg), "--ckpt_path", str(ckpt)]) == 0
    # (a test run writes into the fit run's folder: its rows follow the fit's)
    fit2, val1 = (read_metrics(workdir / "runs" / "tiny" / f"version_{v}") for v in (1, 2))
    test2, test1 = [r for r in fit2 if r.get("test/top1")]
    # top-5 is left out: a barely trained net's 11 logits tie to the last bit, and which of
    # the tied classes make the five flips with the batch composition (folders alike)
    keys = [k for k in val1[0] if k.startswith("val/") and "top5" not in k]
    assert {"val/top1", "val/loss", "val/mean_class_acc", "val/top1_tta"} <= set(keys)
    for key in keys:
        assert last_value(val1, key) == pytest.approx(last_value(fit2, key), abs=1e-6), key
    keys = [k.replace("val/", "test/") for k in keys]
    for key in keys:
        assert float(test2[key]) == pytest.approx(float(test1[key]), abs=1e-6), key
    with open(two / "val_per_class.csv") as f:
        assert sum(int(r["support"]) for r in csv.DictReader(f)) == 11


@pytest.mark.slow
def test_imagenet_recipe_trains_from_shards(workdir):  # noqa: F811
    make_imagenet(workdir / "data")
    assert main(["data", "shard", "imagenet", "--root", "data", "--out", "shards", "-j", "1"]) == 0
    tiny = [*tiny_imagenet_args(root="shards"), "--model.milestones=[1]"]
    config = str(REPO / "configs" / "imagenet_isqrt_r50.yaml")
    shards = str(REPO / "configs" / "data" / "imagenet_shards.yaml")
    assert main(["fit", "--config", config, "--config", shards, *tiny]) == 0
    (run,) = (workdir / "runs").glob("*/version_0")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    prep = ckpt["ShardDataModule"]["eval_preprocessing"]  # what an export replays
    assert (prep["preset"], prep["image_size"]) == ("imagenet", 32)
    assert ckpt["epoch"] == 1
    val = [r for r in read_metrics(run) if r.get("val/top1")]
    assert len(val) == 2
    # the same weights validated on the JPEG folders (data/imagenet.yaml): the same figures
    last = str(run / "checkpoints" / "last.ckpt")
    folder = [a for a in tiny if not a.startswith("--data.init_args.root")]
    assert main(["validate", "--config", config, *folder, "--ckpt_path", last]) == 0
    (again,) = (workdir / "runs").glob("*/version_1")
    rows = read_metrics(again)
    for key in ("val/top1", "val/loss", "val/mean_class_acc"):
        assert last_value(rows, key) == pytest.approx(float(val[-1][key]), abs=1e-6), key
    # two processes: the same recipe trains from the same shards, and the figures it logs
    # equal one process validating its weights
    runs = set((workdir / "runs").glob("*/version_*"))
    proc = run_fgvc(
        workdir, "fit", "--config", config, "--config", shards, *tiny,
        "--trainer.devices=2", "--trainer.strategy=ddp",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (two,) = set((workdir / "runs").glob("*/version_*")) - runs
    assert torch.load(two / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    logged = [r for r in read_metrics(two) if r.get("val/top1")]
    last = str(two / "checkpoints" / "last.ckpt")
    runs = set((workdir / "runs").glob("*/version_*"))
    assert (
        main(["validate", "--config", config, "--config", shards, *tiny, "--ckpt_path", last]) == 0
    )
    (one,) = set((workdir / "runs").glob("*/version_*")) - runs
    rows = read_metrics(one)
    for key in ("val/top1", "val/loss", "val/mean_class_acc"):
        assert last_value(rows, key) == pytest.approx(float(logged[-1][key]), abs=1e-6), key
