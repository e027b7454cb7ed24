"""Random access to a shard split: the evaluation (and hold-out) side of the shard DataModule.

:class:`ShardImageDataset` is an :class:`~fgvc.data.base.ImageDataset` - samples, ids,
classes, subsets, transforms - whose images come from the shards (litdata's
``StreamingDataset.__getitem__``) instead of files, so the folder DataModule's evaluation
path (the sampler that counts every image once across processes, the decoding sizes, the
pipelines) runs on it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fgvc.data.base import ImageDataset
from fgvc.data.shards.decode import decode_sample
from fgvc.data.shards.meta import ShardsInfo, join, read_samples


class ShardImageDataset(ImageDataset):
    """One split of a shard folder with random access.

    ``samples`` and ``ids`` are in the dataset's order (so splits, subsets and held-out draws
    are the folder DataModule's); a sample is ``(position, label)``, the image's position in
    the stored split (its stored id is checked on each read). There are no image files
    (:attr:`stores_files` is False): what needs a path, the Grad-CAM of validation images
    after ``fit``, leaves these out.

    Args:
        root: the shard folder or URL (``fgvc data shard --out``).
        split: a written split.
        info: the folder's metadata.
        transform, decode_min_size: see :class:`~fgvc.data.base.ImageDataset`.
        reader_options: ``litdata.StreamingDataset`` arguments (``cache_dir``...).

    Raises:
        FileNotFoundError: the split was not written (the message lists those that were).
    """

    #: samples are stored positions, not image files
    stores_files = False

    def __init__(
        self,
        root: str,
        split: str,
        info: ShardsInfo,
        transform: Callable | None = None,
        decode_min_size: tuple[int, int] | None = None,
        reader_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(transform, decode_min_size)
        if split not in info.splits:
            raise FileNotFoundError(
                f"{root} holds no {split} split (written: {', '.join(info.splits)})"
            )
        self.root, self.split = root, split
        self.classes = list(info.classes)
        self.crop_bottom = info.crop_bottom
        self.reader_options = dict(reader_options or {})
        labels, ids, positions = read_samples(
            root, split, self.reader_options.get("storage_options")
        )
        if len(labels) != info.splits[split]:
            raise ValueError(
                f"{root}: the {split} split lists {len(labels)} samples, its metadata says "
                f"{info.splits[split]}; rewrite the shards"
            )
        self.samples = list(zip(positions, labels))
        self.ids = ids
        self._reader: Any = None

    @property
    def location(self) -> str:
        """The split's shard folder or URL."""
        return join(self.root, self.split)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader"] = None  # each process opens its own (litdata's cache is per process)
        return state

    def read(self, position: int) -> dict[str, Any]:
        """The stored sample at ``position`` (``image`` bytes, ``label``, ``id``, ``index``)."""
        if self._reader is None:
            from litdata import StreamingDataset

            self._reader = StreamingDataset(self.location, **self.reader_options)
        return self._reader[int(position)]

    def load(self, index: int) -> np.ndarray:
        item = self.read(self.samples[index][0])
        if str(item["id"]) != self.ids[index]:
            raise ValueError(
                f"{self.location}: image {self.ids[index]} is stored as {item['id']} - the "
                f"shards and their samples file disagree; rewrite them with fgvc data shard"
            )
        return decode_sample(item, self.decode_min_size, self.crop_bottom)

    @property
    def positions(self) -> list[int]:
        """The stored positions of this view's samples."""
        return [position for position, _ in self.samples]
