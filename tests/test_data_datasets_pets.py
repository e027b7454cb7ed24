"""Oxford-IIIT Pets against hand-made replicas of its files and torchvision's parser:
parsing, class names, errors, odd image files, ``fgvc data check|download``, the DataModule."""

from __future__ import annotations

import dataclasses
import hashlib
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torchvision
from PIL import Image

import fgvc.data.download as download
from fgvc.commands.data import main
from fgvc.data.datasets.pets import DATASET, OxfordIIITPet
from tests.replicas import pattern, write_jpeg
from tests.test_data_datasets_flowers102 import assert_same_items, served_sources

FOLDER = "oxford-iiit-pet"
#: the 37 raw breeds in CLASS-ID order (TFDS ``_LABEL_CLASSES``; capitalised: cats)
BREEDS = """Abyssinian american_bulldog american_pit_bull_terrier basset_hound beagle Bengal Birman
Bombay boxer British_Shorthair chihuahua Egyptian_Mau english_cocker_spaniel english_setter
german_shorthaired great_pyrenees havanese japanese_chin keeshond leonberger Maine_Coon
miniature_pinscher newfoundland Persian pomeranian pug Ragdoll Russian_Blue saint_bernard samoyed
scottish_terrier shiba_inu Siamese Sphynx staffordshire_bull_terrier wheaten_terrier
yorkshire_terrier""".split()
#: the default replica's breeds, given CLASS-IDs 1..4: one and several words, both species
SMALL = ["Abyssinian", "american_pit_bull_terrier", "British_Shorthair", "yorkshire_terrier"]


@dataclasses.dataclass
class PetsReplica:
    folder: Path
    lines: dict[str, list[tuple[str, int]]]  # split -> (image id, CLASS-ID), in file order

    def samples(self, split: str) -> list[tuple[str, int]]:
        return [(str(self.folder / "images" / f"{i}.jpg"), c - 1) for i, c in self.lines[split]]


def make_pets(
    root: Path,
    breeds: list[str] = SMALL,
    per_class: tuple[int, int] = (3, 2),
    size: tuple[int, int] = (30, 40),
) -> PetsReplica:
    """``oxford-iiit-pet/`` as the two archives unpack: images/<id>.jpg and
    annotations/{trainval,test}.txt ("Image CLASS-ID SPECIES BREED-ID", lines shuffled)."""
    folder = root / FOLDER
    rng = np.random.default_rng(0)
    lines: dict[str, list[tuple[str, int]]] = {"trainval": [], "test": []}
    counter = {1: 0, 2: 0}
    text = {"trainval": [], "test": []}
    for class_id, breed in enumerate(breeds, start=1):
        species = 1 if breed[0].isupper() else 2
        counter[species] += 1
        numbers = iter(range(1, sum(per_class) + 1))
        for split, count in zip(text, per_class):
            for _ in range(count):
                image_id = f"{breed}_{next(numbers) * 7}"
                lines[split].append((image_id, class_id))
                text[split].append(f"{image_id} {class_id} {species} {counter[species]}")
    for split in text:
        order = rng.permutation(len(text[split]))
        lines[split] = [lines[split][k] for k in order]
        path = folder / "annotations" / f"{split}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(text[split][k] + "\n" for k in order))
        for k, (image_id, _) in enumerate(lines[split]):
            height, width = size if k % 2 else size[::-1]
            seed = int(hashlib.md5(image_id.encode()).hexdigest()[:6], 16)
            write_jpeg(folder / "images" / f"{image_id}.jpg", pattern(height, width, seed))
    (folder / "images" / "Abyssinian_101.mat").write_bytes(b"not listed anywhere")
    return PetsReplica(folder, lines)


def _torchvision_samples(root: Path, split: str):
    reference = torchvision.datasets.OxfordIIITPet(root, split=split)
    return reference, [(str(p), t) for p, t in zip(reference._images, reference._labels)]


# -- the parser --------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["trainval", "test"])
def test_matches_torchvision(tmp_path, split):
    replica = make_pets(tmp_path)
    dataset = OxfordIIITPet(tmp_path, split)
    reference, samples = _torchvision_samples(tmp_path, split)
    assert dataset.samples == samples == replica.samples(split)
    assert dataset.classes == reference.classes
    assert dataset.classes == ["Abyssinian", "American Pit Bull Terrier", "British Shorthair",
                               "Yorkshire Terrier"]  # fmt: skip
    assert dataset.ids == [image_id for image_id, _ in replica.lines[split]]
    assert_same_items(dataset, reference)


