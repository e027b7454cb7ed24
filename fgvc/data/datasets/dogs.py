"""Stanford Dogs: 120 breeds, 12,000 train / 8,580 test images (ImageNet's dog synsets).

Facts and sources: Khosla et al., "Novel dataset for fine-grained image categorization",
CVPR-FGVC 2011 (120 classes, 20,580 images; 100 training images a class); file sizes and
sha256 from tensorflow/datasets ``url_checksums/stanford_dogs.txt``; the md5 of ``lists.tar``
recomputed from a copy whose sha256 matches that file. Labels are 1-based in the lists and
follow the sorted order of the ``Images/`` folders.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fgvc.data.base import ImageDataset, resolve_folder
from fgvc.data.descriptor import DatasetSource, DatasetSpec
from fgvc.data.matfile import load_mat, mat_integers
from fgvc.data.presets import Preset

DOGS_FOLDER = "stanford_dogs"
DOGS_COUNTS = {"train": 12000, "test": 8580}
DOGS_NUM_CLASSES = 120
_SITE = "http://vision.stanford.edu/aditya86/ImageNetDogs/"


def locate_dogs(root: str | os.PathLike) -> Path:
    """The ``stanford_dogs`` folder under ``root`` (or ``root`` itself).

    Raises:
        FileNotFoundError: neither holds ``train_list.mat`` (says how to get it).
    """
    return resolve_folder(
        root,
        DOGS_FOLDER,
        ["train_list.mat"],
        f"run `fgvc data download dogs --root {root}`, set download: true, or ",
    )


def breed_name(folder: str) -> str:
    """``"n02086240-Shih-Tzu"`` -> ``"Shih-Tzu"``: the part after the synset id (split on the
    first hyphen only: breeds hold hyphens), underscores as spaces, case as written."""
    synset, _, breed = folder.partition("-")
    if not synset.startswith("n") or not breed:
        raise ValueError(f"{folder!r} is not '<synset>-<breed>'")
    return breed.replace("_", " ")


def _column(mat: dict[str, Any], key: str, path: Path) -> list[Any]:
    if key not in mat:
        raise ValueError(
            f"{path} has no '{key}' variable (found {sorted(mat)}); is it the right file?"
        )
    value = mat[key]
    if isinstance(value, (str, int, np.integer)):  # one entry: squeezed to a scalar
        return [value]
    return list(np.atleast_1d(np.asarray(value, dtype=object)).ravel())


class StanfordDogs(ImageDataset):
    """`Stanford Dogs <http://vision.stanford.edu/aditya86/ImageNetDogs/>`_ breeds.

    Expected layout (``root`` is the folder holding ``stanford_dogs/``, or that folder; the
    three archives unpacked into it)::

        stanford_dogs/
            train_list.mat, test_list.mat   file_list: N x 1 cell of "<folder>/<file>.jpg"
                                            labels: N x 1 uint8, 1-based
            Images/<synset>-<breed>/<synset>_<n>.jpg    e.g. n02085620-Chihuahua/n02085620_10074.jpg

    Labels are 0-based; the class of label ``k`` is the folder its images are in, named by
    :func:`breed_name` (``"Shih-Tzu"``, ``"Japanese spaniel"``). Every label must keep to
    one folder. ``ids`` are the paths relative to ``Images/``.

    Args:
        root: folder holding ``stanford_dogs/`` (or the dataset folder itself).
        split: ``"train"`` or ``"test"``.
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
        if split not in DOGS_COUNTS:
            raise ValueError(f"StanfordDogs split must be 'train' or 'test', got {split!r}")
        self.split = split
        self.folder = locate_dogs(root)
        # class names from both lists, so that a split lacking a breed keeps the labels
        folders: dict[int, str] = {}
        lists = {name: self._read_list(name) for name in ("train", "test")}
        for files, labels, path in lists.values():
            for file, label in zip(files, labels):
                folder = file.split("/", 1)[0]
                if folders.setdefault(label, folder) != folder:
                    raise ValueError(
                        f"{path}: label {label + 1} is given to images of {folders[label]}/ and "
                        f"{folder}/; restore the list from lists.tar"
                    )
        if sorted(folders) != list(range(len(folders))):
            missing = sorted(set(range(max(folders) + 1)) - set(folders))
            raise ValueError(f"labels {[m + 1 for m in missing[:5]]} have no image in the lists")
        self.classes = [breed_name(folders[label]) for label in range(len(folders))]
        files, labels, _ = lists[split]
        images = self.folder / "Images"
        self.samples = [(str(images / file), label) for file, label in zip(files, labels)]
        self.ids = list(files)
        self._check_counts("Stanford Dogs", DOGS_COUNTS, DOGS_NUM_CLASSES)

    def _read_list(self, split: str) -> tuple[list[str], list[int], Path]:
        path = self.folder / f"{split}_list.mat"
        mat = load_mat(path, "see `fgvc data download dogs` for where to get it")
        files = _column(mat, "file_list", path)
        if not all(isinstance(file, str) for file in files):
            raise ValueError(f"{path}: file_list must be a cell of file names")
        raw = mat_integers(mat, "labels", path)
        if len(raw) != len(files):
            raise ValueError(f"{path}: {len(files)} files but {len(raw)} labels")
        labels = []
        for file, value in zip(files, raw.tolist()):
            if value < 1:
                raise ValueError(f"{path}: {file} has label {value}; labels are 1-based")
            if "/" not in file or file.startswith("/") or ".." in file.split("/"):
                raise ValueError(f"{path}: {file!r} is not '<breed folder>/<file>'")
            labels.append(value - 1)
        return files, labels, path


DATASET = DatasetSpec(
    name="dogs",
    title="Stanford Dogs",
    homepage=_SITE,
    parser=StanfordDogs,
    locate=locate_dogs,
    splits=("train", "test"),
    num_classes=DOGS_NUM_CLASSES,
    counts=DOGS_COUNTS,
    # the CUB protocol (short side S, center crop S)
    preset=Preset("short_side"),
    datamodule="DogsDataModule",
    sources=(
        DatasetSource(
            url=_SITE + "images.tar",
            filename="images.tar",
            folder=DOGS_FOLDER,
            sha256="a443fc2f9a851aa1a7b8e4fa4af94b8459fce2c9f5a2f4dd4669cf9673a4ec58",
            into="",
        ),
        DatasetSource(
            url=_SITE + "lists.tar",
            filename="lists.tar",
            folder=DOGS_FOLDER,
            sha256="34b47cacd9a98b5d150e084f24d29391c084c55272295ec65c85651bc35f4d6c",
            md5="edbb9f16854ec66506b5f09b583e0656",
            into="",
        ),
    ),
    citation=(
        "Khosla et al., CVPR-FGVC 2011 (120 classes, 12,000 / 8,580); sizes and sha256: "
        "tensorflow/datasets url_checksums/stanford_dogs.txt"
    ),
)
