"""FGVC-Aircraft 2013b: 10,000 images, 100 variants / 70 families / 30 manufacturers."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np

from fgvc.data.base import ImageDataset, read_lines
from fgvc.data.descriptor import DatasetSource, DatasetSpec
from fgvc.data.io import read_rgb
from fgvc.data.presets import Preset

AIRCRAFT_FOLDER = "fgvc-aircraft-2013b"
AIRCRAFT_COUNTS = {"train": 3334, "val": 3333, "trainval": 6667, "test": 3333}
AIRCRAFT_NUM_CLASSES = {"variant": 100, "family": 70, "manufacturer": 30}
AIRCRAFT_CLASS_FILES = {
    "variant": "variants.txt",
    "family": "families.txt",
    "manufacturer": "manufacturers.txt",
}
BANNER_HEIGHT = 20


def resolve_aircraft_folder(root: str | os.PathLike) -> Path:
    """The ``data/`` folder: under ``root/fgvc-aircraft-2013b``, ``root`` or ``root`` itself.

    Raises:
        FileNotFoundError: none of them holds ``images/`` and ``variants.txt``.
    """
    root = Path(root).expanduser()
    candidates = (root / AIRCRAFT_FOLDER / "data", root / "data", root)
    for candidate in candidates:
        if (candidate / "variants.txt").is_file() and (candidate / "images").is_dir():
            return candidate
    raise FileNotFoundError(
        f"no FGVC-Aircraft dataset under {root} (looked for variants.txt and images/ in "
        f"{', '.join(str(c) for c in candidates)}); run `fgvc data download aircraft --root "
        f"{root}`, set download: true, or pass the folder that holds {AIRCRAFT_FOLDER}/"
    )


class FGVCAircraft(ImageDataset):
    """`FGVC-Aircraft <https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/>`_ 2013b.

    Expected layout (``root`` is the folder holding ``fgvc-aircraft-2013b/``, or that
    folder, or its ``data/`` folder)::

        fgvc-aircraft-2013b/data/
            images/<7-digit id>.jpg                 e.g. 0034309.jpg (leading zeros kept)
            variants.txt families.txt manufacturers.txt   one name a line, line order = label
            images_<level>_<split>.txt              "<id> <name>", split on the first space

    Names contain spaces and '/' (``"F-16A/B"``); ids stay strings. Every image carries a
    20-pixel copyright banner at the bottom, cropped by default as the dataset's README
    asks (``crop_banner=False`` keeps it, as torchvision does).

    Args:
        root: folder holding ``fgvc-aircraft-2013b/`` (or the dataset folder itself).
        split: ``"trainval"``, ``"train"``, ``"val"`` or ``"test"``.
        level: ``"variant"``, ``"family"`` or ``"manufacturer"``.
        transform: albumentations pipeline or callable applied to the RGB ``uint8`` image.
        crop_banner: remove the bottom 20 rows before the transform.
        decode_min_size: see :class:`fgvc.data.base.ImageDataset` (counted after the crop).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "trainval",
        level: str = "variant",
        transform: Callable | None = None,
        crop_banner: bool = True,
        decode_min_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(transform, decode_min_size)
        if split not in AIRCRAFT_COUNTS:
            raise ValueError(
                f"FGVCAircraft split must be one of {sorted(AIRCRAFT_COUNTS)}, got {split!r}"
            )
        if level not in AIRCRAFT_CLASS_FILES:
            raise ValueError(
                f"FGVCAircraft level must be one of {list(AIRCRAFT_CLASS_FILES)}, got {level!r}"
            )
        self.split, self.level, self.crop_banner = split, level, crop_banner
        self.folder = resolve_aircraft_folder(root)
        class_file = self.folder / AIRCRAFT_CLASS_FILES[level]
        self.classes = [line.strip() for line in read_lines(class_file)]
        index_of = {name: i for i, name in enumerate(self.classes)}
        if len(index_of) != len(self.classes):
            raise ValueError(f"{class_file} lists a class name twice")

        labels_file = self.folder / f"images_{level}_{split}.txt"
        images = self.folder / "images"
        self.samples, self.ids = [], []
        for number, line in enumerate(read_lines(labels_file), start=1):
            parts = line.strip().split(" ", 1)
            if len(parts) != 2:
                raise ValueError(f"{labels_file} line {number}: expected '<id> <name>'")
            image_id, name = parts
            if name not in index_of:
                raise ValueError(
                    f"{labels_file} line {number}: {name!r} is not listed in {class_file.name}"
                )
            self.samples.append((str(images / f"{image_id}.jpg"), index_of[name]))
            self.ids.append(image_id)
        self._check_counts("FGVC-Aircraft", AIRCRAFT_COUNTS, AIRCRAFT_NUM_CLASSES[level])

    def load(self, index: int) -> np.ndarray:
        """The decoded RGB image, its bottom 20 rows cropped when ``crop_banner``."""
        min_size = self.decode_min_size
        if self.crop_banner and min_size is not None:
            min_size = (min_size[0] + BANNER_HEIGHT, min_size[1])
        image, factor = read_rgb(self.samples[index][0], min_size)
        if self.crop_banner:
            rows = math.ceil(BANNER_HEIGHT / factor)
            if image.shape[0] <= rows:
                raise ValueError(
                    f"{self.samples[index][0]}: {image.shape[0]} rows, too few to crop the "
                    f"{BANNER_HEIGHT}-pixel banner; pass crop_banner=False for such images"
                )
            image = image[:-rows]
        return image


DATASET = DatasetSpec(
    name="aircraft",
    title="FGVC-Aircraft 2013b",
    homepage="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
    parser=FGVCAircraft,
    locate=resolve_aircraft_folder,
    splits=("train", "val", "test"),
    num_classes=AIRCRAFT_NUM_CLASSES["variant"],
    counts=AIRCRAFT_COUNTS,
    # the authors' fine-tuning code: resize to 512 x 512 (for S = 448), center crop S
    preset=Preset("square", Fraction(512, 448)),
    datamodule="AircraftDataModule",
    sources=(
        DatasetSource(
            url="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
            filename="fgvc-aircraft-2013b.tar.gz",
            folder=AIRCRAFT_FOLDER,
            md5="d4acdd33327262359767eeaa97a4f732",
        ),
    ),
    val_split="val",
    trainval_split="trainval",
    check_options=tuple({"level": level} for level in AIRCRAFT_CLASS_FILES),
    citation="Maji et al., arXiv:1306.5151; counts and checksum: shared/design/datasets.md",
)
