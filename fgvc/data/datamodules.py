"""The DataModules: one per dataset, built from the dataset's descriptor.

:class:`DescribedDataModule` is :class:`~fgvc.data.datamodule.FGVCDataModule` (splits,
transforms, loaders, the evaluation preprocessing) driven by a
:class:`~fgvc.data.descriptor.DatasetSpec`: its parser, splits, preset and download.
A dataset's DataModule (``fgvc.data.<spec.datamodule>``) is the one defined here when it
takes arguments of its own (FGVC-Aircraft's ``level``), else made from the descriptor by
:func:`described_datamodule`. Constructor arguments are the ``data:`` section of a config.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

from pytorch_lightning.utilities import rank_zero_warn

from fgvc.data.base import ImageDataset
from fgvc.data.datamodule import FGVCDataModule
from fgvc.data.datasets import dataset_spec
from fgvc.data.datasets.cub import CUB200
from fgvc.data.datasets.folder import FolderDataset
from fgvc.data.descriptor import DatasetSpec
from fgvc.data.synthetic import (
    SynthConfig,
    make_synthetic,
    read_synth_config,
    synth_folder,
    synthetic_class_names,
)
from fgvc.utils.locks import file_lock


class DescribedDataModule(FGVCDataModule):
    """The DataModule of the dataset named ``dataset_name`` (its descriptor says the rest).

    Without ``val_split`` the official validation split is used where the dataset has one;
    with a number, training uses the train + val split (``trainval``) where there is one,
    ``0`` validating on the test split (the papers' protocol), ``> 0`` holding out a
    stratified fraction of it.

    Args:
        root: folder holding the dataset folder (as torchvision uses it).
        download: fetch it into ``root`` the first time it is needed (checksum-verified,
            safely extracted, under a lock so that DDP ranks and nodes fetch it once;
            :mod:`fgvc.data.download`, whose ``FGVC_<NAME>_URL`` / ``FGVC_MIRROR`` variables
            point it at a mirror). A dataset already under ``root`` is used as it is.
        **kwargs: see :class:`~fgvc.data.datamodule.FGVCDataModule`.
    """

    #: the descriptor's ``name``
    dataset_name = ""

    def __init__(self, root: str = "data", download: bool = False, **kwargs: Any) -> None:
        super().__init__(root=root, **kwargs)
        self.download = download

    @property
    def spec(self) -> DatasetSpec:
        return dataset_spec(self.dataset_name)

    @property
    def default_preset(self) -> str:  # type: ignore[override]
        return self.spec.name

    @property
    def test_split_name(self) -> str:  # type: ignore[override]
        return self.spec.test_split

    def official_val_split(self) -> str | None:
        return self.spec.val_split

    def _fit_train_split(self) -> str:
        spec = self.spec
        if self._uses_official_val() or spec.trainval_split is None:
            return spec.train_split
        return spec.trainval_split

    def dataset_options(self) -> dict[str, Any]:
        """Keyword arguments of the dataset's parser (a subclass's own arguments)."""
        return {}

    def make_dataset(self, split: str) -> ImageDataset:
        return self.spec.parser(self.root, split, **self.dataset_options())

    def fetch(self) -> None:
        spec = self.spec
        if not self.download or spec.present(self.root):
            return
        if not spec.sources:
            raise FileNotFoundError(
                f"{spec.title} cannot be downloaded automatically; `fgvc data download "
                f"{spec.name}` says where to get it, then set download: false"
            )
        from fgvc.data.download import download_dataset

        download_dataset(spec.name, self.root, progress=sys.stderr.isatty())


@functools.cache
def described_datamodule(name: str) -> type[FGVCDataModule]:
    """The DataModule class of dataset ``name`` (``fgvc.data.<its datamodule name>``)."""
    spec = dataset_spec(name)
    own = globals().get(spec.datamodule)
    if isinstance(own, type) and issubclass(own, FGVCDataModule):
        return own
    doc = (
        f"{spec.title} ({spec.homepage}): the DataModule its descriptor describes "
        f"(:mod:`fgvc.data.datasets.{spec.name}`).\n\n" + (DescribedDataModule.__doc__ or "")
    )
    return type(  # defined under fgvc.data, where configs name it and pickle finds it
        spec.datamodule,
        (DescribedDataModule,),
        {"dataset_name": spec.name, "__module__": "fgvc.data", "__doc__": doc},
    )


class CUBDataModule(DescribedDataModule):
    """CUB-200-2011 (``root/CUB_200_2011``); no official validation split."""

    dataset_name = "cub"


class CarsDataModule(DescribedDataModule):
    """Stanford Cars (``root/stanford_cars``, any accepted layout); no official val split.
    It cannot be downloaded automatically (``fgvc data download cars`` says from where)."""

    dataset_name = "cars"


class AircraftDataModule(DescribedDataModule):
    """FGVC-Aircraft (``root/fgvc-aircraft-2013b``).

    ``val_split=None`` (default): train on ``train``, validate on the official ``val``.
    A number: the ``trainval`` split is used for training, ``0`` validating on ``test``
    (the papers' protocol), ``> 0`` holding out a stratified fraction of it.

    Args:
        level: ``"variant"`` (100 classes), ``"family"`` (70) or ``"manufacturer"`` (30).
        crop_banner: remove the 20-pixel copyright banner.
        download: fetch it into ``root`` when it is not there (see
            :class:`DescribedDataModule`).
    """

    dataset_name = "aircraft"

    def __init__(
        self,
        root: str = "data",
        level: str = "variant",
        crop_banner: bool = True,
        download: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, download=download, **kwargs)
        self.level = level
        self.crop_banner = crop_banner

    def dataset_options(self) -> dict[str, Any]:
        return {"level": self.level, "crop_banner": self.crop_banner}


class FolderDataModule(FGVCDataModule):
    """Class folders ``root/{train,val,test}/<class>/<image>`` (torchvision ImageFolder).

    ``root`` is the folder holding the split folders. ``val/`` is the official validation
    split (used when ``val_split`` is None); ``test`` uses ``test/``, or ``val/`` when there
    is no ``test/`` (the authors' layout has only train/ and val/). Classes come from
    ``train/``; the other splits use the same label mapping.
    """

    default_preset = "generic"

    @property
    def test_split_name(self) -> str:
        root = Path(self.root).expanduser()
        return "test" if (root / "test").is_dir() or not (root / "val").is_dir() else "val"

    def official_val_split(self) -> str | None:
        return "val" if (Path(self.root).expanduser() / "val").is_dir() else None

    def make_dataset(self, split: str) -> ImageDataset:
        classes = None if split == "train" else self.dataset("train").classes
        return FolderDataset(self.root, split, classes=classes)


class SyntheticDataModule(FGVCDataModule):
    """The synthetic fine-grained dataset (``root/synthetic``), generated if missing.

    ``prepare_data`` writes it with :func:`fgvc.data.synthetic.make_synthetic` (a few
    seconds for the defaults); an existing folder is used as it is. The generator's
    ``synth_*`` arguments only matter when it has to be written.
    """

    default_preset = "cub"

    def __init__(
        self,
        root: str = "data",
        image_size: int = 128,
        num_workers: int = 2,
        synth_classes: int = 10,
        synth_train_per_class: int = 30,
        synth_test_per_class: int = 10,
        synth_image_size: int = 144,
        synth_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, image_size=image_size, num_workers=num_workers, **kwargs)
        self.synth_config = SynthConfig(
            num_classes=synth_classes,
            train_per_class=synth_train_per_class,
            test_per_class=synth_test_per_class,
            image_size=synth_image_size,
            seed=synth_seed,
        )
        self.synth_config.validate()

    @property
    def folder(self) -> Path:
        """The dataset folder: ``root/synthetic``, or ``root`` if it holds ``synth.json``."""
        return synth_folder(self.root)

    @property
    def classes(self) -> list[str]:
        if self._classes is None and not (self.folder / "images.txt").is_file():
            return synthetic_class_names(self.synth_config.num_classes)
        return super().classes

    def prepare_data(self) -> None:
        folder = self.folder
        folder.parent.mkdir(parents=True, exist_ok=True)
        # one writer: each node's first process prepares, and nodes may share the folder
        with file_lock(folder.parent / f".{folder.name}.lock"):
            if not (folder / "images.txt").is_file():
                make_synthetic(folder.parent, self.synth_config, folder=folder.name)
                return
        recorded = read_synth_config(folder)
        if recorded is not None and recorded != self.synth_config:
            rank_zero_warn(
                f"{folder} was generated with {recorded}, not {self.synth_config}; using "
                f"it as it is (delete the folder to regenerate)"
            )

    def check_splits(self, stage: str) -> None:
        self.prepare_data()  # nothing to check before the dataset is written
        super().check_splits(stage)

    def make_dataset(self, split: str) -> ImageDataset:
        return CUB200(self.folder, split)
