"""NABirds against a hand-made replica of its files (taxonomy nodes, sparse leaf ids, .JPG)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import fgvc.data as fgvc_data
from fgvc.commands.data import main
from fgvc.data.datasets import dataset_spec
from fgvc.data.datasets.nabirds import NABirds
from tests.replicas import pattern, write_jpeg

# id -> name: the root, two inner taxonomy nodes and four leaves with gaps between their ids;
# names as the real file writes them (a double space, a space before ")")
TAXONOMY = {
    0: "Birds",
    1: "Ducks, Geese, and Swans",
    2: "Hawks",
    295: "Common Eider (Adult male)",
    318: "Blue-winged Teal  (Male)",
    617: "Blue-winged Teal  (Female/juvenile)",
    1001: "Swainson's Hawk (Dark morph )",
}
LEAVES = [295, 318, 617, 1001]


def make_nabirds(root: Path, per_class: tuple[int, int] = (2, 1)) -> dict:
    """``root/nabirds`` with ``per_class`` train/test images a leaf; returns what a correct
    parser must find: classes, and per split the (path, label) pairs in file order."""
    folder = root / "nabirds"
    rows = []
    for label, class_id in enumerate(LEAVES):
        for k in range(sum(per_class)):
            image_id = str(uuid.UUID(int=class_id * 1000 + k))
            ext = ".JPG" if k == 0 else ".jpg"  # the real files mix both
            rel = f"{class_id:04d}/{image_id.replace('-', '')}{ext}"
            write_jpeg(folder / "images" / rel, pattern(20, 24, class_id + k))
            rows.append((image_id, rel, class_id, label, k < per_class[0]))
    rows.sort()  # the real files list images by uuid
    lines = {
        "images.txt": [f"{i} {rel}" for i, rel, *_ in rows],
        "image_class_labels.txt": [f"{i} {cid}" for i, _, cid, *_ in rows],
        "train_test_split.txt": [f"{i} {int(train)}" for i, *_, train in rows],
        "classes.txt": [f"{cid} {name}" for cid, name in TAXONOMY.items()],
    }
    for name, content in lines.items():
        (folder / name).write_text("\n".join(content) + "\n", encoding="utf-8")
    samples: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for _, rel, _, label, train in rows:
        samples["train" if train else "test"].append((str(folder / "images" / rel), label))
    return {"classes": [TAXONOMY[c] for c in LEAVES], "samples": samples, "folder": folder}


@pytest.mark.parametrize("split", ["train", "test"])
def test_leaf_classes_in_id_order_and_paths_as_listed(tmp_path, split):
    truth = make_nabirds(tmp_path)
    dataset = NABirds(tmp_path, split)
    assert dataset.classes == truth["classes"]  # inner nodes left out, double space kept
    assert dataset.samples == truth["samples"][split]
    assert len(dataset) == len(truth["samples"][split])
    image, label = dataset[0]
    assert image.shape == (20, 24, 3) and label == truth["samples"][split][0][1]
    assert NABirds(truth["folder"], split).samples == dataset.samples  # the folder itself


def test_labels_agree_when_a_split_lacks_a_class(tmp_path):
    truth = make_nabirds(tmp_path)
    folder = truth["folder"]
    split_file = folder / "train_test_split.txt"
    labels = dict(
        line.split() for line in (folder / "image_class_labels.txt").read_text().splitlines()
    )
    # every image of the last leaf becomes a test image: train no longer has that class
    lines = [
        f"{i} 0" if labels[i] == str(LEAVES[-1]) else f"{i} {flag}"
        for i, flag in (line.split() for line in split_file.read_text().splitlines())
    ]
    split_file.write_text("\n".join(lines) + "\n")
    train, test = NABirds(tmp_path, "train"), NABirds(tmp_path, "test")
    assert train.classes == test.classes == truth["classes"]
    assert {label for _, label in test.samples} == {0, 1, 2, 3}


def test_label_not_in_classes_txt_is_one_line(tmp_path):
    truth = make_nabirds(tmp_path)
    path = truth["folder"] / "image_class_labels.txt"
    first = path.read_text().splitlines()
    first[0] = first[0].split()[0] + " 999"
    path.write_text("\n".join(first) + "\n")
    with pytest.raises(ValueError, match="class 999, which classes.txt does not list"):
        NABirds(tmp_path, "train")


def test_missing_dataset_points_to_the_terms_page(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="fgvc data download nabirds"):
        NABirds(tmp_path, "train")
    assert main(["download", "nabirds", "--root", str(tmp_path)]) == 1
    assert "dl.allaboutbirds.org/nabirds" in capsys.readouterr().out
    make_nabirds(tmp_path)
    assert main(["download", "nabirds", "--root", str(tmp_path)]) == 0
    assert f"found: NABirds in {tmp_path / 'nabirds'}" in capsys.readouterr().out


def test_check_passes_on_replica_and_reports_published_counts(tmp_path, capsys):
    make_nabirds(tmp_path)
    assert main(["check", "nabirds", "--root", str(tmp_path), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "train: 8 images, 4 classes" in out and "- ok" in out
    spec = dataset_spec("nabirds")
    assert (spec.num_classes, dict(spec.counts)) == (555, {"train": 23929, "test": 24633})


def test_datamodule_comes_from_the_descriptor(tmp_path):
    make_nabirds(tmp_path)
    module = fgvc_data.NABirdsDataModule(root=str(tmp_path), image_size=16, num_workers=0)
    assert module.classes == make_nabirds(tmp_path / "again")["classes"]
    assert module.eval_preprocessing.preset == "nabirds"
    assert module.eval_preprocessing.resize == "resize short side to 16, center crop 16x16"
    module.setup("fit")
    images, labels = next(iter(module.train_dataloader()))
    assert images.shape[1:] == (3, 16, 16) and labels.max() < 4
