"""DataModules: classes before setup, stratified seeded splits, split files, loaders."""

from __future__ import annotations

import json
import warnings
from collections import Counter

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from fgvc.data import (
    AircraftDataModule,
    CarsDataModule,
    CUBDataModule,
    FolderDataModule,
    SyntheticDataModule,
)
from fgvc.data.splits import read_split_file, stratified_split
from fgvc.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from tests.replicas import (
    AIRCRAFT_VARIANTS,
    CAR_NAMES,
    make_aircraft,
    make_cars_folders,
    make_cub,
    make_folders,
)

SMALL = dict(batch_size=4, num_workers=0, image_size=32)


def _break_all_images(folder):
    for path in folder.rglob("*.jpg"):
        path.write_bytes(b"not a jpeg")


# -- stratified split --------------------------------------------------------------------------
def test_stratified_split_properties():
    labels = [0] * 10 + [1] * 20 + [2] * 3 + [3] * 1 + [4] * 2
    train, val = stratified_split(labels, 0.2, seed=1)
    assert sorted(train + val) == list(range(len(labels))) and not set(train) & set(val)
    counts = Counter(labels[i] for i in val)
    assert counts == {0: 2, 1: 4, 2: 1, 4: 1}  # round(0.2 n), >= 1 each side, singleton kept
    assert stratified_split(labels, 0.2, seed=1) == (train, val)
    draws = {tuple(stratified_split(labels, 0.2, seed=s)[1]) for s in range(6)}
    assert len(draws) > 1
    assert stratified_split(labels, 0.0, seed=1) == (list(range(len(labels))), [])
    with pytest.raises(ValueError, match="val_split"):
        stratified_split(labels, 1.0)


# -- classes right after construction ----------------------------------------------------------
def test_classes_available_without_setup_or_decoding(tmp_path):
    cub = make_cub(tmp_path / "cub")
    make_cars_folders(tmp_path / "cars")
    make_aircraft(tmp_path / "air")
    make_folders(tmp_path / "folder", {"train": {"x": 2, "y": 2}})
    for folder in tmp_path.iterdir():
        _break_all_images(folder)
    assert CUBDataModule(str(tmp_path / "cub")).classes == cub.classes
    assert CarsDataModule(str(tmp_path / "cars")).num_classes == len(CAR_NAMES)
    assert CarsDataModule(str(tmp_path / "cars")).classes[1] == "Ram C/V Cargo Van Minivan 2012"
    air = AircraftDataModule(str(tmp_path / "air"))
    assert air.num_classes == len(AIRCRAFT_VARIANTS) and air.classes == AIRCRAFT_VARIANTS
    assert AircraftDataModule(str(tmp_path / "air"), level="manufacturer").num_classes == 5
    assert FolderDataModule(str(tmp_path / "folder")).classes == ["x", "y"]
    synth = SyntheticDataModule(str(tmp_path / "synth"), synth_classes=7)
    assert synth.num_classes == 7 and not (tmp_path / "synth").exists()


def test_hyperparameters_are_the_constructor_arguments(tmp_path):
    dm = AircraftDataModule(str(tmp_path), level="family", val_split=0.2, **SMALL)
    assert dm.hparams.level == "family" and dm.hparams.val_split == 0.2
    assert dm.hparams.batch_size == 4 and dm.hparams.preset == "aircraft"
    with pytest.raises(ValueError, match="val_split"):
        CUBDataModule(str(tmp_path), val_split=1.5)
    with pytest.raises(ValueError, match="preset"):
        CUBDataModule(str(tmp_path), preset="bird")


def test_datamodules_build_a_jsonargparse_parser():
    from jsonargparse import ArgumentParser

    for cls in (CUBDataModule, AircraftDataModule, SyntheticDataModule, FolderDataModule):
        parser = ArgumentParser()
        parser.add_class_arguments(cls, "data")
        config = parser.parse_args(["--data.root=x", "--data.val_split=0.25"])
        assert config.data.root == "x" and config.data.val_split == 0.25


