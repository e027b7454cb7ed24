"""ImageNet (ILSVRC-2012): 1,000 classes, 1,281,167 train / 50,000 val images.

Facts and sources: Russakovsky et al., "ImageNet Large Scale Visual Recognition Challenge",
IJCV 2015 (1,000 classes, 1,281,167 training and 50,000 validation images); the archives'
md5 as torchvision's ``datasets/imagenet.py`` lists them; the devkit's
``ILSVRC2012_validation_ground_truth.txt`` (one ILSVRC2012_ID a line, in image order) and
``meta.mat`` (``synsets``: ILSVRC2012_ID, WNID, words; the 1,000 leaves first); Kaggle's
ImageNet Object Localization Challenge files ``LOC_val_solution.csv`` and
``LOC_synset_mapping.txt``.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fgvc.data.base import ImageDataset, read_lines
from fgvc.data.descriptor import DatasetSpec
from fgvc.data.io import IMAGE_EXTENSIONS
from fgvc.data.matfile import load_mat
from fgvc.data.presets import GENERIC

IMAGENET_FOLDER = "imagenet"
IMAGENET_COUNTS = {"train": 1281167, "val": 50000}
IMAGENET_NUM_CLASSES = 1000
_WNID = re.compile(r"n\d{8}")
_DEVKIT = Path("ILSVRC2012_devkit_t12") / "data"

IMAGENET_HELP = """\
ImageNet cannot be downloaded automatically: image-net.org hands the ILSVRC-2012 archives out
after you sign in and accept its terms (non-commercial research and education).
Download from https://image-net.org/download-images.php (ILSVRC 2012):
  ILSVRC2012_img_train.tar (138 GB, md5 1d675b47d978889d74fa0da5fadfb00e)
  ILSVRC2012_img_val.tar (6.3 GB, md5 29b22e2961454d5413ddabcf34fc5622)
  ILSVRC2012_devkit_t12.tar.gz (md5 fa75699e90414af021442c21a62c3abf)
and unpack them into <root>/imagenet/ as:
  train/<wnid>/<wnid>_<n>.JPEG      (the train tar holds a tar a class: unpack each into its folder)
  val/ILSVRC2012_val_<8 digits>.JPEG  (flat, or already sorted into val/<wnid>/)
  ILSVRC2012_devkit_t12/            (its data/ holds meta.mat and the validation ground truth)
