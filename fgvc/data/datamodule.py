"""``FGVCDataModule``: what the DataModules (:mod:`fgvc.data.datamodules`) share.

Their typed constructor arguments are their config
(LightningCLI style, saved with ``save_hyperparameters``), and ``num_classes`` / ``classes``
are available right after construction (annotation files are parsed, no image decoded) so
a CLI can link them into the model.

Validation protocol (``val_split``):

* ``> 0``: a stratified, seeded fraction of the training split is held out for validation.
  The chosen ids are written as JSON to ``<split_dir>/val_split.json``, or, without
  ``split_dir``, to ``trainer.log_dir`` when a trainer is attached; ``val_ids_file``
  reads such a file back to reproduce a split exactly. The test split is only read by
  ``test`` / ``predict``.
* ``0``: the authors' protocol - validation runs on the test split (a warning says so).
* ``None``: the dataset's official validation split (FGVC-Aircraft's ``val``, a folder
  dataset's ``val/``); where there is none, 10% as above.

Batches are ``(images, labels)``. By default images leave the workers as ``uint8`` (four
times less to collate, pin and copy) and are normalized on the device in
``on_after_batch_transfer``; a LightningModule that overrides that hook replaces this one
and should call :func:`fgvc.data.transforms.normalize_images` itself (it is a no-op on
float input). ``normalize_on_device=False`` normalizes in the workers instead.

The evaluation pipeline is built from the DataModule's
:class:`~fgvc.data.preprocessing.EvalPreprocessing`, which every checkpoint records (the
DataModule's ``state_dict``) so that an export replays it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import cv2
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, DistributedSampler

from fgvc.data.balance import class_counts
from fgvc.data.base import ImageDataset
from fgvc.data.loaders import capped_workers, init_worker
from fgvc.data.preprocessing import EvalPreprocessing
from fgvc.data.resolution import EpochSizedTransform, ProgressiveResize
from fgvc.data.resume import ResumableLoader
from fgvc.data.sampler import TRAIN_SAMPLERS, ShardSampler, train_sampler
from fgvc.data.splits import indices_from_file, stratified_split, write_split_file
from fgvc.data.transforms import build_transforms, decode_min_size, normalize_images
from fgvc.errors import UsageError

SPLIT_FILE = "val_split.json"
DEFAULT_VAL_FRACTION = 0.1


class FGVCDataModule(pl.LightningDataModule):
    """Shared base: splits, transforms, loaders and device-side normalization.

    Subclasses implement :meth:`make_dataset` and say which splits exist.

    Args:
        root: folder holding the dataset folder (as torchvision uses it).
        batch_size: samples per batch (per device).
        num_workers: DataLoader worker processes.
        image_size: side of the square network input (only evaluation's with
            ``progressive_resize``).
        preset: transform preset (see :func:`fgvc.data.transforms.build_transforms`).
        val_split: validation protocol (see the module docstring).
        seed: seed of the validation draw and of the augmentation streams.
        pin_memory: pin host memory; ``None``: when CUDA is available.
        persistent_workers: keep workers alive between epochs (when ``num_workers > 0``).
        split_dir: where ``val_split.json`` goes; ``None``: the trainer's ``log_dir``.
        val_ids_file: a ``val_split.json`` to reuse instead of drawing a new split.
        normalize_on_device: ship ``uint8`` batches and normalize after the transfer.
        antialias: antialiased (Pillow-exact) resizing instead of OpenCV bilinear.
        fast_decode: decode JPEGs at 1/2, 1/4, 1/8 scale where the resize target allows.
        sampler: training order: ``"uniform"`` (every image once an epoch, shuffled) or
            ``"balanced"`` (as many draws, every class equally often:
            :class:`~fgvc.data.sampler.ClassBalancedSampler`); both follow ``(seed, epoch)``.
        progressive_resize: ``{start_size, end_size, start_epoch, end_epoch, multiple: 32}``:
            a training side growing with the epoch (:mod:`fgvc.data.resolution`, as FFCV's
            ImageNet recipes); evaluation stays at ``image_size``.
    """

    #: transform preset when ``preset`` is None (the dataset's own, from the authors' code)
    default_preset = "generic"
    train_split_name = "train"
    test_split_name = "test"

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 16,
        num_workers: int = 4,
        image_size: int = 448,
        preset: str | None = None,
        val_split: float | None = None,
        seed: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        split_dir: str | None = None,
        val_ids_file: str | None = None,
        normalize_on_device: bool = True,
        antialias: bool = False,
        fast_decode: bool = True,
        sampler: str = "uniform",
        progressive_resize: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        if type(self).make_dataset is FGVCDataModule.make_dataset:
            from fgvc.data.datasets import registry

            names = ", ".join(spec.datamodule for spec in registry().values())
            raise ValueError(
                f"data: needs a class_path naming the dataset - fgvc.data.<one of {names}> "
                f"(see configs/)"
            )
        preset = preset or self.default_preset
        # validates image_size and preset; the evaluation pipeline is built from it
        self.eval_preprocessing = EvalPreprocessing(
            image_size=image_size, preset=preset, antialias=antialias, fast_decode=fast_decode
        )
        if val_split is not None and not 0.0 <= val_split < 1.0:
            raise ValueError(f"val_split must be in [0, 1) or None, got {val_split}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if sampler not in TRAIN_SAMPLERS:
            raise ValueError(
                f"data.init_args.sampler {sampler!r}: choose {' or '.join(TRAIN_SAMPLERS)}"
            )
        schedule = progressive_resize
        self.resize_schedule = None if schedule is None else ProgressiveResize.from_config(schedule)
        self.save_hyperparameters()
        self.root = root
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.preset = preset
        self.val_split = val_split
        self.seed = seed
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers
        self.split_dir = split_dir
        self.val_ids_file = val_ids_file
        self.normalize_on_device = normalize_on_device
        self.antialias = antialias
        self.fast_decode = fast_decode
        self.sampler = sampler
        self._datasets: dict[str, ImageDataset] = {}
        self._classes: list[str] | None = None
        self.train_set: ImageDataset | None = None
        self.val_set: ImageDataset | None = None
        self.test_set: ImageDataset | None = None
        self.val_ids: list[str] | None = None
        self.split_file: Path | None = None
        self._warned_workers = False

    # -- what subclasses provide ------------------------------------------------------------
    def make_dataset(self, split: str) -> ImageDataset:
        """The dataset of ``split`` without transform (annotation files only)."""
        raise NotImplementedError

    def official_val_split(self) -> str | None:
        """Name of the dataset's own validation split, if it has one."""
        return None

    # -- classes ----------------------------------------------------------------------------
    def dataset(self, split: str) -> ImageDataset:
        """The (cached) untransformed dataset of ``split``."""
        if split not in self._datasets:
            self.fetch()
            self._datasets[split] = self.make_dataset(split)
        return self._datasets[split]

    def fetch(self) -> None:
        """Make the dataset's files available (the benchmark DataModules download them when
        asked to); called before any split is read."""

    @property
    def classes(self) -> list[str]:
        """Class names in label order (parsed from the annotation files, no decoding)."""
        if self._classes is None:
            split = self._fit_train_split()
            classes = list(self.dataset(split).classes)
            if len(classes) < 2:  # one class: every prediction is right, nothing is learned
                raise ValueError(
                    f"a classifier needs at least 2 classes; the {split} split of {self.root} "
                    f"has {len(classes)}{' (' + repr(classes[0]) + ')' if classes else ''}"
                )
            self._classes = classes
        return self._classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def train_class_counts(self) -> list[int]:
        """Training images per class in label order, after the validation hold-out (what
        ``model.loss: weighted | logit_adjusted`` is built from; call after ``setup``)."""
        if self.train_set is None:
            raise RuntimeError(f"{type(self).__name__}: call setup('fit') before asking")
        return class_counts(self.train_set.targets, self.num_classes)

    # -- splits -----------------------------------------------------------------------------
    def _uses_official_val(self) -> bool:
        return (
            self.val_split is None
            and self.val_ids_file is None
            and self.official_val_split() is not None
        )

    def _fit_train_split(self) -> str:
        return self.train_split_name

    def _transform(self, train: bool) -> tuple[Any, tuple[int, int] | None]:
        """(pipeline, decode size) of the training or the evaluation samples."""
        normalize = not self.normalize_on_device
        if not train:
            prep = self.eval_preprocessing
            return prep.transform(normalize=normalize), prep.decode_min_size
        kwargs = {"normalize": normalize, "antialias": self.antialias, "seed": self.seed}
        build = functools.partial(build_transforms, self.preset, True, **kwargs)
        if (schedule := self.resize_schedule) is None:
            transform, largest = build(self.image_size), self.image_size
        else:  # checked against the run's epochs: the ramp must end within it
            max_epochs = getattr(self.trainer, "max_epochs", None)
            transform = EpochSizedTransform.for_run(schedule, build, max_epochs, self.image_size)
            largest = schedule.largest
        min_size = decode_min_size(self.preset, True, largest)
        return transform, (min_size if self.fast_decode else None)

    def state_dict(self) -> dict[str, Any]:
        """Saved into every checkpoint: what export and predict replay."""
        return {"eval_preprocessing": self.eval_preprocessing.to_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: the preprocessing comes from the config."""

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            self._setup_fit()
        if stage in (None, "test", "predict") and self.test_set is None:
            test = self.dataset(self.test_split_name)
            self.test_set = test.subset(range(len(test)), *self._transform(False))

    def _setup_fit(self) -> None:
        train_tf, train_size = self._transform(True)
        eval_tf, eval_size = self._transform(False)
        source = self.dataset(self._fit_train_split())
        val_split = self._whole_val_split()
        if val_split is not None:
            val = self.dataset(val_split)
            self.train_set = source.subset(range(len(source)), train_tf, train_size)
            self.val_set = val.subset(range(len(val)), eval_tf, eval_size)
            return
        if self.val_ids_file is not None:
            train_idx, val_idx = self._indices_from_file(source, self.val_ids_file)
        else:
            fraction = DEFAULT_VAL_FRACTION if self.val_split is None else self.val_split
            train_idx, val_idx = stratified_split(source.targets, fraction, self.seed)
        self.train_set = source.subset(train_idx, train_tf, train_size)
        self.val_set = source.subset(val_idx, eval_tf, eval_size)
        self.val_ids = [source.ids[i] for i in val_idx]
        self._write_split_file()

    def setup_train_only(self) -> ImageDataset:
        """Set up the training samples ``fit`` trains on (:attr:`train_set`) from the training
        split alone: the validation images - held out, an official split or, with
        ``val_split=0``, the test split - are neither read nor set up (``fgvc tune``)."""
        train_tf, train_size = self._transform(True)
        source = self.dataset(self._fit_train_split())
        indices: Any = range(len(source))  # validated on another split: train on all of it
        if self.val_ids_file is not None:
            indices, _ = self._indices_from_file(source, self.val_ids_file)
        elif not self._uses_official_val() and self.val_split != 0:
            fraction = DEFAULT_VAL_FRACTION if self.val_split is None else self.val_split
            indices, _ = stratified_split(source.targets, fraction, self.seed)
        self.train_set = source.subset(indices, train_tf, train_size)
        return self.train_set

    def _whole_val_split(self, warn: bool = True) -> str | None:
        """The split validated on whole (official val, or test for ``val_split=0``), or
        None when validation is carved out of the training split."""
        if self._uses_official_val():
            return self.official_val_split()
        if self.val_ids_file is None and self.val_split == 0:
            if os.environ.get("WANDB_SWEEP_ID"):  # a trial of a W&B sweep: it tunes on val
                raise UsageError(
                    f"val_split=0 validates on the {self.test_split_name} split, and this run "
                    f"is a W&B sweep trial (WANDB_SWEEP_ID): tuning on test scores is refused; "
                    f"sweep with --data.init_args.val_split=0.1 (a held-out stratified 10% of "
                    f"the training split, as configs/sweep.yaml does)"
                )
            if warn:
                rank_zero_warn(
                    f"val_split=0: validating on the {self.test_split_name} split (the "
                    f"authors' protocol); validation scores are test scores, do not tune on them"
                )
            return self.test_split_name
        return None

    def check_splits(self, stage: str) -> None:
        """Parse the annotation files of the splits ``stage`` reads (no image decoded), so
        that a missing or inconsistent split stops the command before anything runs.

        Raises:
            FileNotFoundError, ValueError, OSError: as the dataset classes report them.
        """
        splits = [self._fit_train_split()] if stage in ("fit", "validate") else []
        if stage in ("fit", "validate"):
            splits.append(self._whole_val_split(warn=False) or self._fit_train_split())
        if stage in ("test", "predict"):
            splits.append(self.test_split_name)
        for split in dict.fromkeys(splits):
            self.dataset(split)

    def _indices_from_file(self, source: ImageDataset, path: str) -> tuple[list[int], list[int]]:
        where = f"the {self._fit_train_split()} split of {self.root}"
        return indices_from_file(source.ids, path, where)

    def _write_split_file(self) -> None:
        directory: str | os.PathLike | None = self.split_dir
        trainer = self.trainer
        if directory is None and trainer is not None:
            directory = trainer.log_dir  # collective call: every rank asks
        if directory is None:
            return
        self.split_file = Path(directory) / SPLIT_FILE
        if trainer is None or trainer.is_global_zero:
            write_split_file(
                self.split_file,
                self.val_ids or [],
                dataset=type(self).__name__,
                root=str(self.root),
                train_split=self._fit_train_split(),
                val_split=self.val_split,
                seed=self.seed,
            )

    # -- loaders ----------------------------------------------------------------------------
    def _current_epoch(self) -> int:
        trainer = self.trainer
        return trainer.current_epoch if trainer is not None else 0

    def _processes(self) -> tuple[int, int, int]:
        """(rank, world size, processes on this machine) of the attached trainer."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1, 1
        local = max(1, trainer.world_size // max(1, trainer.num_nodes))
        return trainer.global_rank, trainer.world_size, local

    def _workers(self, local_processes: int) -> int:
        """``num_workers`` per process, capped at one worker per CPU core on this machine."""
        workers, capped = capped_workers(self.num_workers, local_processes)
        if capped and not self._warned_workers:
            self._warned_workers = True
            rank_zero_info(capped)
        return workers

    def _loader(self, dataset: ImageDataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for loaders")
        rank, world, local = self._processes()
        sampler: DistributedSampler | None = None
        if train:
            # order and augmentation from (seed, epoch): the same batches whatever the workers,
            # and a resumed run continues exactly where it stopped
            epoch = self._current_epoch
            sampler = train_sampler(self.sampler, dataset.targets, self.seed, epoch, rank, world)
            if len(dataset) == 0:
                raise ValueError(f"{type(self).__name__}: the training split is empty")
        elif world > 1:
            try:  # each image once, on one process: no padding that would count some twice
                sampler = ShardSampler(len(dataset), rank, world)
            except ValueError as err:
                raise ValueError(f"{type(self).__name__}: {err}") from err
        workers = self._workers(local)
        if workers:
            # OpenCV's thread pool, once this process has used it, deadlocks the forked
            # workers' own OpenCV calls; setting the thread count here takes the pool down
            cv2.setNumThreads(1)
        # training: a loader that can continue inside an epoch (fgvc.data.resume)
        return (ResumableLoader if train else DataLoader)(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.pin_memory,
            # drop the ragged last batch only where each process keeps at least one batch
            drop_last=train and len(sampler) > self.batch_size,
            persistent_workers=self.persistent_workers and workers > 0,
            worker_init_fn=init_worker,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Normalize ``uint8`` images on the device (no-op for float images)."""
        if self.normalize_on_device and isinstance(batch, (list, tuple)) and batch:
            images = normalize_images(batch[0])
            return type(batch)([images, *batch[1:]])
        return batch
