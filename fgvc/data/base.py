"""What every ``fgvc`` dataset shares: samples, classes, decoding, transforms, subsets."""

from __future__ import annotations

import copy
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from fgvc.data.io import read_rgb


def apply_transform(transform: Callable | None, image: np.ndarray) -> Any:
    """Apply an albumentations pipeline (called as ``t(image=...)``) or a plain callable."""
    if transform is None:
        return image
    if _is_albumentations(transform):
        return transform(image=image)["image"]
    return transform(image)


def _is_albumentations(transform: Callable) -> bool:
    albumentations = sys.modules.get("albumentations")  # not imported: cannot be one
    if albumentations is None:
        return False
    return isinstance(transform, (albumentations.BasicTransform, albumentations.BaseCompose))


def resolve_folder(
    root: str | os.PathLike, folder_name: str, markers: Sequence[str], hint: str = ""
) -> Path:
    """Find a dataset folder: ``root/<folder_name>`` or ``root`` itself.

    A candidate is accepted when it holds any of ``markers`` (relative paths); ``hint`` ends
    the error message (e.g. the download command).

    Raises:
        FileNotFoundError: neither candidate holds the dataset.
    """
    root = Path(root).expanduser()
    for candidate in (root / folder_name, root):
        if any((candidate / marker).exists() for marker in markers):
            return candidate
    raise FileNotFoundError(
        f"no {folder_name} dataset under {root} (looked for {', '.join(markers)} in "
        f"{root / folder_name} and {root}); {hint}pass the folder that holds {folder_name}/"
    )


def read_lines(path: Path) -> list[str]:
    """Non-empty lines of a text annotation file, without line endings.

    Raises:
        FileNotFoundError: the file is missing (the message names it).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing; the dataset folder is incomplete") from None
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


class ImageDataset(Dataset):
    """Base class: ``samples`` (path, 0-based label), ``classes`` and ``ids``.

    ``ds[i]`` is ``(image, label)``: with ``transform=None`` an ``(H, W, 3)`` RGB ``uint8``
    array, otherwise whatever the transform returns. Albumentations pipelines (such as
    :func:`fgvc.data.transforms.build_transforms`) and plain callables are both accepted.

    ``decode_min_size`` (``(min_height, min_width)``) lets JPEGs be decoded at 1/2, 1/4
    or 1/8 scale when the result is still at least that large; the default decodes at
    full size.
    """

    samples: list[tuple[str, int]]
    classes: list[str]
    ids: list[str]
    count_problem: str | None = None

    def __init__(
        self,
        transform: Callable | None = None,
        decode_min_size: tuple[int, int] | None = None,
    ) -> None:
        self.transform = transform
        self.decode_min_size = decode_min_size

    @property
    def targets(self) -> list[int]:
        """The labels, in sample order."""
        return [label for _, label in self.samples]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> np.ndarray:
        """The decoded RGB ``uint8`` image of sample ``index`` (before the transform)."""
        return read_rgb(self.samples[index][0], self.decode_min_size)[0]

    def __getitem__(self, index: int | tuple[int, ...]) -> tuple[Any, int]:
        """``ds[i]``, ``ds[(i, seed)]`` or ``ds[(i, seed, epoch)]``: the transform's random
        state is set to ``seed`` first, and a transform whose output follows the epoch
        (:class:`~fgvc.data.resolution.EpochSizedTransform`) is told ``epoch`` (see
        :class:`fgvc.data.sampler.EpochSeededSampler`)."""
        if isinstance(index, tuple):
            index, seed, *epoch = index
            if epoch and hasattr(self.transform, "set_epoch"):
                self.transform.set_epoch(epoch[0])
            if hasattr(self.transform, "set_random_seed"):
                self.transform.set_random_seed(seed)
        image = self.load(index)
        return apply_transform(self.transform, image), self.samples[index][1]

    def subset(
        self,
        indices: Sequence[int],
        transform: Callable | None = None,
        decode_min_size: tuple[int, int] | None = None,
    ) -> ImageDataset:
        """A copy holding only ``indices`` (same classes), with its own transform."""
        view = copy.copy(self)
        view.samples = [self.samples[i] for i in indices]
        view.ids = [self.ids[i] for i in indices]
        view.transform = transform
        view.decode_min_size = decode_min_size
        return view

    def _check_counts(self, name: str, published: dict[str, int], num_classes: int) -> None:
        """Compare this split with its published count when the full class set is present."""
        split = getattr(self, "split", None)
        expected = published.get(split)
        if len(self.classes) != num_classes or expected in (None, len(self.samples)):
            return
        self.count_problem = (
            f"{name} count mismatch ({split}: {len(self.samples)} images, published {expected})"
        )
        warnings.warn(
            f"{self.count_problem}: the copy is incomplete or modified; "
            f"run `fgvc data check` to see what is missing",
            stacklevel=3,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={getattr(self, 'split', None)!r}, "
            f"samples={len(self)}, classes={len(self.classes)})"
        )