Kaggle's copy (imagenet-object-localization-challenge) works as it unpacks: ILSVRC/Data/CLS-LOC/
with LOC_val_solution.csv and LOC_synset_mapping.txt beside ILSVRC/.
Then check it: fgvc data check imagenet --root <root>"""


def locate_imagenet(root: str | os.PathLike) -> Path:
    """The folder holding ``train/`` and/or ``val/``: ``root/imagenet``, ``root``, or
    Kaggle's ``ILSVRC/Data/CLS-LOC`` under either.

    Raises:
        FileNotFoundError: none holds a ``train/`` or ``val/`` folder (says how to get it).
    """
    root = Path(root).expanduser()
    kaggle = Path("ILSVRC") / "Data" / "CLS-LOC"
    candidates = [root / IMAGENET_FOLDER, root, root / IMAGENET_FOLDER / kaggle, root / kaggle]
    for candidate in candidates:
        if (candidate / "train").is_dir() or (candidate / "val").is_dir():
            return candidate
    raise FileNotFoundError(
        f"no ImageNet under {root} (looked for train/ or val/ in {candidates[0]}, {root} and "
        f"ILSVRC/Data/CLS-LOC/); see `fgvc data download imagenet` for how to get it"
    )


def _find(folder: Path, root: Path, name: Path | str) -> Path | None:
    """``name`` in the dataset folder, or up to the data root (Kaggle keeps its CSVs beside
    ``ILSVRC/``)."""
    for candidate in (folder, *folder.parents):
        if (candidate / name).is_file():
            return candidate / name
        if candidate == root or candidate == candidate.parent:
            break
    return None


def _images(folder: Path) -> list[str]:
    """Image file names in ``folder``, sorted (one listing: ImageNet folders are large)."""
    with os.scandir(folder) as entries:
        return sorted(
            entry.name
            for entry in entries
            if entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file()
        )


def _wnid_folders(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        names = sorted(entry.name for entry in entries if entry.is_dir())
    odd = [name for name in names if not _WNID.fullmatch(name)]
    if odd:
        raise ValueError(
            f"{folder} holds folders that are not WordNet ids (n + 8 digits): {odd[:3]}; "
            f"move them out"
        )
    return names


class ImageNet(ImageDataset):
    """`ImageNet <https://image-net.org/>`_ ILSVRC-2012 classification.

    Expected layout (``root`` holds ``imagenet/``, is that folder, or holds Kaggle's
    ``ILSVRC/Data/CLS-LOC/``)::

        imagenet/
            train/<wnid>/<wnid>_<n>.JPEG                 e.g. n01440764/n01440764_10026.JPEG
            val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG    sorted into class folders, or flat:
            val/ILSVRC2012_val_<8 digits>.JPEG           with one of
            ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt + meta.mat
            LOC_val_solution.csv                         ImageId,PredictionString (Kaggle)
            LOC_synset_mapping.txt                       "<wnid> <words>" (Kaggle; names)

    Classes are the WordNet ids in sorted order (the order ImageNet models are trained in);
    their names are the synsets' words (``"tench, Tinca tinca"``) from
    ``LOC_synset_mapping.txt`` or the devkit's ``meta.mat``, the wnid where neither is
    there; a name two synsets share (``crane``) gets its wnid appended. ``ids`` are paths
    relative to the split folder.

    Args:
        root: see above.
        split: ``"train"`` or ``"val"``.
        transform: albumentations pipeline or callable applied to the RGB ``uint8`` image.
        decode_min_size: see :class:`fgvc.data.base.ImageDataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        decode_min_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(transform, decode_min_size)
        if split not in IMAGENET_COUNTS:
            raise ValueError(f"ImageNet split must be 'train' or 'val', got {split!r}")
        self.split = split
        self.root = Path(root).expanduser()
        self.folder = locate_imagenet(root)
        words = self._synsets()
        wnids = self._wnids(words)
        index_of = {wnid: i for i, wnid in enumerate(wnids)}
        self.wnids = wnids
        self.classes = self._names(wnids, words)
        split_dir = self.folder / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"{split_dir} is missing; unpack the {split} images there")
        labelled = self._flat_val_labels() if split == "val" and not self._sorted_val() else None
        self.samples, self.ids = [], []
        if labelled is None:  # class folders
            for wnid in _wnid_folders(split_dir):
                if wnid not in index_of:
                    raise ValueError(f"{split_dir / wnid} is not one of the training classes")
                for name in _images(split_dir / wnid):
                    self.samples.append((str(split_dir / wnid / name), index_of[wnid]))
                    self.ids.append(f"{wnid}/{name}")
        else:
            for name in _images(split_dir):
                stem = name.rsplit(".", 1)[0]
                if stem not in labelled:
                    raise ValueError(f"{split_dir / name} has no label in {self._val_source}")
                if labelled[stem] not in index_of:
                    raise ValueError(
                        f"{self._val_source}: {stem} is labelled {labelled[stem]}, not one of "
                        f"the training classes"
                    )
                self.samples.append((str(split_dir / name), index_of[labelled[stem]]))
                self.ids.append(name)
        self._check_counts("ImageNet", IMAGENET_COUNTS, IMAGENET_NUM_CLASSES)

    # -- classes -------------------------------------------------------------------------
    def _synsets(self) -> dict[str, str]:
        """``{wnid: words}`` of the 1,000 classes from whichever list is there."""
        mapping = _find(self.folder, self.root, "LOC_synset_mapping.txt")
        if mapping is not None:
            words = {}
            for number, line in enumerate(read_lines(mapping), start=1):
                wnid, _, text = line.strip().partition(" ")
                if not _WNID.fullmatch(wnid):
                    raise ValueError(f"{mapping} line {number}: expected '<wnid> <words>'")
                words[wnid] = text.strip() or wnid
            return words
        synsets = self._devkit_synsets()
        return {
            str(s["WNID"]): str(s["words"])
            for s in synsets or []
            if int(s.get("num_children", 0)) == 0 and 1 <= int(s["ILSVRC2012_ID"]) <= 1000
        }

    def _devkit_synsets(self) -> list[dict[str, Any]] | None:
        """The devkit's ``meta.mat`` synsets (read once: names and val labels both use
        them), ``None`` when there is no devkit."""
        if not hasattr(self, "_synsets_read"):
            meta = _find(self.folder, self.root, _DEVKIT / "meta.mat")
            synsets = None
            if meta is not None:
                synsets = load_mat(meta, "see `fgvc data download imagenet`").get("synsets")
                if not isinstance(synsets, list):
                    raise ValueError(f"{meta} has no 'synsets' struct array; is it the devkit's?")
            self._synsets_read = synsets
        return self._synsets_read

    def _wnids(self, words: dict[str, str]) -> list[str]:
        train = self.folder / "train"
        if train.is_dir():
            return _wnid_folders(train)
        if words:
            return sorted(words)
        return _wnid_folders(self.folder / "val")

    @staticmethod
    def _names(wnids: list[str], words: dict[str, str]) -> list[str]:
        names = [words.get(wnid, wnid) for wnid in wnids]
        shared = {name for name, count in Counter(names).items() if count > 1}
        return [f"{n} ({w})" if n in shared else n for n, w in zip(names, wnids)]

    # -- validation labels ----------------------------------------------------------------
    def _sorted_val(self) -> bool:
        val = self.folder / "val"
        with os.scandir(val) as entries:
            return any(entry.is_dir() and _WNID.fullmatch(entry.name) for entry in entries)

    def _flat_val_labels(self) -> dict[str, str]:
        """``{image stem: wnid}`` for flat ``val/`` from Kaggle's CSV or the devkit."""
        solution = _find(self.folder, self.root, "LOC_val_solution.csv")
        if solution is not None:
            self._val_source = solution
            with open(solution, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            try:
                return {row["ImageId"]: row["PredictionString"].split()[0] for row in rows}
            except (KeyError, IndexError, AttributeError):
                raise ValueError(
                    f"{solution}: expected columns ImageId,PredictionString with a wnid first"
                ) from None
        truth = _find(self.folder, self.root, _DEVKIT / "ILSVRC2012_validation_ground_truth.txt")
        synsets = self._devkit_synsets()
        if truth is None or synsets is None:
            raise FileNotFoundError(
                f"{self.folder / 'val'} is flat and neither LOC_val_solution.csv nor the devkit "
                f"(ILSVRC2012_devkit_t12/data/ground truth + meta.mat) was found; unpack "
                f"ILSVRC2012_devkit_t12.tar.gz into {self.folder}"
            )
        self._val_source = truth
        wnid_of = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
        labels = {}
        for number, line in enumerate(read_lines(truth), start=1):
            value = line.strip()
            if not value.isdigit() or int(value) not in wnid_of:
                raise ValueError(f"{truth} line {number}: {value!r} is not an ILSVRC2012_ID")
            labels[f"ILSVRC2012_val_{number:08d}"] = wnid_of[int(value)]
        return labels


DATASET = DatasetSpec(
    name="imagenet",
    title="ImageNet (ILSVRC-2012)",
    homepage="https://image-net.org/",
    parser=ImageNet,
    locate=locate_imagenet,
    splits=("train", "val"),
    num_classes=IMAGENET_NUM_CLASSES,
    counts=IMAGENET_COUNTS,
    # the standard ImageNet recipe: random-resized crop S in training, resize S / 0.875
    # (256 for 224) and center crop S for evaluation
    preset=GENERIC,
    datamodule="ImageNetDataModule",
    manual=IMAGENET_HELP,
    test_split="val",
    val_split="val",
    citation="Russakovsky et al., IJCV 2015; md5s as torchvision/datasets/imagenet.py lists them",
)
