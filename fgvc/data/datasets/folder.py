"""Image folders: ``root/<split>/<class>/<image>``, as torchvision's ImageFolder reads them."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fgvc.data.base import ImageDataset
from fgvc.data.descriptor import DatasetSpec
from fgvc.data.files import (
    FileKey,
    WalkResult,
    confusable_message,
    confusable_names,
    display_path,
    is_utf8,
    walk_images,
)
from fgvc.data.io import IMAGE_EXTENSIONS


def list_classes(split_dir: str | os.PathLike) -> list[str]:
    """Sorted names of the folders in ``split_dir`` (links to folders included).

    Raises:
        OSError: ``split_dir`` cannot be listed (one line naming it).
    """
    try:
        with os.scandir(split_dir) as entries:
            return sorted(entry.name for entry in entries if entry.is_dir())
    except OSError as err:
        raise type(err)(
            f"cannot read folder {display_path(split_dir)} ({err.strerror or err}); "
            f"check that it exists and fix its permissions"
        ) from None


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

    A class folder may be a link (e.g. into a shared pool); inside it, file links are
    followed and folder links are not (see :func:`fgvc.data.files.walk_images`). What was
    left out - link loops, folder links, unreadable sub-folders, a file reached twice or
    from two classes (it is then kept only in the class that holds the file itself, or in
    none) - is listed in ``skipped`` (one line each) and summed up in one warning.

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
        for name in found:  # such a name would crash much later, writing per-class results
            if not is_utf8(name):
                raise ValueError(
                    f"class folder {display_path(self.folder / name)} has a name that is not "
                    f"valid UTF-8; rename it to a UTF-8 name"
                )
        self.classes = list(classes) if classes is not None else found
        index_of = {name: i for i, name in enumerate(self.classes)}
        unknown = [name for name in found if name not in index_of]
        if unknown:
            raise ValueError(
                f"{self.folder} has class folders {unknown} that the training split lacks"
            )
        _check_class_folders(self.folder, found)
        #: one line per group of class folders that differ only in case or normalization
        self.confusable = [
            confusable_message(display_path(self.folder), group)
            for group in confusable_names(found)
        ]
        for message in self.confusable:
            warnings.warn(message, stacklevel=2)
        walks = {name: walk_images(self.folder / name) for name in found}
        _drop_shared_files(walks)
        self.skipped: list[str] = [
            message for walk in walks.values() for _, message in walk.skipped
        ]
        self.samples, self.ids = [], []
        for name, walk in walks.items():
            if not walk.files:
                class_dir = display_path(self.folder / name)
                left_out = [message for path, message in walk.skipped]
                if left_out:
                    raise FileNotFoundError(
                        f"class folder {class_dir} holds no usable image: {len(left_out)} "
                        f"entries left out (first: {left_out[0]})"
                    )
                raise FileNotFoundError(
                    f"class folder {class_dir} holds no image ({', '.join(IMAGE_EXTENSIONS)})"
                )
            for path in walk.files:
                self.samples.append((str(path), index_of[name]))
                self.ids.append(path.relative_to(self.folder).as_posix())
        if self.skipped:
            shown = "; ".join(self.skipped[:3]) + ("; ..." if len(self.skipped) > 3 else "")
            warnings.warn(
                f"{display_path(self.folder)}: {len(self.skipped)} entries left out ({shown}); "
                f"`fgvc data check folder --root {display_path(root)}` lists them all",
                stacklevel=2,
            )


def _check_class_folders(split_dir: Path, names: list[str]) -> None:
    """Refuse class folders that are, or hold, the split folder or another class folder
    (through links): their images would get several labels."""
    owner: dict[str, str] = {}
    split_real = os.path.realpath(split_dir)
    for name in names:
        real = os.path.realpath(split_dir / name)
        if split_real == real or split_real.startswith(real.rstrip(os.sep) + os.sep):
            raise ValueError(
                f"class folder {display_path(split_dir / name)} links to {display_path(real)}, "
                f"which is or holds the split folder; link it to a folder of its own"
            )
        owner.setdefault(real, name)
    for name in names:
        real = Path(os.path.realpath(split_dir / name))
        for folder in (real, *real.parents):
            other = owner.get(str(folder))
            if other is not None and other != name:
                raise ValueError(
                    f"class folders {display_path(split_dir / name)} and "
                    f"{display_path(split_dir / other)} are the same folder or one holds "
                    f"the other ({display_path(real)}, through a link); their images would get "
                    f"two labels - give each class a folder of its own"
                )


def _drop_shared_files(walks: dict[str, WalkResult]) -> None:
    """Leave out files found in several classes (into ``skipped``); keep the one path that
    is no link, if there is exactly one."""
    places: dict[FileKey, list[tuple[str, int]]] = {}
    for name, walk in walks.items():
        for index, key in enumerate(walk.keys):
            places.setdefault(key, []).append((name, index))
    drop: dict[str, set[int]] = {}
    for found in places.values():
        if len(found) < 2:
            continue
        real = [place for place in found if not walks[place[0]].files[place[1]].is_symlink()]
        keep = real[0] if len(real) == 1 else None
        for name, index in found:
            if (name, index) == keep:
                continue
            drop.setdefault(name, set()).add(index)
            path = walks[name].files[index]
            if keep is not None:
                kept = display_path(walks[keep[0]].files[keep[1]])
                why = f"same file as {kept} of class {keep[0]!r}; one file, one label - remove it"
            else:
                others = sorted({other for other, _ in found if other != name})
                why = (
                    f"the same file is also in class(es) {others}; one file, one label - it is "
                    f"left out of all of them, keep it in one class"
                )
            walks[name].skipped.append((path, f"{display_path(path)}: {why}"))
    for name, indices in drop.items():
        walk = walks[name]
        kept_ = [i for i in range(len(walk.files)) if i not in indices]
        walk.files = [walk.files[i] for i in kept_]
        walk.keys = [walk.keys[i] for i in kept_]


def locate_folder(root: str | os.PathLike) -> Path:
    """``root`` itself, the folder holding the split folders."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; expected {root}/<split>/<class>/<image>")
    return root


def read_folder_split(root: str | os.PathLike, split: str, **kwargs: Any) -> FolderDataset:
    """Split ``split`` of a folder dataset, labelled with the ``train/`` split's classes
    when there is one (so that labels agree across splits)."""
    root = Path(root).expanduser()
    train = list_classes(root / "train") if (root / "train").is_dir() else None
    return FolderDataset(root, split, classes=train, **kwargs)


def _split_folders(root: Path) -> list[str]:
    return list_classes(locate_folder(root))


DATASET = DatasetSpec(
    name="folder",
    title="image folders",
    homepage="https://pytorch.org/vision/stable/generated/torchvision.datasets.ImageFolder.html",
    parser=read_folder_split,
    locate=locate_folder,
    splits=(),
    num_classes=None,
    counts={},
    preset=None,  # the ``generic`` preset
    datamodule="FolderDataModule",
    manual="Image folders are your own: put them under <root>/<split>/<class>/<image>.",
    list_splits=_split_folders,
)