def test_all_37_breeds_named_as_torchvision_names_them(tmp_path):
    make_pets(tmp_path, BREEDS, per_class=(1, 1), size=(8, 8))
    for split in ("trainval", "test"):
        with pytest.warns(UserWarning, match=rf"{split}: 37 images, published"):
            dataset = OxfordIIITPet(tmp_path, split)
        reference, samples = _torchvision_samples(tmp_path, split)
        assert dataset.classes == reference.classes and dataset.samples == samples
    assert len(dataset.classes) == 37
    assert dataset.classes[2] == "American Pit Bull Terrier"
    assert dataset.classes[9] == "British Shorthair" and dataset.classes[20] == "Maine Coon"


def test_blank_and_comment_lines_are_skipped(tmp_path):
    replica = make_pets(tmp_path)
    path = replica.folder / "annotations" / "trainval.txt"
    lines = path.read_text().splitlines()
    header = ["#Image CLASS-ID SPECIES BREED ID", "#All images with 1st letter as captial are cat"]
    path.write_text("\n".join([*header, lines[0], "", "   ", *lines[1:], "", ""]) + "\n")
    dataset = OxfordIIITPet(replica.folder, "trainval")  # the dataset folder itself, too
    assert dataset.samples == replica.samples("trainval")


def test_files_that_are_not_jpegs_decode_as_pillow_converts_them(tmp_path):
    """Pets has PNG and GIF data and an alpha channel behind .jpg names: decoded by
    content, to what torchvision's ``Image.open(...).convert("RGB")`` gives."""
    replica = make_pets(tmp_path)
    paths = [Path(p) for p, _ in replica.samples("test")[:3]]
    rgba = np.dstack([pattern(20, 24, 1), np.linspace(0, 255, 20 * 24).reshape(20, 24)])
    Image.fromarray(pattern(20, 24, 2)).save(paths[0], format="PNG")
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(paths[1], format="PNG")
    Image.fromarray(pattern(20, 24, 3)).convert("P").save(paths[2], format="GIF")
    dataset = OxfordIIITPet(tmp_path, "test")
    for index, path in enumerate(paths):
        with Image.open(path) as image:
            expected = np.asarray(image.convert("RGB"))
        np.testing.assert_array_equal(dataset[index][0], expected)


def _edit(replica: PetsReplica, split: str, edit) -> None:
    path = replica.folder / "annotations" / f"{split}.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


@pytest.mark.parametrize(
    ("split", "edit", "message"),
    [
        ("trainval", lambda ls: [*ls[:2], "Abyssinian_1 1 1"], r"trainval\.txt line 3: expected"),
        ("trainval", lambda ls: [*ls[:1], "Abyssinian_1 one 1 1"], r"trainval\.txt line 2: "),
        ("test", lambda ls: ["Abyssinian_1 38 1 1", *ls], r"test\.txt line 1: CLASS-ID 38"),
        ("test", lambda ls: ["Abyssinian_1 1 3 1", *ls], r"test\.txt line 1: .*SPECIES 3"),
        ("test", lambda ls: [*ls, ls[0]], r"test\.txt line 9: image \w+ is listed twice"),
        (
            "test",
            lambda ls: ["Abyssinian_999 2 1 1", *ls],
            r"test\.txt line 1: Abyssinian_999 has CLASS-ID 2, which is american_pit_bull_terrier "
            r"in trainval\.txt line \d+",
        ),
        (
            "test",
            lambda ls: ["Sphynx_1 6 1 1", *ls],
            r"no image of CLASS-ID 5 in trainval\.txt, test\.txt",
        ),
    ],
)
def test_bad_split_files_are_one_line_errors_naming_file_and_line(tmp_path, split, edit, message):
    replica = make_pets(tmp_path)
    _edit(replica, split, edit)
    with pytest.raises(ValueError, match=message) as raised:
        OxfordIIITPet(tmp_path, "trainval")
    assert "\n" not in str(raised.value)


def test_a_breed_with_two_class_ids_is_refused(tmp_path):
    replica = make_pets(tmp_path)
    _edit(replica, "test", lambda ls: [*ls, "Abyssinian_999 5 1 1"])
    message = r"test\.txt line 9: Abyssinian_999 has CLASS-ID 5, but Abyssinian is CLASS-ID 1 in "
    with pytest.raises(ValueError, match=message + r"trainval\.txt line \d+$"):
        OxfordIIITPet(tmp_path, "test")


def test_missing_files_unknown_split_and_no_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"fgvc data download pets"):
        OxfordIIITPet(tmp_path, "trainval")
    replica = make_pets(tmp_path)
    with pytest.raises(ValueError, match=r"split must be one of \('trainval', 'test'\)"):
        OxfordIIITPet(tmp_path, "train")
    (replica.folder / "annotations" / "test.txt").unlink()
    assert OxfordIIITPet(tmp_path, "trainval").samples == replica.samples("trainval")
    with pytest.raises(FileNotFoundError, match=r"annotations/test\.txt is missing; restore it"):
        OxfordIIITPet(tmp_path, "test")


