"""Datasets, decoding, transforms and DataModules for fine-grained recognition.

Datasets (``ds[i] -> (image, label)``, RGB ``uint8`` arrays without a transform) live one per
module in :mod:`fgvc.data.datasets`, each with its descriptor (``fgvc data check|download``
names them): :class:`CUB200`, :class:`StanfordCars`, :class:`FGVCAircraft`,
:class:`FolderDataset` and the others there. Transforms: :func:`build_transforms`.
DataModules: ``fgvc.data.<Name>DataModule`` for every dataset (``CUBDataModule``,
``AircraftDataModule``, ``FolderDataModule``, ``SyntheticDataModule``...) and
``ShardDataModule`` (litdata shards, :mod:`fgvc.data.shards`). Command line:
``fgvc data download|check|synth|shard``.

The transforms and DataModules import albumentations / pytorch_lightning, which take a
while; they are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from fgvc.data.base import ImageDataset
from fgvc.data.datasets.aircraft import FGVCAircraft
from fgvc.data.datasets.cars import StanfordCars
from fgvc.data.datasets.cub import CUB200
from fgvc.data.datasets.folder import FolderDataset
from fgvc.data.io import ImageDecodeError, load_rgb, read_rgb
from fgvc.data.synthetic import SynthConfig, make_synthetic

_LAZY = {
    "build_transforms": "fgvc.data.transforms",
    "normalize_images": "fgvc.data.transforms",
    "hflip_tta": "fgvc.data.transforms",
    "EvalPreprocessing": "fgvc.data.preprocessing",
    "FGVCDataModule": "fgvc.data.datamodule",
    "DescribedDataModule": "fgvc.data.datamodules",
    "ShardDataModule": "fgvc.data.shards.datamodule",
}

__all__ = [
    "CUB200",
    "FGVCAircraft",
    "FolderDataset",
    "ImageDataset",
    "ImageDecodeError",
    "StanfordCars",
    "SynthConfig",
    "load_rgb",
    "make_synthetic",
    "read_rgb",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name.endswith("DataModule"):  # a dataset's DataModule, named by its descriptor
        from fgvc.data.datasets import datamodule_spec

        spec = datamodule_spec(name)
        if spec is not None:
            from fgvc.data.datamodules import described_datamodule

            return described_datamodule(spec.name)
    raise AttributeError(f"module 'fgvc.data' has no attribute {name!r}")