# -- validation protocols ----------------------------------------------------------------------
def test_val_split_is_stratified_seeded_and_recorded(tmp_path):
    replica = make_cub(tmp_path / "cub", num_classes=4, per_class=(6, 2), size=(16, 16))
    train_truth = replica.samples["train"]
    dm = CUBDataModule(
        str(tmp_path / "cub"), val_split=0.34, seed=7, split_dir=str(tmp_path / "run"), **SMALL
    )
    dm.setup("fit")
    assert Counter(label for _, label in dm.val_set.samples) == {c: 2 for c in range(4)}
    assert sorted(dm.train_set.samples + dm.val_set.samples) == sorted(train_truth)
    assert dm.test_set is None  # test untouched by fit
    recorded = json.loads((tmp_path / "run" / "val_split.json").read_text())
    assert recorded["val_ids"] == dm.val_ids == dm.val_set.ids and recorded["seed"] == 7
    again = CUBDataModule(str(tmp_path / "cub"), val_split=0.34, seed=7, **SMALL)
    again.setup("fit")
    assert again.val_ids == dm.val_ids
    other = CUBDataModule(str(tmp_path / "cub"), val_split=0.34, seed=8, **SMALL)
    other.setup("fit")
    assert other.val_ids != dm.val_ids
    # reproduce from the file, whatever the seed
    reread = CUBDataModule(
        str(tmp_path / "cub"),
        seed=123,
        val_ids_file=str(tmp_path / "run" / "val_split.json"),
        **SMALL,
    )
    reread.setup("fit")
    assert reread.val_set.ids == dm.val_ids and reread.train_set.samples == dm.train_set.samples
    assert read_split_file(tmp_path / "run" / "val_split.json") == dm.val_ids


def test_val_ids_file_for_another_dataset_is_refused(tmp_path):
    make_cub(tmp_path / "cub")
    (tmp_path / "split.json").write_text(json.dumps({"val_ids": ["9999"]}))
    dm = CUBDataModule(str(tmp_path / "cub"), val_ids_file=str(tmp_path / "split.json"), **SMALL)
    with pytest.raises(ValueError, match="9999"):
        dm.setup("fit")


def test_val_split_zero_is_the_authors_protocol_and_warns(tmp_path):
    replica = make_cub(tmp_path)
    dm = CUBDataModule(str(tmp_path), val_split=0.0, **SMALL)
    with pytest.warns(UserWarning, match="authors' protocol"):
        dm.setup("fit")
    assert dm.train_set.samples == replica.samples["train"]
    assert dm.val_set.samples == replica.samples["test"]


def test_aircraft_protocols(tmp_path):
    replica = make_aircraft(tmp_path, per_split=6)
    official = AircraftDataModule(str(tmp_path), **SMALL)
    official.setup("fit")
    assert official.train_set.samples == replica.samples["variant/train"]
    assert official.val_set.samples == replica.samples["variant/val"]
    papers = AircraftDataModule(str(tmp_path), val_split=0.0, **SMALL)
    with pytest.warns(UserWarning, match="test"):
        papers.setup("fit")
    assert papers.train_set.samples == replica.samples["variant/trainval"]
    assert papers.val_set.samples == replica.samples["variant/test"]
    held_out = AircraftDataModule(
        str(tmp_path), val_split=0.25, split_dir=str(tmp_path / "r"), **SMALL
    )
    held_out.setup("fit")
    both = held_out.train_set.samples + held_out.val_set.samples
    assert sorted(both) == sorted(replica.samples["variant/trainval"])
    assert set(held_out.val_ids) <= set(replica.ids["variant/trainval"])
    held_out.setup("test")
    assert held_out.test_set.samples == replica.samples["variant/test"]


