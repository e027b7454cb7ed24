"""Oxford Flowers-102 against hand-made replicas of its files and torchvision's parser:
parsing, errors, ``fgvc data check|download`` and a tiny ``fgvc fit``."""

from __future__ import annotations

import dataclasses
import hashlib
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import torchvision
import yaml

import fgvc.data.download as download
from fgvc.commands.data import main
from fgvc.commands.main import main as fgvc_main
from fgvc.data.datasets.flowers102 import DATASET, FLOWERS_CLASSES, Flowers102
from fgvc.data.descriptor import DatasetSource
from tests.replicas import pattern, write_jpeg
from tests.test_commands_train import REPO, read_metrics, workdir, write_config

__all__ = ["workdir"]  # the fixture, shared with test_commands_train

FOLDER = "flowers-102"
#: 1-based class ids of the default replica: the first, the last, two with odd names
CLASS_IDS = (1, 12, 60, 102)  # pink primrose, colt's foot, pink-yellow dahlia?, blackberry lily
VARIABLES = {"train": "trnid", "val": "valid", "test": "tstid"}


@dataclasses.dataclass
class FlowersReplica:
    folder: Path
    labels: np.ndarray  # 1-based class of image id i at i - 1
    ids: dict[str, np.ndarray]  # setid.mat's lists, in file order

    def samples(self, split: str) -> list[tuple[str, int]]:
        """What a correct parser returns, computed from the arrays written."""
        names = ("train", "val") if split == "trainval" else (split,)
        return [
            (str(self.folder / "jpg" / f"image_{i:05d}.jpg"), int(self.labels[i - 1]) - 1)
            for name in names
            for i in self.ids[name].tolist()
        ]


def make_flowers(
    root: Path,
    class_ids: tuple[int, ...] = CLASS_IDS,
    per_class: tuple[int, int, int] = (2, 2, 3),
    size: tuple[int, int] = (30, 40),
) -> FlowersReplica:
    """``flowers-102/`` as the archives unpack: jpg/, and the two .mat files in the
    originals' types and shapes (uint8 1 x N labels, unsorted uint16 1 x k ids)."""
    folder = root / FOLDER
    rng = np.random.default_rng(0)
    split_of = [name for c in class_ids for name, k in zip(VARIABLES, per_class) for _ in range(k)]
    class_of = [c for c in class_ids for _ in range(sum(per_class))]
    order = rng.permutation(len(class_of))  # image ids do not follow the classes
    labels = np.array([class_of[k] for k in order], dtype=np.uint8)
    splits = [split_of[k] for k in order]
    ids = {}
    for name in VARIABLES:
        chosen = np.array([i + 1 for i, s in enumerate(splits) if s == name], dtype=np.uint16)
        ids[name] = rng.permutation(chosen)  # unsorted, as in the original
    for image_id in range(1, len(labels) + 1):
        height, width = size if image_id % 2 else size[::-1]
        write_jpeg(folder / "jpg" / f"image_{image_id:05d}.jpg", pattern(height, width, image_id))
    sio.savemat(folder / "imagelabels.mat", {"labels": labels[None, :]})
    sio.savemat(folder / "setid.mat", {v: ids[s][None, :] for s, v in VARIABLES.items()})
    return FlowersReplica(folder, labels, ids)


@pytest.fixture
def torchvision_md5s(monkeypatch):
    """torchvision checks its .mat files against the real md5s: point it at a replica's."""

    def use(folder: Path) -> None:
        files = dict(torchvision.datasets.Flowers102._file_dict)
        for key in ("label", "setid"):
            name = files[key][0]
            files[key] = (name, hashlib.md5((folder / name).read_bytes()).hexdigest())
        monkeypatch.setattr(torchvision.datasets.Flowers102, "_file_dict", files)

    return use


def assert_same_items(dataset, reference) -> None:
    """Every ``dataset[i]`` against torchvision's ``reference[i]`` (a PIL image, a label):
    the same label and size, the same pixels up to two JPEG decoders' rounding."""
    assert len(dataset) == len(reference)
    for index in range(len(dataset)):
        image, label = dataset[index]
        expected = np.asarray(reference[index][0])
        assert label == reference[index][1]
        assert image.dtype == np.uint8 and image.shape == expected.shape
        assert np.abs(image.astype(int) - expected).mean() < 1.0