def test_small_replicas_are_not_count_checked(tmp_path):
    make_pets(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert OxfordIIITPet(tmp_path, "test").count_problem is None


# -- fgvc data check ---------------------------------------------------------------------------
def test_check_passes_on_the_replica(tmp_path, capsys):
    make_pets(tmp_path)
    assert main(["check", "pets", "--root", str(tmp_path), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "trainval: 12 images, 4 classes" in out and "test: 8 images, 4 classes" in out
    assert "20 images checked, 0 bad files, 0 problems" in out and "- ok" in out


def test_check_reports_a_corrupt_file_and_count_mismatches(tmp_path, capsys):
    replica = make_pets(tmp_path, BREEDS, per_class=(1, 1), size=(8, 8))
    corrupt, _ = replica.samples("trainval")[5]
    Path(corrupt).write_bytes(Path(corrupt).read_bytes()[:100])
    assert main(["check", "pets", "--root", str(tmp_path), "--jobs", "2"]) == 1
    out = capsys.readouterr().out
    assert f"bad file: {corrupt}" in out
    assert "trainval: 37 images, published 3680" in out and "test: 37 images, published 3669" in out
    assert "1 bad files, 2 problems" in out and "FAILED" in out


# -- fgvc data download ------------------------------------------------------------------------
def test_descriptor_sources_have_torchvisions_md5s():
    """The md5s are torchvision's (its URLs are the www. host; these are thor's, which
    TFDS lists with the same sha256s), and both archives unpack into the dataset folder."""
    md5s = {
        url.rsplit("/", 1)[1]: md5 for url, md5 in torchvision.datasets.OxfordIIITPet._RESOURCES
    }
    assert {s.filename: s.md5 for s in DATASET.sources} == md5s
    for source in DATASET.sources:
        assert source.url.endswith("/~vgg/data/pets/" + source.filename)
        assert source.folder == FOLDER and source.into == "" and source.extract
        assert len(source.sha256) == 64


@pytest.fixture
def served(tmp_path, http_server):
    """The two archives on a loopback server; the descriptor's sources with their URLs and
    checksums replaced by the served files'."""
    base_url, folder = http_server
    replica = make_pets(tmp_path / "build")
    for name in ("images", "annotations"):
        with tarfile.open(folder / f"{name}.tar.gz", "w:gz") as tar:
            tar.add(replica.folder / name, arcname=name)
    return served_sources(DATASET.sources, base_url, folder), replica


def test_download_builds_the_folder_the_parsers_read(tmp_path, monkeypatch, served):
    sources, replica = served
    monkeypatch.setitem(download.SOURCES, "pets", sources)
    root = tmp_path / "data"
    assert main(["download", "pets", "--root", str(root), "--no-progress"]) == 0
    assert sorted(p.name for p in root.iterdir()) == [FOLDER]  # no archives, no lock, no temp
    assert sorted(p.name for p in (root / FOLDER).iterdir()) == ["annotations", "images"]
    for split in ("trainval", "test"):
        dataset = OxfordIIITPet(root, split)
        reference, samples = _torchvision_samples(root, split)
        assert dataset.samples == samples and dataset.classes == reference.classes
        assert [(Path(p).relative_to(root), t) for p, t in dataset.samples] == [
            (Path(p).relative_to(tmp_path / "build"), t) for p, t in replica.samples(split)
        ]


def test_a_wrong_checksum_leaves_nothing_behind(tmp_path, monkeypatch, served, capsys):
    sources, _ = served
    bad = (dataclasses.replace(sources[0], md5="f" * 32), sources[1])
    monkeypatch.setitem(download.SOURCES, "pets", bad)
    root = tmp_path / "data"
    assert main(["download", "pets", "--root", str(root), "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert "checksum mismatch" in error and "images.tar.gz" in error
    assert sorted(p.name for p in root.iterdir()) == []


# -- the DataModule ----------------------------------------------------------------------------
@pytest.mark.parametrize("val_split", [0.0, None])
def test_datamodule_trains_on_trainval(tmp_path, val_split):
    """val_split 0 (the config's): validate on test; None: no official val split, so a
    stratified 10% of trainval is held out."""
    from fgvc.data import PetsDataModule

    replica = make_pets(tmp_path, per_class=(10, 2), size=(8, 8))
    data = PetsDataModule(root=str(tmp_path), val_split=val_split, image_size=16, num_workers=0)
    assert data.preset == "pets" and data.classes == OxfordIIITPet(tmp_path, "test").classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # val_split 0 says that it validates on test
        data.setup("fit")
    if val_split == 0.0:
        assert data.train_set.samples == replica.samples("trainval")
        assert data.val_set.samples == replica.samples("test")
    else:
        held_out = sorted(data.val_set.samples)
        assert len(held_out) == 4 and sorted({t for _, t in held_out}) == [0, 1, 2, 3]
        assert sorted(data.train_set.samples + held_out) == sorted(replica.samples("trainval"))