def test_folder_protocols(tmp_path):
    make_folders(tmp_path / "a", {"train": {"x": 4, "y": 4}, "val": {"y": 2}})
    dm = FolderDataModule(str(tmp_path / "a"), **SMALL)
    dm.setup()
    assert len(dm.val_set) == 2 and {label for _, label in dm.val_set.samples} == {1}
    assert dm.test_set.samples == dm.val_set.samples  # no test/: the val folder
    make_folders(tmp_path / "b", {"train": {"x": 5, "y": 5}, "test": {"x": 1}})
    dm = FolderDataModule(str(tmp_path / "b"), **SMALL)
    dm.setup()
    assert len(dm.val_set) == 2 and len(dm.train_set) == 8 and len(dm.test_set) == 1


def test_a_single_class_is_refused_before_anything_is_built(tmp_path):
    make_folders(tmp_path / "one", {"train": {"bird": 4}, "val": {"bird": 2}})
    dm = FolderDataModule(str(tmp_path / "one"), **SMALL)
    with pytest.raises(ValueError) as info:
        dm.num_classes  # noqa: B018 - the CLI links it into the model first
    assert str(info.value) == (
        f"a classifier needs at least 2 classes; the train split of {tmp_path / 'one'} has "
        f"1 ('bird')"
    )