def served_sources(
    sources: tuple[DatasetSource, ...], base_url: str, folder: Path
) -> tuple[DatasetSource, ...]:
    """A descriptor's sources with the URLs and checksums of the files in ``folder``,
    served at ``base_url`` (what is unpacked where stays the descriptor's)."""
    return tuple(
        dataclasses.replace(
            source,
            url=f"{base_url}/{source.filename}",
            sha256=hashlib.sha256((folder / source.filename).read_bytes()).hexdigest(),
            md5=hashlib.md5((folder / source.filename).read_bytes()).hexdigest(),
        )
        for source in sources
    )


# -- the parser --------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_matches_torchvision(tmp_path, torchvision_md5s, split):
    replica = make_flowers(tmp_path)
    torchvision_md5s(replica.folder)
    dataset = Flowers102(tmp_path, split)
    reference = torchvision.datasets.Flowers102(tmp_path, split=split)
    assert dataset.samples == [
        (str(p), t) for p, t in zip(reference._image_files, reference._labels)
    ]
    assert dataset.samples == replica.samples(split)
    assert dataset.classes == reference.classes == FLOWERS_CLASSES
    assert dataset.ids == [Path(p).stem for p, _ in dataset.samples]
    assert_same_items(dataset, reference)


def test_trainval_is_train_then_val(tmp_path, torchvision_md5s):
    replica = make_flowers(tmp_path)
    torchvision_md5s(replica.folder)
    parts = [torchvision.datasets.Flowers102(tmp_path, split=s) for s in ("train", "val")]
    expected = [(str(p), t) for r in parts for p, t in zip(r._image_files, r._labels)]
    dataset = Flowers102(tmp_path / FOLDER, "trainval")  # the dataset folder itself, too
    assert dataset.samples == expected == replica.samples("trainval")
    assert len(dataset) == 2 * 2 * len(CLASS_IDS)


def test_class_names_are_torchvisions_and_labels_0_based(tmp_path):
    make_flowers(tmp_path)
    dataset = Flowers102(tmp_path, "test")
    assert len(dataset.classes) == 102 and len(set(dataset.classes)) == 102
    names = {dataset.classes[label] for _, label in dataset.samples}
    assert names == {"pink primrose", "colt's foot", "pink-yellow dahlia?", "blackberry lily"}


def _rewrite(path: Path, **variables) -> None:
    contents = {k: v for k, v in sio.loadmat(path).items() if not k.startswith("__")}
    contents.update(variables)
    contents = {k: v for k, v in contents.items() if v is not None}
    sio.savemat(path, contents)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: (f / "imagelabels.mat").unlink(), r"imagelabels\.mat is missing"),
        (lambda f: (f / "setid.mat").write_bytes(b"junk"), r"setid\.mat: not a readable \.mat"),
        (lambda f: _rewrite(f / "setid.mat", tstid=None), r"setid\.mat has no 'tstid' variable"),
        (lambda f: _rewrite(f / "imagelabels.mat", labels=np.array([["a"]])), r"integers"),
        (
            lambda f: _rewrite(f / "setid.mat", valid=np.array([[1, 99]], np.uint16)),
            r"setid\.mat: 'valid' holds image id 99, but imagelabels\.mat labels images 1\.\.28",
        ),
        (
            lambda f: _rewrite(f / "setid.mat", valid=sio.loadmat(f / "setid.mat")["trnid"]),
            r"setid\.mat: image id \d+ is listed in both 'trnid' and 'valid'",
        ),
        (
            lambda f: _rewrite(f / "setid.mat", tstid=sio.loadmat(f / "setid.mat")["tstid"][:, 1:]),
            r"setid\.mat lists 27 images but imagelabels\.mat labels 28",
        ),
        (
            lambda f: _rewrite(f / "imagelabels.mat", labels=np.full((1, 28), 103, np.uint8)),
            r"imagelabels\.mat: image 1 has class 103; classes run from 1 to 102",
        ),
    ],
)
def test_bad_annotation_files_are_one_line_errors_naming_the_file(tmp_path, change, message):
    make_flowers(tmp_path)
    change(tmp_path / FOLDER)
    with pytest.raises((OSError, ValueError), match=message) as raised:
        Flowers102(tmp_path, "train")
    assert "\n" not in str(raised.value)


