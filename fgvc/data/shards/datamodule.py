"""``ShardDataModule``: a dataset read from litdata shards (``fgvc data shard``), locally or
from object storage, with the folder DataModules' preprocessing, protocols and evaluation.

It is a :class:`~fgvc.data.datamodule.FGVCDataModule`: the same transforms and presets, the
same evaluation preprocessing recorded in checkpoints, the same validation protocols
(``val_split``: a held-out fraction, the official val split, or 0 for the test split) and
the same exact evaluation on several processes (every validation and test image once, by
:class:`~fgvc.data.sampler.ShardSampler` over random access to the shards). Training
streams instead of sampling: :class:`~fgvc.data.shards.stream.ShardTrainLoader` over
litdata's ``StreamingDataset`` (see :mod:`fgvc.data.shards.stream` for the epoch rules:
every image once an epoch, equal batch counts on every process, order and augmentation
from ``(seed, epoch)``, exact resume inside an epoch).
"""

from __future__ import annotations

import cv2

from fgvc.data.base import ImageDataset
from fgvc.data.datamodule import FGVCDataModule
from fgvc.data.loaders import init_worker
from fgvc.data.shards.meta import ShardsInfo, is_url, join, read_info
from fgvc.data.shards.read import ShardImageDataset
from fgvc.data.shards.stream import ShardStream, ShardTrainLoader


class ShardDataModule(FGVCDataModule):
    """A dataset written by ``fgvc data shard NAME --out ROOT``.

    ``root`` is the shard folder or an object-store URL (``s3://bucket/imagenet``,
    ``gs://...``, ``azure://...``; litdata reads it with its usual credentials - the cloud
    SDK's environment variables or files, never a config value). Classes, splits and the
    dataset's preset come from the folder's ``fgvc_shards.json``; ``preset: null`` uses the
    dataset's own, as its folder DataModule does.

    ``sampler`` must be ``uniform``: a stream visits every image once an epoch.

    Args:
        root: the shard folder or URL.
        cache_dir: where litdata keeps the chunks it downloads from a URL (default: its own).
        max_cache_size: that cache's budget (``"200GB"``; default: litdata's).
        **kwargs: see :class:`~fgvc.data.datamodule.FGVCDataModule`.
    """

    def __init__(
        self,
        root: str = "shards",
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
        **kwargs: object,
    ) -> None:
        if kwargs.get("sampler", "uniform") != "uniform":
            raise ValueError(
                f"data.init_args.sampler {kwargs['sampler']!r}: ShardDataModule streams every "
                f"image once an epoch (uniform); class-balanced sampling needs the dataset's "
                f"folder DataModule"
            )
        self._shards_root = root if is_url(root) else str(root)
        self._info: ShardsInfo | None = None
        super().__init__(root=root, **kwargs)  # type: ignore[arg-type]
        self.cache_dir = cache_dir
        self.max_cache_size = max_cache_size

    @property
    def info(self) -> ShardsInfo:
        """The shard folder's metadata (read once)."""
        if self._info is None:
            self._info = read_info(self._shards_root)
        return self._info

    @property
    def default_preset(self) -> str:  # type: ignore[override]
        return self.info.preset

    @property
    def test_split_name(self) -> str:  # type: ignore[override]
        return self.info.test_split

    def official_val_split(self) -> str | None:
        return self.info.val_split

    def _fit_train_split(self) -> str:
        info = self.info
        if self._uses_official_val() or not info.trainval_split:
            return info.train_split
        return info.trainval_split

    @property
    def classes(self) -> list[str]:
        classes = list(self.info.classes)
        if len(classes) < 2:
            raise ValueError(f"a classifier needs at least 2 classes; {self.root} has {classes}")
        return classes

    def _reader_options(self) -> dict[str, object]:
        options: dict[str, object] = {}
        if self.cache_dir is not None:
            options["cache_dir"] = self.cache_dir
        if self.max_cache_size is not None:
            options["max_cache_size"] = self.max_cache_size
        return options

    def make_dataset(self, split: str) -> ImageDataset:
        return ShardImageDataset(
            self._shards_root, split, self.info, reader_options=self._reader_options()
        )

    def _batches_trained(self) -> int:
        """Batches of the current epoch the fit loop has trained on (its restart point)."""
        trainer = self.trainer
        if trainer is None:
            return 0
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def train_dataloader(self) -> ShardTrainLoader:  # type: ignore[override]
        view = self.train_set
        if not isinstance(view, ShardImageDataset):
            raise RuntimeError(
                f"{type(self).__name__}: call setup('fit') before asking for loaders"
            )
        if len(view) == 0:
            raise ValueError(f"{type(self).__name__}: the training split is empty")
        rank, world, local = self._processes()
        trainer = self.trainer
        stream = ShardStream(
            join(self._shards_root, view.split),
            pipeline=view.transform,
            seed=self.seed,
            decode_min_size=view.decode_min_size,
            crop_bottom=view.crop_bottom,
            rank=rank,
            world_size=world,
            num_nodes=max(1, trainer.num_nodes) if trainer is not None else 1,
            **self._reader_options(),  # type: ignore[arg-type]
        )
        positions = sorted(view.positions)
        if len(positions) != self.info.splits[view.split]:  # a fraction is held out
            stream = stream.subset(positions)
        workers = self._workers(local)
        if workers:
            cv2.setNumThreads(1)  # see FGVCDataModule._loader
        return ShardTrainLoader(
            stream,
            epoch_fn=self._current_epoch,
            consumed_fn=self._batches_trained if trainer is not None else None,
            batch_size=self.batch_size,
            num_workers=workers,
            pin_memory=self.pin_memory,
            # workers read the loader's state when they start: they must start each epoch
            persistent_workers=False,
            worker_init_fn=init_worker,
        )
