"""What a dataset is to the rest of fgvc: one :class:`DatasetSpec`, in the dataset's module.

A dataset is one module in :mod:`fgvc.data.datasets` holding its parser (an
:class:`~fgvc.data.base.ImageDataset`) and a module-level ``DATASET = DatasetSpec(...)``:
its classes and published counts, splits, where its files come from (URLs, checksums),
its preprocessing preset (numbers) and its DataModule's name. ``fgvc data check``,
``fgvc data download``, the command-line choices, the presets and the DataModules all read
the specs, so adding a dataset means its module, a config and a replica test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fgvc.data.presets import Preset

if TYPE_CHECKING:
    from fgvc.data.base import ImageDataset


@dataclass(frozen=True)
class DatasetSource:
    """One file to download: where it is, what it hashes to, where its contents go.

    Attributes:
        url: the published URL (``FGVC_<NAME>_URL`` / ``FGVC_MIRROR`` override it).
        filename: the file's usual name (mirrors hold it under this name).
        folder: the dataset folder under ``root`` that the download builds.
        sha256, md5: published checksums (at least one; md5 where nothing else is published).
        into: ``None``: the archive holds ``folder/`` itself (CUB, Aircraft); a relative
            path (``""`` for the dataset folder): the archive's contents are unpacked there.
        extract: ``False`` for a plain file (a ``.mat``), copied into ``folder/into``.
    """

    url: str
    filename: str
    folder: str
    sha256: str | None = None
    md5: str | None = None
    into: str | None = None
    extract: bool = True


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: a ``fgvc data check|download`` name and a DataModule.

    Attributes:
        name: the command-line name (``cub``), also the name of its preset.
        title: the dataset's own name, for messages (``CUB-200-2011``).
        homepage: where it is described.
        parser: ``(root, split, **options) -> ImageDataset``.
        locate: ``root -> dataset folder``; raises ``FileNotFoundError`` (one line saying
            what was looked for and how to get it) when it is not there.
        splits: the splits ``fgvc data check`` reads, in order.
        num_classes: classes of the full dataset (``None``: whatever a folder holds).
        counts: published images per split (a mismatch fails ``fgvc data check``).
        preset: its preprocessing; ``None``: it uses another preset (``datamodule`` says).
        sources: the files ``fgvc data download`` fetches; empty: ``manual`` says how to get it.
        manual: how to get the files when they cannot be downloaded automatically.
        train_split, test_split: the splits training and testing use.
        val_split: the official validation split, if there is one.
        trainval_split: train + official val, trained on when ``val_split`` is a number.
        check_options: parser options ``fgvc data check`` reads each split with (Aircraft's
            three levels); their values name the checked variants (``train/family``).
        datamodule: the DataModule's class name under :mod:`fgvc.data`; built from this spec
            by :func:`fgvc.data.datamodules.described_datamodule` unless the module
            :mod:`fgvc.data.datamodules` defines it (for extra arguments).
        list_splits: for datasets whose splits are folders on disk: ``root -> split names``.
        citation: where the published figures come from.
    """

    name: str
    title: str
    homepage: str
    parser: Callable[..., ImageDataset]
    locate: Callable[[Path], Path]
    splits: tuple[str, ...]
    num_classes: int | None
    counts: Mapping[str, int]
    preset: Preset | None
    datamodule: str
    sources: tuple[DatasetSource, ...] = ()
    manual: str = ""
    train_split: str = "train"
    test_split: str = "test"
    val_split: str | None = None
    trainval_split: str | None = None
    check_options: tuple[Mapping[str, Any], ...] = field(default=({},))
    list_splits: Callable[[Path], Sequence[str]] | None = None
    citation: str = ""

    def split_names(self, root: str | os.PathLike) -> Sequence[str]:
        """The splits to check under ``root`` (read from disk for folder datasets)."""
        if self.list_splits is not None:
            return self.list_splits(Path(root).expanduser())
        return self.splits

    def present(self, root: str | os.PathLike) -> bool:
        """Whether the dataset's files are under ``root``."""
        try:
            self.locate(Path(root).expanduser())
        except FileNotFoundError:
            return False
        return True
