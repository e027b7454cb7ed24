"""The synthetic fine-grained dataset (CUB layout), as a dataset: see :mod:`fgvc.data.synthetic`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fgvc.data.datasets.cub import CUB200
from fgvc.data.descriptor import DatasetSpec
from fgvc.data.synthetic import synth_folder


def locate_synthetic(root: str | os.PathLike) -> Path:
    """``root/synthetic`` (or ``root`` holding ``synth.json``) once it has been written.

    Raises:
        FileNotFoundError: it has not been written (says how to write it).
    """
    folder = synth_folder(root)
    if not (folder / "images.txt").is_file():
        raise FileNotFoundError(
            f"no synthetic dataset in {folder}; write it with `fgvc data synth --root {root}`"
        )
    return folder


def read_synthetic(root: str | os.PathLike, split: str, **kwargs: Any) -> CUB200:
    """Split ``split`` of the synthetic dataset under ``root``."""
    return CUB200(synth_folder(root), split, **kwargs)


DATASET = DatasetSpec(
    name="synthetic",
    title="synthetic fine-grained shapes",
    homepage="",  # generated: fgvc data synth
    parser=read_synthetic,
    locate=locate_synthetic,
    splits=("train", "test"),
    num_classes=None,  # as generated
    counts={},
    preset=None,  # the ``cub`` preset
    datamodule="SyntheticDataModule",
    manual="The synthetic dataset is generated: fgvc data synth --root <root>.",
)
