"""ImageNet against a hand-made replica (devkit, Kaggle and sorted layouts), and against
torchvision's own ImageNet preparation of the same archives."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

import fgvc.data as fgvc_data
from fgvc.commands.data import main
from fgvc.data.datasets.imagenet import ImageNet
from tests.replicas import pattern, write_jpeg

# (ILSVRC2012_ID, wnid, words): ids in another order than the sorted wnids, as the real ones
SYNSETS = [
    (1, "n03126707", "crane"),
    (2, "n01440764", "tench, Tinca tinca"),
    (3, "n09999999", "odd thing, oddity"),
    (4, "n02012849", "crane"),
]
WNIDS = sorted(wnid for _, wnid, _ in SYNSETS)
WORDS = {wnid: words for _, wnid, words in SYNSETS}
NAMES = ["tench, Tinca tinca", "crane (n02012849)", "crane (n03126707)", "odd thing, oddity"]
VAL_IDS = [2, 4, 1, 3, 3, 1, 4, 2]  # the ground truth, in image order


def _meta_mat(path: Path) -> None:
    # torchvision reads the fields by position: ILSVRC2012_ID, WNID, words, gloss, num_children
    dtype = [(f, object) for f in ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children")]
    rows = [(i, w, words, "a gloss", 0) for i, w, words in SYNSETS]
    rows.append((1001, "n00001740", "entity", "the root", 2))  # not a class: it has children
    synsets = np.array(rows, dtype=dtype).reshape(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.savemat(path, {"synsets": synsets})


def make_imagenet(root: Path, layout: str = "devkit") -> dict[str, list[tuple[str, int]]]:
    """An ImageNet replica under ``root``; returns per split (relative id, label)."""
    kaggle = layout == "kaggle"
    folder = root / "ILSVRC" / "Data" / "CLS-LOC" if kaggle else root / "imagenet"
    truth: dict[str, list[tuple[str, int]]] = {"train": [], "val": []}
    for label, wnid in enumerate(WNIDS):
        for k in range(2):
            name = f"{wnid}_{k}.JPEG"
            write_jpeg(folder / "train" / wnid / name, pattern(16, 20, 10 * label + k))
            truth["train"].append((f"{wnid}/{name}", label))
    wnid_of = {i: w for i, w, _ in SYNSETS}
    for number, synset_id in enumerate(VAL_IDS, start=1):
        stem, wnid = f"ILSVRC2012_val_{number:08d}", wnid_of[synset_id]
        sub = wnid if layout == "sorted" else ""
        write_jpeg(folder / "val" / sub / f"{stem}.JPEG", pattern(16, 20, 100 + number))
        rel = f"{wnid}/{stem}.JPEG" if sub else f"{stem}.JPEG"
        truth["val"].append((rel, WNIDS.index(wnid)))
    truth["val"].sort()
    if kaggle:
        rows = [f"ILSVRC2012_val_{n:08d},{wnid_of[i]} 1 2 3 4" for n, i in enumerate(VAL_IDS, 1)]
        (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows))
        mapping = [f"{wnid} {WORDS[wnid]}" for wnid in WNIDS]
        (root / "LOC_synset_mapping.txt").write_text("\n".join(mapping) + "\n")
    else:
        devkit = folder / "ILSVRC2012_devkit_t12" / "data"
        _meta_mat(devkit / "meta.mat")
        truth_file = devkit / "ILSVRC2012_validation_ground_truth.txt"
        truth_file.write_text("\n".join(map(str, VAL_IDS)) + "\n")
    return truth


def _found(dataset: ImageNet) -> list[tuple[str, int]]:
    return sorted(zip(dataset.ids, dataset.targets))


@pytest.mark.parametrize("layout", ["devkit", "kaggle", "sorted"])
@pytest.mark.parametrize("split", ["train", "val"])
def test_layouts_give_the_labels_written(tmp_path, layout, split):
    truth = make_imagenet(tmp_path, layout)
    dataset = ImageNet(tmp_path, split)
    assert dataset.wnids == WNIDS
    assert dataset.classes == NAMES
    assert _found(dataset) == truth[split]
    image, _ = dataset[0]
    assert image.shape == (16, 20, 3)


def test_matches_torchvision_preparing_the_same_archives(tmp_path, monkeypatch):
    import torchvision.datasets.imagenet as tv_imagenet

    make_imagenet(tmp_path / "ours")
    ours = tmp_path / "ours" / "imagenet"
    tv_root = tmp_path / "tv"
    tv_root.mkdir()
    archives = {
        "devkit": ("ILSVRC2012_devkit_t12.tar.gz", ["ILSVRC2012_devkit_t12"], "w:gz"),
        "val": ("ILSVRC2012_img_val.tar", [], "w"),
    }
    meta = {}
    for key, (name, members, mode) in archives.items():
        with tarfile.open(tv_root / name, mode) as tar:
            if key == "val":  # the real val tar holds the 50,000 files at its top
                for image in sorted((ours / "val").iterdir()):
                    tar.add(image, arcname=image.name)
            for member in members:
                tar.add(ours / member, arcname=member)
        meta[key] = (name, hashlib.md5((tv_root / name).read_bytes()).hexdigest())
    monkeypatch.setattr(tv_imagenet, "ARCHIVE_META", {**tv_imagenet.ARCHIVE_META, **meta})
    shutil.copytree(ours / "train", tv_root / "train")
    for split in ("train", "val"):
        reference = tv_imagenet.ImageNet(str(tv_root), split=split)
        dataset = ImageNet(tmp_path / "ours", split)
        assert dataset.wnids == reference.wnids
        assert [name.split(" (n")[0] for name in dataset.classes] == [
            ", ".join(words) for words in reference.classes
        ]
        theirs = sorted((Path(p).name, label) for p, label in reference.samples)
        assert sorted((Path(p).name, label) for p, label in dataset.samples) == theirs


def test_flat_val_without_ground_truth_is_one_line(tmp_path):
    make_imagenet(tmp_path)
    shutil.rmtree(tmp_path / "imagenet" / "ILSVRC2012_devkit_t12")
    with pytest.raises(FileNotFoundError, match="neither LOC_val_solution.csv nor the devkit"):
        ImageNet(tmp_path, "val")
    assert len(ImageNet(tmp_path, "train")) == 8  # training needs only the folders


def test_val_image_without_label_names_it(tmp_path):
    make_imagenet(tmp_path, "kaggle")
    extra = tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val" / "ILSVRC2012_val_00000099.JPEG"
    write_jpeg(extra, pattern(8, 8, 0))
    with pytest.raises(ValueError, match="ILSVRC2012_val_00000099.JPEG has no label"):
        ImageNet(tmp_path, "val")


def test_check_and_datamodule(tmp_path, capsys):
    make_imagenet(tmp_path)
    assert main(["check", "imagenet", "--root", str(tmp_path), "--jobs", "1"]) == 0
    assert "val: 8 images, 4 classes" in capsys.readouterr().out
    module = fgvc_data.ImageNetDataModule(root=str(tmp_path), image_size=16, num_workers=0)
    assert module.test_split_name == "val" and module.official_val_split() == "val"
    assert module.eval_preprocessing.resize == "resize short side to 19, center crop 16x16"
    module.setup("fit")
    assert len(module.val_set) == 8 and len(module.train_set) == 8


def test_download_says_where_to_get_it(tmp_path, capsys):
    assert main(["download", "imagenet", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "image-net.org" in out and "1d675b47d978889d74fa0da5fadfb00e" in out
    make_imagenet(tmp_path, "kaggle")
    assert main(["download", "imagenet", "--root", str(tmp_path)]) == 0
    assert "found: ImageNet (ILSVRC-2012) in" in capsys.readouterr().out
