"""Oxford-IIIT Pets: 37 breeds (12 cats, 25 dogs), 3,680 trainval / 3,669 test images.

Sources of the figures below (gathered in the shared design note datasets-more.md, section 2):

* counts: the TFDS catalog (https://www.tensorflow.org/datasets/catalog/oxford_iiit_pet)
  and mmpretrain's ``OxfordIIITPet`` docstring;
* md5s: torchvision ``datasets/oxford_iiit_pet.py`` (``_RESOURCES``); sha256s and sizes:
  TFDS ``datasets/oxford_iiit_pet/checksums.tsv``, the same at the thor.robots.ox.ac.uk
  URLs used here and at torchvision's ``www.robots.ox.ac.uk/~vgg/data/pets/data/``
  (TFDS ``url_checksums/oxford_iiit_pet.txt``), which keras-io reported broken in 2023
  (keras-team/keras-io#1200);
* class names: torchvision's rule (from the image ids, see :class:`OxfordIIITPet`);
* protocol: train on ``trainval``, evaluate on ``test`` (torchvision's and mmpretrain's
  default split).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from fgvc.data.base import ImageDataset, resolve_folder
from fgvc.data.descriptor import DatasetSource, DatasetSpec
from fgvc.data.presets import Preset

PETS_FOLDER = "oxford-iiit-pet"
PETS_URL = "https://thor.robots.ox.ac.uk/~vgg/data/pets/"
PETS_COUNTS = {"trainval": 3680, "test": 3669}
PETS_NUM_CLASSES = 37
PETS_SPLITS = ("trainval", "test")


def locate_pets(root: str | os.PathLike) -> Path:
    """The ``oxford-iiit-pet`` folder under ``root`` (or ``root`` itself).

    Raises:
        FileNotFoundError: neither holds ``annotations/`` or ``images/``.
    """
    return resolve_folder(
        root,
        PETS_FOLDER,
        ["annotations", "images"],
        f"run `fgvc data download pets --root {root}`, set download: true, or ",
    )


def _read_split_file(path: Path) -> list[tuple[int, str, int]]:
    """``(line number, image id, CLASS-ID)`` of ``Image CLASS-ID SPECIES BREED-ID`` lines;
    blank and ``#`` lines (``list.txt``'s header) are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} is missing; restore it from {PETS_URL}annotations.tar.gz"
        ) from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text file ({err})") from None
    entries, seen = [], set()
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 4 or not all(field.isdigit() for field in fields[1:]):
            raise ValueError(
                f"{path} line {number}: expected 'Image CLASS-ID SPECIES BREED-ID' "
                f"(e.g. 'Abyssinian_100 1 1 1'), got {line.strip()!r}"
            )
        image_id, class_id, species = fields[0], int(fields[1]), int(fields[2])
        if not 1 <= class_id <= PETS_NUM_CLASSES or species not in (1, 2):
            raise ValueError(
                f"{path} line {number}: CLASS-ID {class_id} / SPECIES {species} out of range "
                f"(1..{PETS_NUM_CLASSES} / 1 cat, 2 dog)"
            )
        if image_id in seen:
            raise ValueError(f"{path} line {number}: image {image_id} is listed twice")
        seen.add(image_id)
        entries.append((number, image_id, class_id))
    return entries


def _class_name(breed: str) -> str:
    """torchvision's spelling of a raw breed (``american_pit_bull_terrier`` ->
    ``American Pit Bull Terrier``; ``str.title`` lower-cases the rest of each word)."""
    return " ".join(part.title() for part in breed.split("_"))


def _class_names(files: dict[str, list[tuple[int, str, int]]], folder: Path) -> list[str]:
    """The breed of each CLASS-ID (the image id up to its last ``_``), from every split
    file read; a CLASS-ID with two breeds, a breed with two CLASS-IDs or a CLASS-ID
    without images is an error naming the file and line."""
    breeds: dict[int, tuple[str, str]] = {}  # CLASS-ID -> (raw breed, where it was first seen)
    class_of: dict[str, int] = {}
    for name, entries in files.items():
        path = folder / "annotations" / f"{name}.txt"
        for number, image_id, class_id in entries:
            breed = image_id.rsplit("_", 1)[0]
            where = f"{path.name} line {number}"
            known = breeds.setdefault(class_id, (breed, where))
            if known[0] != breed:
                raise ValueError(
                    f"{path} line {number}: {image_id} has CLASS-ID {class_id}, which is "
                    f"{known[0]} in {known[1]}"
                )
            other = class_of.setdefault(breed, class_id)
            if other != class_id:
                raise ValueError(
                    f"{path} line {number}: {image_id} has CLASS-ID {class_id}, but "
                    f"{breed} is CLASS-ID {other} in {breeds[other][1]}"
                )
    missing = sorted(set(range(1, max(breeds, default=0) + 1)) - breeds.keys())
    if missing:
        raise ValueError(
            f"no image of CLASS-ID {', '.join(map(str, missing))} in "
            f"{', '.join(f'{name}.txt' for name in files)} under {folder / 'annotations'}, "
            f"so those classes have no names; restore the files from annotations.tar.gz"
        )
    return [_class_name(breeds[class_id][0]) for class_id in sorted(breeds)]


