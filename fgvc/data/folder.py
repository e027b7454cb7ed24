"""Image folders: ``root/<split>/<class>/<image>``, as torchvision's ImageFolder reads them."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from fgvc.data.base import ImageDataset
from fgvc.data.io import IMAGE_EXTENSIONS


def list_classes(split_dir: str | os.PathLike) -> list[str]:
    """Sorted names of the class folders in ``split_dir``."""
    return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())


class FolderDataset(ImageDataset):
    """A dataset of class folders, one folder per split (torchvision ``ImageFolder`` rules).

    Expected layout::

        root/
            train/<class>/<image>.jpg     images may sit in sub-folders of a class folder
            val/<class>/<image>.jpg
            test/<class>/<image>.jpg      (any split name)

    Classes are the sorted folder names of the split, labels their 0-based index; files are
    walked in sorted order and kept when their extension is an image one. Pass the training
    split's ``classes`` when reading another split so that labels agree even when that split
    lacks a class. ``ids`` are paths relative to the split folder.

    Args:
        root: the folder holding the split folders.
        split: name of the split folder, e.g. ``"train"``.
        transform: albumentations pipeline or callable applied to the RGB ``uint8`` image.
        classes: class names in label order; default: the split's own folders.
        decode_min_size: see :class:`fgvc.data.base.ImageDataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        classes: Sequence[str] | None = None,
        decode_min_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(transform, decode_min_size)
        self.split = split
        self.folder = Path(root).expanduser() / split
        if not self.folder.is_dir():
            parent = self.folder.parent
            present = list_classes(parent) if parent.is_dir() else []
            raise FileNotFoundError(
                f"{self.folder} not found (split folders present: {present or 'none'}); "
                f"expected {root}/<split>/<class>/<image>"
            )
        found = list_classes(self.folder)
        self.classes = list(classes) if classes is not None else found
        index_of = {name: i for i, name in enumerate(self.classes)}
        unknown = [name for name in found if name not in index_of]
        if unknown:
            raise ValueError(
                f"{self.folder} has class folders {unknown} that the training split lacks"
            )
        self.samples, self.ids = [], []
        for name in found:
            class_dir = self.folder / name
            count = 0
            for dirpath, _, filenames in sorted(os.walk(class_dir, followlinks=True)):
                for filename in sorted(filenames):
                    if filename.lower().endswith(IMAGE_EXTENSIONS):
                        path = Path(dirpath) / filename
                        self.samples.append((str(path), index_of[name]))
                        self.ids.append(path.relative_to(self.folder).as_posix())
                        count += 1
            if count == 0:
                raise FileNotFoundError(
                    f"class folder {class_dir} holds no image ({', '.join(IMAGE_EXTENSIONS)})"
                )