def test_unknown_split_and_missing_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"fgvc data download flowers102"):
        Flowers102(tmp_path, "train")
    make_flowers(tmp_path)
    with pytest.raises(ValueError, match=r"split must be one of .*'trainval'"):
        Flowers102(tmp_path, "validation")


def test_published_counts_checked_when_all_classes_are_labelled(tmp_path):
    make_flowers(tmp_path, class_ids=tuple(range(1, 103)), per_class=(1, 1, 1), size=(8, 8))
    with pytest.warns(UserWarning, match=r"trainval: 204 images, published 2040"):
        dataset = Flowers102(tmp_path, "trainval")
    assert (
        dataset.count_problem == "Flowers-102 count mismatch (trainval: 204 images, published 2040)"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 4 of 102 classes: a replica, not a damaged copy
        make_flowers(tmp_path / "small")
        assert Flowers102(tmp_path / "small", "test").count_problem is None


# -- fgvc data check ---------------------------------------------------------------------------
def test_check_passes_on_the_replica(tmp_path, capsys):
    make_flowers(tmp_path)
    assert main(["check", "flowers102", "--root", str(tmp_path), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    for split, count in (("train", 8), ("val", 8), ("test", 12)):
        assert f"{split}: {count} images, 102 classes" in out
    assert "28 images checked, 0 bad files, 0 problems" in out and "- ok" in out


def test_check_reports_a_corrupt_file_and_count_mismatches(tmp_path, capsys):
    replica = make_flowers(
        tmp_path, class_ids=tuple(range(1, 103)), per_class=(1, 1, 1), size=(8, 8)
    )
    corrupt, _ = replica.samples("test")[0]
    Path(corrupt).write_bytes(Path(corrupt).read_bytes()[:100])
    assert main(["check", "flowers102", "--root", str(tmp_path), "--jobs", "2"]) == 1
    out = capsys.readouterr().out
    assert f"bad file: {corrupt}" in out
    for split, count, published in (("train", 102, 1020), ("val", 102, 1020), ("test", 102, 6149)):
        assert f"{split}: {count} images, published {published}" in out
    assert "1 bad files, 3 problems" in out and "FAILED" in out


# -- fgvc data download ------------------------------------------------------------------------
def test_descriptor_sources_are_torchvisions_files():
    """URLs and md5s as torchvision has them; the archive unpacks into the dataset folder
    and the two .mat files are copied beside it."""
    reference = torchvision.datasets.Flowers102
    assert {s.filename: s.md5 for s in DATASET.sources} == dict(reference._file_dict.values())
    for source in DATASET.sources:
        assert source.url == reference._download_url_prefix + source.filename
        assert source.folder == FOLDER and source.into == "" and len(source.sha256) == 64
        assert source.extract == source.filename.endswith(".tgz")


@pytest.fixture
def served(tmp_path, http_server):
    """The three files on a loopback server; the descriptor's sources with their URLs and
    checksums replaced by the served files'."""
    base_url, folder = http_server
    replica = make_flowers(tmp_path / "build")
    with tarfile.open(folder / "102flowers.tgz", "w:gz") as tar:
        tar.add(replica.folder / "jpg", arcname="jpg")
    for name in ("imagelabels.mat", "setid.mat"):
        (folder / name).write_bytes((replica.folder / name).read_bytes())
    return served_sources(DATASET.sources, base_url, folder), replica


def test_download_builds_the_folder_the_parsers_read(
    tmp_path, monkeypatch, served, torchvision_md5s
):
    sources, replica = served
    monkeypatch.setitem(download.SOURCES, "flowers102", sources)
    root = tmp_path / "data"
    assert main(["download", "flowers102", "--root", str(root), "--no-progress"]) == 0
    assert sorted(p.name for p in root.iterdir()) == [FOLDER]  # no archives, no lock, no temp
    assert sorted(p.name for p in (root / FOLDER).iterdir()) == [
        "imagelabels.mat",
        "jpg",
        "setid.mat",
    ]
    torchvision_md5s(root / FOLDER)
    for split in ("train", "val", "test"):
        dataset = Flowers102(root, split)
        reference = torchvision.datasets.Flowers102(root, split=split)
        assert dataset.samples == [
            (str(p), t) for p, t in zip(reference._image_files, reference._labels)
        ]
        assert [(Path(p).relative_to(root), t) for p, t in dataset.samples] == [
            (Path(p).relative_to(tmp_path / "build"), t) for p, t in replica.samples(split)
        ]


@pytest.mark.parametrize("wrong", ["102flowers.tgz", "setid.mat"])
def test_a_wrong_checksum_leaves_no_dataset_behind(tmp_path, monkeypatch, served, capsys, wrong):
    """No dataset folder, no partial or temporary file, and none of the files fetched
    before the bad one: a failed download keeps nothing."""
    good, _ = served
    bad = tuple(dataclasses.replace(s, sha256="0" * 64) if s.filename == wrong else s for s in good)
    monkeypatch.setitem(download.SOURCES, "flowers102", bad)
    root = tmp_path / "data"
    assert main(["download", "flowers102", "--root", str(root), "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert "checksum mismatch" in error and wrong in error
    assert list(root.iterdir()) == []
    monkeypatch.setitem(download.SOURCES, "flowers102", good)
    assert main(["download", "flowers102", "--root", str(root), "--no-progress"]) == 0
    assert len(Flowers102(root, "test")) == 12


# -- the DataModule and a tiny fit through configs/data/flowers102.yaml -------------------------
@pytest.mark.parametrize(
    ("val_split", "train", "val"), [(0.0, "trainval", "test"), (None, "train", "val")]
)
def test_datamodule_protocols(tmp_path, val_split, train, val):
    """val_split 0 (the config's): train on train + val, validate on test; None: the
    official val split."""
    from fgvc.data import Flowers102DataModule

    replica = make_flowers(tmp_path)
    data = Flowers102DataModule(
        root=str(tmp_path), val_split=val_split, image_size=16, num_workers=0
    )
    assert data.preset == "flowers102" and data.num_classes == 102
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # val_split 0 says that it validates on test
        data.setup("fit")
    assert data.train_set.samples == replica.samples(train)
    assert data.val_set.samples == replica.samples(val)


@pytest.mark.slow
def test_fit_composes_with_the_data_config(workdir, capsys):
    make_flowers(workdir / "data", class_ids=(3, 50, 77))
    recipe = write_config(workdir, max_epochs=1)
    config = yaml.safe_load(recipe.read_text())
    config["trainer"]["logger"] = config["trainer"]["logger"][:1]  # CSV only: a faster start
    recipe.write_text(yaml.safe_dump(config))
    data_config = REPO / "configs" / "data" / "flowers102.yaml"
    assert yaml.safe_load(data_config.read_text()).keys() == {"data"}
    args = ["fit", "--config", str(recipe), "--config", str(data_config)]
    args += ["--data.init_args.root", str(workdir / "data"), "--data.init_args.download", "false"]
    args += ["--data.init_args.image_size", "32", "--data.init_args.batch_size", "4"]
    args += ["--data.init_args.num_workers", "0"]
    assert fgvc_main(args) == 0, capsys.readouterr().err[-3000:]
    run = workdir / "runs" / "tiny" / "version_0"
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert saved["class_path"] == "fgvc.data.Flowers102DataModule"
    # the dataset from the data config, the protocol from the recipe
    assert saved["init_args"]["preset"] == "flowers102"
    assert saved["init_args"]["val_split"] == config["data"]["init_args"]["val_split"]
    assert not any(key.startswith("synth") for key in saved["init_args"])  # the recipe's data
    hparams = yaml.safe_load((run / "hparams.yaml").read_text())
    assert hparams["num_classes"] == 102 and hparams["class_names"] == FLOWERS_CLASSES
    assert any(row.get("val/top1") for row in read_metrics(run))
