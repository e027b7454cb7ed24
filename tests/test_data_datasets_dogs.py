"""Stanford Dogs against a hand-made replica of its lists and folders, and its two-archive
download from a loopback server."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

import fgvc.data.download as download
from fgvc.commands.data import main
from fgvc.data.datasets.dogs import StanfordDogs, breed_name
from fgvc.data.descriptor import DatasetSource
from tests.replicas import pattern, write_jpeg

# sorted as the real folders are; breeds holding hyphens, underscores and mixed case
FOLDERS = [
    "n02085620-Chihuahua",
    "n02086240-Shih-Tzu",
    "n02089078-black-and-tan_coonhound",
    "n02100236-German_short-haired_pointer",
]
NAMES = ["Chihuahua", "Shih-Tzu", "black-and-tan coonhound", "German short-haired pointer"]


def _cell(items: list[str]) -> np.ndarray:
    cell = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        cell[i, 0] = item
    return cell


def make_dogs(root: Path, per_class: tuple[int, int] = (2, 1)) -> dict[str, list]:
    """``root/stanford_dogs`` as the three archives unpack; returns per split the
    (path, label) pairs a correct parser must find, in list order."""
    folder = root / "stanford_dogs"
    truth: dict[str, list] = {"train": [], "test": []}
    for split, count, offset in (("train", per_class[0], 0), ("test", per_class[1], 50)):
        files, labels = [], []
        for label, breed in enumerate(FOLDERS):
            synset = breed.split("-")[0]
            for k in range(count):
                rel = f"{breed}/{synset}_{offset + k}.jpg"
                write_jpeg(folder / "Images" / rel, pattern(18, 22, 7 * label + k + offset))
                files.append(rel)
                labels.append(label + 1)
                truth[split].append((str(folder / "Images" / rel), label))
        sio.savemat(
            folder / f"{split}_list.mat",
            {
                "file_list": _cell(files),
                "annotation_list": _cell([f[: -len(".jpg")] for f in files]),
                "labels": np.array(labels, dtype=np.uint8).reshape(-1, 1),
            },
        )
    return truth


@pytest.mark.parametrize("split", ["train", "test"])
def test_lists_and_breed_names(tmp_path, split):
    truth = make_dogs(tmp_path)
    dataset = StanfordDogs(tmp_path, split)
    assert dataset.classes == NAMES
    assert dataset.samples == truth[split]
    assert dataset.ids == [
        str(Path(p).relative_to(tmp_path / "stanford_dogs" / "Images")) for p, _ in truth[split]
    ]
    image, label = dataset[len(dataset) - 1]
    assert image.shape == (18, 22, 3) and label == 3


def test_one_image_lists_are_read(tmp_path):
    truth = make_dogs(tmp_path, per_class=(1, 1))
    folder = tmp_path / "stanford_dogs"
    rel = str(Path(truth["test"][0][0]).relative_to(folder / "Images"))
    sio.savemat(  # a one-entry list: scipy squeezes it to scalars
        folder / "test_list.mat",
        {"file_list": _cell([rel]), "labels": np.array([[1]], dtype=np.uint8)},
    )
    assert StanfordDogs(tmp_path, "test").samples == truth["test"][:1]


def test_breed_name_splits_on_the_first_hyphen():
    assert breed_name("n02086240-Shih-Tzu") == "Shih-Tzu"
    assert breed_name("n02085782-Japanese_spaniel") == "Japanese spaniel"
    with pytest.raises(ValueError, match="synset"):
        breed_name("Chihuahua")


def test_label_given_to_two_folders_is_one_line(tmp_path):
    make_dogs(tmp_path)
    path = tmp_path / "stanford_dogs" / "train_list.mat"
    mat = sio.loadmat(path)
    mat["labels"][0, 0] = 2  # a Chihuahua image labelled as the Shih-Tzu
    sio.savemat(path, {k: v for k, v in mat.items() if not k.startswith("__")})
    with pytest.raises(ValueError, match="label 2 is given to images of"):
        StanfordDogs(tmp_path, "train")


def test_missing_list_names_the_file(tmp_path):
    make_dogs(tmp_path)
    (tmp_path / "stanford_dogs" / "test_list.mat").unlink()
    with pytest.raises(FileNotFoundError, match="test_list.mat is missing.*download dogs"):
        StanfordDogs(tmp_path, "train")


def _tar(path: Path, base: Path, members: list[str]) -> str:
    with tarfile.open(path, "w") as tar:  # the real archives are plain tar
        for member in members:
            tar.add(base / member, arcname=member)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_unpacks_both_archives_into_one_folder(tmp_path, monkeypatch, http_server):
    base_url, served = http_server
    truth = make_dogs(tmp_path / "build")
    built = tmp_path / "build" / "stanford_dogs"
    images_sha = _tar(served / "images.tar", built, ["Images"])
    lists_sha = _tar(served / "lists.tar", built, ["train_list.mat", "test_list.mat"])
    good_images = DatasetSource(
        f"{base_url}/images.tar", "images.tar", "stanford_dogs", sha256=images_sha, into=""
    )
    bad_lists = DatasetSource(
        f"{base_url}/lists.tar", "lists.tar", "stanford_dogs", sha256="0" * 64, into=""
    )
    monkeypatch.setitem(download.SOURCES, "dogs", (good_images, bad_lists))
    root = tmp_path / "data"
    assert main(["download", "dogs", "--root", str(root), "--no-progress"]) == 1
    assert list(root.iterdir()) == []  # the good archive is not kept either
    # an archive the user put there is used (not downloaded: the server no longer has it)
    (root / "images.tar").write_bytes((served / "images.tar").read_bytes())
    (served / "images.tar").unlink()
    good_lists = DatasetSource(bad_lists.url, "lists.tar", "stanford_dogs", lists_sha, into="")
    monkeypatch.setitem(download.SOURCES, "dogs", (good_images, good_lists))
    assert main(["download", "dogs", "--root", str(root), "--no-progress"]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["images.tar", "stanford_dogs"]
    for split in ("train", "test"):
        found = StanfordDogs(root, split).samples
        assert [Path(p).relative_to(root) for p, _ in found] == [
            Path(p).relative_to(tmp_path / "build") for p, _ in truth[split]
        ]


def test_check_passes_on_replica(tmp_path, capsys):
    make_dogs(tmp_path)
    assert main(["check", "dogs", "--root", str(tmp_path), "--jobs", "1"]) == 0
    assert "test: 4 images, 4 classes" in capsys.readouterr().out
