"""CUB-200-2011 (Caltech-UCSD Birds): 200 classes, 5,994 train / 5,794 test images."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from fgvc.data.base import ImageDataset, read_lines, resolve_folder
from fgvc.data.descriptor import DatasetSource, DatasetSpec
from fgvc.data.presets import Preset

CUB_FOLDER = "CUB_200_2011"
CUB_COUNTS = {"train": 5994, "test": 5794}
CUB_NUM_CLASSES = 200


def locate_cub(root: str | os.PathLike) -> Path:
    """The ``CUB_200_2011`` folder under ``root`` (or ``root`` itself).

    Raises:
        FileNotFoundError: neither holds ``images.txt`` (the message says how to get it).
    """
    return resolve_folder(
        root,
        CUB_FOLDER,
        ["images.txt"],
        f"run `fgvc data download cub --root {root}`, set download: true, or ",
    )


def _id_table(path: Path) -> dict[str, str]:
    """``"<id> <value>"`` lines as ``{id: value}`` (value: the rest of the line)."""
    table: dict[str, str] = {}
    for number, line in enumerate(read_lines(path), start=1):
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{path} line {number}: expected '<id> <value>', got {line!r}")
        if parts[0] in table:
            raise ValueError(f"{path} line {number}: id {parts[0]} appears twice")
        table[parts[0]] = parts[1].strip()
    return table


def _describe(ids: set[str]) -> str:
    ordered = sorted(ids, key=lambda i: (len(i), i))
    shown = ", ".join(ordered[:10])
    return f"{len(ids)} ids ({shown}{', ...' if len(ids) > 10 else ''})"


class CUB200(ImageDataset):
    """`CUB-200-2011 <https://www.vision.caltech.edu/datasets/cub_200_2011/>`_ birds.

    Expected layout (``root`` is the folder holding ``CUB_200_2011/``, or that folder)::

        CUB_200_2011/
            images.txt              <image_id> <relative path>
            image_class_labels.txt  <image_id> <class_id>
            train_test_split.txt    <image_id> <is_training: 1 train, 0 test>
            classes.txt             <class_id> <class name>, e.g. "1 001.Black_footed_Albatross"
            images/<class folder>/<file>.jpg

    Labels are 0-based in ``classes.txt`` order of class id; ``classes`` holds the names as
    written there. ``ids`` are the image ids (strings). The three id files must list the
    same image ids; otherwise a ``ValueError`` says which ids are missing where.

    Args:
        root: folder holding ``CUB_200_2011/`` (or the dataset folder itself).
        split: ``"train"`` or ``"test"``.
        transform: albumentations pipeline or callable applied to the RGB ``uint8`` image.
        decode_min_size: see :class:`fgvc.data.base.ImageDataset`.
    """

    #: the dataset's name in messages, its published counts and class count
    title = "CUB-200-2011"
    published = CUB_COUNTS
    published_classes = CUB_NUM_CLASSES

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        decode_min_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(transform, decode_min_size)
        if split not in ("train", "test"):
            raise ValueError(
                f"{type(self).__name__} split must be 'train' or 'test', got {split!r}"
            )
        self.split = split
        self.folder = self.locate(root)
        images = _id_table(self.folder / "images.txt")
        labels = _id_table(self.folder / "image_class_labels.txt")
        is_train = _id_table(self.folder / "train_test_split.txt")
        class_table = _id_table(self.folder / "classes.txt")

        self._check_ids_agree(images, labels, is_train)
        try:
            class_ids = [int(c) for c in class_table]
        except ValueError:
            raise ValueError(f"{self.folder / 'classes.txt'}: class ids must be integers") from None
        class_ids = self.label_classes(sorted(class_ids), labels)
        self.classes = [class_table[str(c)] for c in class_ids]
        index_of = {c: i for i, c in enumerate(class_ids)}

        self.samples, self.ids = [], []
        wanted = "1" if split == "train" else "0"
        for image_id, rel_path in images.items():
            flag = is_train[image_id]
            if flag not in ("0", "1"):
                raise ValueError(
                    f"{self.folder / 'train_test_split.txt'}: image {image_id} has "
                    f"is_training={flag!r}; expected 0 or 1"
                )
            if flag != wanted:
                continue
            class_id = int(labels[image_id]) if labels[image_id].isdigit() else None
            if class_id not in index_of:
                raise ValueError(
                    f"{self.folder / 'image_class_labels.txt'}: image {image_id} has class "
                    f"{labels[image_id]}, which classes.txt does not list"
                )
            self.samples.append((str(self.folder / "images" / rel_path), index_of[class_id]))
            self.ids.append(image_id)
        self._check_counts(self.title, self.published, self.published_classes)

    @staticmethod
    def locate(root: str | os.PathLike) -> Path:
        """The dataset folder under ``root``."""
        return locate_cub(root)

    def label_classes(self, class_ids: list[int], labels: dict[str, str]) -> list[int]:
        """The class ids that get labels, in label order: all of ``classes.txt`` here."""
        return class_ids

    def _check_ids_agree(
        self, images: dict[str, str], labels: dict[str, str], is_train: dict[str, str]
    ) -> None:
        problems = []
        for name, table in (
            ("image_class_labels.txt", labels),
            ("train_test_split.txt", is_train),
        ):
            missing = images.keys() - table.keys()
            extra = table.keys() - images.keys()
            if missing:
                problems.append(f"{name} lacks {_describe(missing)} listed in images.txt")
            if extra:
                problems.append(f"{name} has {_describe(extra)} not in images.txt")
        if problems:
            raise ValueError(
                f"{self.title} id files in {self.folder} disagree: {'; '.join(problems)}; "
                f"restore the files from the original archive"
            )


DATASET = DatasetSpec(
    name="cub",
    title="CUB-200-2011",
    homepage="https://www.vision.caltech.edu/datasets/cub_200_2011/",
    parser=CUB200,
    locate=locate_cub,
    splits=("train", "test"),
    num_classes=CUB_NUM_CLASSES,
    counts=CUB_COUNTS,
    # the authors' fine-tuning code: short side to S, center crop S
    preset=Preset("short_side"),
    datamodule="CUBDataModule",
    sources=(
        DatasetSource(
            url="https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
            filename="CUB_200_2011.tgz",
            folder=CUB_FOLDER,
            sha256="0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081",
            md5="97eceeb196236b17998738112f37df78",
        ),
    ),
    citation="Wah et al., CNS-TR-2011-001; counts and checksums: shared/design/datasets.md",
)