class OxfordIIITPet(ImageDataset):
    """`Oxford-IIIT Pets <https://www.robots.ox.ac.uk/~vgg/data/pets/>`_ (37 breeds).

    Expected layout, torchvision's (``root`` is the folder holding ``oxford-iiit-pet/``,
    or that folder)::

        oxford-iiit-pet/
            images/<image id>.jpg          e.g. Abyssinian_100.jpg, american_bulldog_10.jpg
            annotations/trainval.txt       "Image CLASS-ID SPECIES BREED-ID" per line,
            annotations/test.txt           e.g. "Abyssinian_100 1 1 1" (1-based ids)

    Blank lines and ``#`` lines are skipped. Labels are ``CLASS-ID - 1``. ``classes`` follow
    torchvision's rule: the image id up to its last ``_`` (``american_pit_bull_terrier``),
    title-cased word by word (``"American Pit Bull Terrier"``), in CLASS-ID order - read
    from both split files present, so that both splits have the same classes. ``ids`` are
    the image ids. Some ``.jpg`` files hold PNG or GIF data, or an alpha channel; images
    are decoded by content and converted to RGB (:mod:`fgvc.data.io`).

    Args:
        root: folder holding ``oxford-iiit-pet/`` (or the dataset folder itself).
        split: ``"trainval"`` or ``"test"``.
        transform: albumentations pipeline or callable applied to the RGB ``uint8`` image.
        decode_min_size: see :class:`fgvc.data.base.ImageDataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "trainval",
        transform: Callable | None = None,
        decode_min_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(transform, decode_min_size)
        if split not in PETS_SPLITS:
            raise ValueError(f"OxfordIIITPet split must be one of {PETS_SPLITS}, got {split!r}")
        self.split = split
        self.folder = locate_pets(root)
        annotations = self.folder / "annotations"
        files = {
            name: _read_split_file(annotations / f"{name}.txt")
            for name in PETS_SPLITS
            if name == split or (annotations / f"{name}.txt").is_file()
        }
        self.classes = _class_names(files, self.folder)
        images = self.folder / "images"
        self.samples = [(str(images / f"{i}.jpg"), c - 1) for _, i, c in files[split]]
        self.ids = [image_id for _, image_id, _ in files[split]]
        self._check_counts("Oxford-IIIT Pets", PETS_COUNTS, PETS_NUM_CLASSES)


DATASET = DatasetSpec(
    name="pets",
    title="Oxford-IIIT Pets",
    homepage="https://www.robots.ox.ac.uk/~vgg/data/pets/",
    parser=OxfordIIITPet,
    locate=locate_pets,
    splits=PETS_SPLITS,
    num_classes=PETS_NUM_CLASSES,
    counts=PETS_COUNTS,
    # CUB's protocol (short side to S, center crop S): the iSQRT-COV authors published no
    # recipe for Pets, and its photos are not square
    preset=Preset("short_side"),
    datamodule="PetsDataModule",
    # images/ and annotations/ unpacked side by side into oxford-iiit-pet/, as torchvision does
    sources=(
        DatasetSource(
            url=PETS_URL + "images.tar.gz",  # 791,918,971 bytes
            filename="images.tar.gz",
            folder=PETS_FOLDER,
            md5="5c4f3ee8e5d25df40f4fd59a7f44e54c",
            sha256="67195c5e1c01f1ab5f9b6a5d22b8c27a580d896ece458917e61d459337fa318d",
            into="",
        ),
        DatasetSource(
            url=PETS_URL + "annotations.tar.gz",  # 19,173,078 bytes
            filename="annotations.tar.gz",
            folder=PETS_FOLDER,
            md5="95a8c909bbe2e81eed6a22bccdf3f68f",
            sha256="52425fb6de5c424942b7626b428656fcbd798db970a937df61750c0f1d358e91",
            into="",
        ),
    ),
    train_split="trainval",
    citation=(
        "Parkhi et al., CVPR 2012; counts: TFDS catalog oxford_iiit_pet; md5s: torchvision "
        "datasets/oxford_iiit_pet.py; sha256s: TFDS datasets/oxford_iiit_pet/checksums.tsv; "
        "shared/design/datasets-more.md s2"
    ),
)
