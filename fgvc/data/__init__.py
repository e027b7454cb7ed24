"""Datasets, decoding, transforms and DataModules for fine-grained recognition.

Datasets (``ds[i] -> (image, label)``, RGB ``uint8`` arrays without a transform):
:class:`CUB200`, :class:`StanfordCars`, :class:`FGVCAircraft`, :class:`FolderDataset`.
Transforms: :func:`build_transforms`. DataModules: :class:`CUBDataModule`,
:class:`CarsDataModule`, :class:`AircraftDataModule`, :class:`FolderDataModule`,
:class:`SyntheticDataModule`. Command line: ``fgvc data download|check|synth``.

The transforms and DataModules import albumentations / pytorch_lightning, which take a
while; they are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from fgvc.data.aircraft import FGVCAircraft
from fgvc.data.base import ImageDataset
from fgvc.data.cars import StanfordCars
from fgvc.data.cub import CUB200
from fgvc.data.folder import FolderDataset
from fgvc.data.io import ImageDecodeError, load_rgb, read_rgb
from fgvc.data.synthetic import SynthConfig, make_synthetic

_LAZY = {
    "build_transforms": "fgvc.data.transforms",
    "normalize_images": "fgvc.data.transforms",
    "hflip_tta": "fgvc.data.transforms",
    "EvalPreprocessing": "fgvc.data.preprocessing",
    "FGVCDataModule": "fgvc.data.datamodule",
    "CUBDataModule": "fgvc.data.datamodules",
    "CarsDataModule": "fgvc.data.datamodules",
    "AircraftDataModule": "fgvc.data.datamodules",
    "FolderDataModule": "fgvc.data.datamodules",
    "SyntheticDataModule": "fgvc.data.datamodules",
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
    raise AttributeError(f"module 'fgvc.data' has no attribute {name!r}")