# -- loaders and device normalization ----------------------------------------------------------
def test_loaders_ship_uint8_and_the_hook_normalizes(tmp_path):
    make_cub(tmp_path, num_classes=2, per_class=(6, 3))
    dm = CUBDataModule(str(tmp_path), val_split=0.0, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 32, 32)
    assert labels.dtype == torch.int64
    normalized, same_labels = dm.on_after_batch_transfer([images, labels], 0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(normalized, (images.float() / 255 - mean) / std)
    assert same_labels is labels
    cpu = CUBDataModule(str(tmp_path), val_split=0.0, normalize_on_device=False, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpu.setup("fit")
    val_images, _ = next(iter(cpu.val_dataloader()))
    assert val_images.dtype == torch.float32
    assert cpu.on_after_batch_transfer([val_images, labels], 0)[0] is val_images


class _Probe(pl.LightningModule):
    """Checks what a model receives; one linear layer on pooled pixels."""

    def __init__(self, num_classes):
        super().__init__()
        self.fc = torch.nn.Linear(3, num_classes)
        self.seen = []

    def _step(self, batch):
        images, labels = batch
        assert images.dtype == torch.float32 and -2.2 < images.min() and images.max() < 2.7
        self.seen.append(tuple(images.shape))
        return torch.nn.functional.cross_entropy(self.fc(images.mean((2, 3))), labels)

    def training_step(self, batch, batch_idx):
        return self._step(batch)

    def validation_step(self, batch, batch_idx):
        self._step(batch)

    def test_step(self, batch, batch_idx):
        self._step(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_synthetic_datamodule_with_a_trainer(tmp_path):
    dm = SyntheticDataModule(
        str(tmp_path / "data"),
        synth_classes=3,
        synth_train_per_class=6,
        synth_test_per_class=2,
        synth_image_size=48,
        val_split=0.34,
        **SMALL,
    )
    model = _Probe(dm.num_classes)
    trainer = pl.Trainer(
        max_epochs=1,
        log_every_n_steps=1,
        logger=CSVLogger(str(tmp_path / "logs")),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, datamodule=dm)
    assert (tmp_path / "data" / "synthetic" / "synth.json").is_file()
    split_file = tmp_path / "logs" / "lightning_logs" / "version_0" / "val_split.json"
    assert json.loads(split_file.read_text())["val_ids"] == dm.val_ids
    assert len(dm.val_ids) == 6 and Counter(dm.val_set.targets) == {0: 2, 1: 2, 2: 2}
    trainer.test(model, datamodule=dm, verbose=False)
    assert len(dm.test_set) == 6 and (4, 3, 32, 32) in model.seen


def test_workers_get_distinct_augmentation_streams(tmp_path):
    make_folders(tmp_path, {"train": {"a": 12}})
    for path in (tmp_path / "train").rglob("*.jpg"):  # identical images everywhere
        path.write_bytes(next((tmp_path / "train").rglob("*.jpg")).read_bytes())
    dm = FolderDataModule(str(tmp_path), val_split=0.1, batch_size=4, num_workers=2, image_size=16)
    dm.setup("fit")
    torch.manual_seed(0)
    first, second = list(dm.train_dataloader())[:2]  # one batch from each worker
    assert not torch.equal(first[0], second[0])
    torch.manual_seed(0)
    again = list(dm.train_dataloader())[:2]
    assert torch.equal(first[0], again[0][0]) and torch.equal(second[0], again[1][0])


def test_synthetic_prepare_data_generates_once(tmp_path):
    dm = SyntheticDataModule(
        str(tmp_path),
        synth_classes=2,
        synth_train_per_class=3,
        synth_test_per_class=1,
        synth_image_size=32,
        **SMALL,
    )
    dm.prepare_data()
    stamp = (tmp_path / "synthetic" / "images.txt").stat().st_mtime_ns
    other = SyntheticDataModule(str(tmp_path), synth_classes=5, **SMALL)
    with pytest.warns(UserWarning, match="using it as it is"):
        other.prepare_data()
    assert (tmp_path / "synthetic" / "images.txt").stat().st_mtime_ns == stamp
    assert other.num_classes == 2  # the files decide
    dm.setup("fit")
    assert np.asarray(dm.train_set[0][0]).shape == (3, 32, 32)


def test_lightning_cli_links_num_classes_into_the_model(tmp_path, monkeypatch):
    from fgvc.train.cli import FGVCCLI

    monkeypatch.setattr("sys.argv", ["fgvc"])

    class Model(pl.LightningModule):
        def __init__(self, num_classes: int = 2, class_names: list[str] | None = None):
            super().__init__()
            self.num_classes = num_classes

    args = ["--data=fgvc.data.SyntheticDataModule", f"--data.root={tmp_path}"]
    args += ["--data.synth_classes=5", "--trainer.logger=false"]
    cli = FGVCCLI(Model, run=False, subclass_mode_data=True, args=args)
    assert isinstance(cli.datamodule, SyntheticDataModule) and cli.model.num_classes == 5
    assert not (tmp_path / "synthetic").exists()  # nothing generated before prepare_data


def test_workers_do_not_deadlock_after_opencv_ran_threads_here(tmp_path):
    """A process that used OpenCV's thread pool (e.g. writing a dataset) and then forks
    DataLoader workers that call OpenCV used to hang forever (seen in benchmarks/gpu_check)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.replicas import make_folders

    make_folders(tmp_path / "data", {"train": {"a": 4, "b": 4}, "val": {"a": 2, "b": 2}})
    code = f"""
import numpy as np, cv2
from fgvc.data import FolderDataModule
big = np.random.default_rng(0).integers(0, 255, (853, 1280, 3), dtype=np.uint8)
for _ in range(20):  # large enough for OpenCV to run these on its thread pool
    cv2.resize(big, (640, 427)); cv2.GaussianBlur(big, (5, 5), 0)
dm = FolderDataModule({str(tmp_path / "data")!r}, image_size=32, batch_size=4, num_workers=2,
                      persistent_workers=False)
dm.setup("fit")
for _ in range(3):
    for images, labels in dm.train_dataloader():
        assert images.shape[1:] == (3, 32, 32)
print("done")
"""
    repo = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": repo},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "done" in proc.stdout, proc.stderr[-2000:]


def test_a_split_file_for_other_images_is_refused_in_one_line(tmp_path):
    from fgvc.data.splits import indices_from_file, write_split_file

    path = write_split_file(tmp_path / "val_split.json", ["b", "d"])
    assert indices_from_file(["a", "b", "c", "d", "e"], path, "x") == ([0, 2, 4], [1, 3])
    with pytest.raises(ValueError) as err:
        indices_from_file(["a", "b", "c"], path, "the train split of data")
    message = str(err.value)
    assert "1 validation ids are not in the train split of data (first: ['d'])" in message
    assert "\n" not in message
