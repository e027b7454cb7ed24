"""The training stream over shards: litdata's ``StreamingDataset`` / ``StreamingDataLoader``
with fgvc's epoch rules.

* **Every image once an epoch, the same number of batches on every process.** litdata's own
  assignment either drops up to ``world_size * batch_size - 1`` images an epoch
  (``drop_last``, its default on several processes) or gives them all to the last process,
  whose extra batches leave the others waiting in a collective. :class:`EpochPlan` does
  neither: each process gets ``T = ceil(N / (world_size * batch_size))`` batches, all full
  but the last, whose sizes differ by at most one image between processes. Only where fewer
  than ``world_size`` images are left for the last batches (``N mod (world_size * batch_size)``
  between 1 and ``world_size - 1``) do some processes repeat one image each (fewer than
  ``world_size`` repeats an epoch, as ``DistributedSampler`` pads).
* **Order from (seed, epoch)**: the chunks are permuted by ``(seed, epoch)`` and the images
  of each chunk by ``(seed, epoch, chunk)``; the loader's epoch is the trainer's
  (``epoch_fn``), also after a resume at an epoch boundary.
* **Augmentation from (seed, epoch, image)**: each sample's pipeline is reseeded from the
  run seed, the epoch and the image's position in its split (stored in the shard), never
  from a process-global stream - an image's crops do not depend on the number of workers
  (the batch order does: litdata assigns chunk pieces to workers).
* **Batches mix the dataset**: images are stored in a random order (``fgvc data shard``),
  chunks are visited in a new order each epoch and the images of each worker's piece of a
  chunk are permuted; a batch holds images of one chunk (as with any chunked stream).
* **Exact resume inside an epoch**: :meth:`ShardTrainLoader.state_dict` records the batches
  the fit loop has *trained*, and :meth:`~ShardTrainLoader.load_state_dict` replays
  litdata's restore from there; :class:`ShardTrainLoader` says what plain
  ``StreamingDataLoader`` + ``pl.Trainer`` get wrong (litdata #775).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from litdata import StreamingDataLoader, StreamingDataset
from litdata.streaming.sampler import ChunkedIndex
from litdata.streaming.shuffle import Shuffle
from litdata.utilities.env import _DistributedEnv

from fgvc.data.base import apply_transform
from fgvc.data.shards.decode import decode_sample
from fgvc.errors import ConfigError


@dataclass(frozen=True)
class EpochPlan:
    """What every worker of every process reads in one epoch (litdata's intervals).

    Attributes:
        chunks: per global worker (``rank * num_workers + worker``), its chunk indexes.
        intervals: per global worker, ``[chunk_start, first, end, chunk_end]`` of each chunk.
        pads: per global worker, the item indexes it repeats after its own (see the module).
    """

    chunks: list[list[int]]
    intervals: list[list[list[int]]]
    pads: list[list[int]]

    @classmethod
    def build(
        cls,
        intervals: list[Any],
        order: np.ndarray,
        world_size: int,
        num_workers: int,
        batch_size: int,
    ) -> EpochPlan:
        """The plan over ``intervals`` (litdata's chunk intervals) visited in chunk ``order``."""
        sizes = [int(intervals[i][2] - intervals[i][1]) for i in order]
        total = sum(sizes)
        per_rank = max(1, math.ceil(total / (world_size * batch_size)))
        full = (per_rank - 1) * batch_size  # images in each process's full batches
        slots = max(total, world_size * (full + 1))  # the last batch holds >= 1 image
        last = slots - world_size * full
        padded = slots - total  # < world_size; then every last batch has one image
        budgets, pad_counts = [], []
        last_worker = (per_rank - 1) % num_workers
        for rank in range(world_size):
            last_size = last // world_size + (rank < last % world_size)
            pad = 1 if rank >= world_size - padded else 0
            for worker in range(num_workers):
                batches = len(range(worker, per_rank - 1, num_workers))
                own = batches * batch_size + (last_size if worker == last_worker else 0)
                own_pad = pad if worker == last_worker else 0
                budgets.append(own - own_pad)
                pad_counts.append(own_pad)
        chunks: list[list[int]] = [[] for _ in budgets]
        spans: list[list[list[int]]] = [[] for _ in budgets]
        worker = 0
        for chunk in order:
            start, first, end, stop = (int(v) for v in intervals[chunk])
            while first < end:
                while budgets[worker] == 0:
                    worker += 1
                take = min(budgets[worker], end - first)
                chunks[worker].append(int(chunk))
                spans[worker].append([start, first, first + take, stop])
                budgets[worker] -= take
                first += take
        # the repeated images: the first of the epoch's order, one per padded process
        head = [i for c in order for i in range(int(intervals[c][1]), int(intervals[c][2]))]
        head = (head * padded)[:padded]  # cycled: fewer images than processes too
        pads, used = [], 0
        for count in pad_counts:
            pads.append(head[used : used + count])
            used += count
        return cls(chunks, spans, pads)


class ShardShuffle(Shuffle):
    """litdata ``Shuffle`` following :class:`EpochPlan`: chunks permuted by ``(seed,
    epoch)``, the images of a chunk by ``(seed, epoch, chunk)``; ``shuffle=False`` keeps the
    stored order (evaluation-style streaming)."""

    def __init__(self, cache: Any, seed: int, shuffle: bool = True) -> None:
        super().__init__(cache, seed, drop_last=False)
        self.shuffle = shuffle
        self._plans: dict[tuple[int, int, int, int], EpochPlan] = {}

    def plan(
        self, env: _DistributedEnv, num_workers: int, batch_size: int, epoch: int
    ) -> EpochPlan:
        key = (env.world_size, num_workers, batch_size, epoch)
        if key not in self._plans:
            intervals = self.cache.get_chunk_intervals()
            order = np.arange(len(intervals))
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(len(intervals))
            self._plans = {  # a few epochs' plans at most
                key: EpochPlan.build(intervals, order, env.world_size, num_workers, batch_size)
            }
        return self._plans[key]

    def get_chunks_and_intervals_per_workers(
        self,
        distributed_env: _DistributedEnv,
        num_workers: int,
        batch_size: int,
        current_epoch: int,
    ) -> Any:
        plan = self.plan(distributed_env, num_workers, batch_size, current_epoch)
        return plan.chunks, plan.intervals

    def get_len(  # type: ignore[override]
        self,
        distributed_env: _DistributedEnv,
        num_workers: int,
        batch_size: int,
        current_epoch: int,
    ) -> int:
        plan = self.plan(distributed_env, num_workers, batch_size, current_epoch)
        first = distributed_env.global_rank * num_workers
        mine = range(first, first + num_workers)
        return sum(e - s for w in mine for _, s, e, _ in plan.intervals[w]) + sum(
            len(plan.pads[w]) for w in mine
        )

    def __call__(
        self, array: np.ndarray, num_chunks: int, current_epoch: int, chunk_index: int
    ) -> list[int]:
        if not self.shuffle:
            return array.tolist()
        rng = np.random.default_rng([self.seed, num_chunks, current_epoch, chunk_index])
        return rng.permutation(array).tolist()


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of image ``index`` (its position in its split) in ``epoch``."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class ShardStream(StreamingDataset):
    """A split's shards as a training stream of ``(image, label)`` (see the module).

    Args:
        input_dir: the split's shard folder or URL (``<root>/<split>``).
        pipeline: the training transform (albumentations, reseeded for every sample).
        seed: run seed (order and augmentation).
        decode_min_size: decode JPEGs at reduced scale down to this size.
        crop_bottom: rows the dataset removes at the bottom of each image (FGVC-Aircraft's
            banner), recorded in the shards' metadata.
        rank, world_size, num_nodes: this process among the training processes.
        shuffle: permute chunks and images (training); ``False``: the stored order.
        **kwargs: :class:`litdata.StreamingDataset`'s (``cache_dir``, ``max_cache_size``,
            ``storage_options``...).
    """

    def __init__(
        self,
        input_dir: str,
        pipeline: Callable | None = None,
        seed: int = 0,
        decode_min_size: tuple[int, int] | None = None,
        crop_bottom: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_nodes: int = 1,
        shuffle: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(input_dir, shuffle=shuffle, drop_last=False, seed=seed, **kwargs)
        # the trainer's processes, not whatever torch.distributed says when this is built
        self.distributed_env = _DistributedEnv(world_size, rank, num_nodes)
        self.pipeline = pipeline
        self.decode_min_size = decode_min_size
        self.crop_bottom = crop_bottom
        self._pads: deque[int] = deque()

    def _create_shuffler(self, cache: Any) -> Shuffle:
        return ShardShuffle(cache, self.seed, self.shuffle)

    def __iter__(self) -> ShardStream:
        super().__iter__()
        worker = (
            self.distributed_env.global_rank * self.worker_env.world_size + self.worker_env.rank
        )
        plan = self.shuffler.plan(  # type: ignore[union-attr]
            self.distributed_env, self.worker_env.world_size, self.batch_size, self.current_epoch
        )
        self._pads = deque(plan.pads[worker])
        return self

    def __next__(self) -> Any:
        if self._pads and self.global_index >= self.stop_length:
            return self[self._pads.popleft()]
        return super().__next__()

    def __getitem__(self, index: ChunkedIndex | int | Any) -> Any:
        item = super().__getitem__(index)
        if self.pipeline is None:
            return item
        image = decode_sample(item, self.decode_min_size, self.crop_bottom)
        if hasattr(self.pipeline, "set_epoch"):  # a training side that follows the epoch
            self.pipeline.set_epoch(self.current_epoch - 1)  # the trainer's: litdata's from 1
        if hasattr(self.pipeline, "set_random_seed"):
            self.pipeline.set_random_seed(sample_seed(self.seed, self.current_epoch, item["index"]))
        return apply_transform(self.pipeline, image), int(item["label"])


class ShardTrainLoader(StreamingDataLoader):
    """litdata's ``StreamingDataLoader`` over a :class:`ShardStream` whose epoch and saved
    position follow the trainer.

    What plain ``StreamingDataLoader`` + ``pl.Trainer`` get wrong (litdata #775), and what
    this class does instead:

    * its ``state_dict`` counts the batches it has *handed out*, which are the batches
      trained only while nothing fetches ahead (the fit loop prefetches a batch from a loader
      without a length, and a checkpoint written between a fetch and its step - a stop
      signal - would skip that batch). Here the position is ``consumed_fn()``: the
      DataModule passes the fit loop's own restart point, the batches it has trained;
    * its epoch counter starts at 0 in every new loader, so a run resumed from an
      end-of-epoch checkpoint (whose loader state the fit loop does not load) replays epoch
      0's order and augmentations. Here each epoch is ``epoch_fn()`` (the trainer's);
    * it clears its "resuming" flag only when an epoch's iterator is exhausted, which the
      fit loop never does (it stops at ``len(loader)`` batches), so the epoch after a resumed
      one skips the same images again. Here the flag holds for the first iteration after
      :meth:`load_state_dict` only.

    Args:
        dataset: the stream.
        epoch_fn: the epoch about to be iterated (0-based).
        consumed_fn: batches of the current epoch already trained; ``None``: those this
            loader handed out (right when nothing fetches ahead).
        **kwargs: ``StreamingDataLoader``'s (``batch_size``, ``num_workers``...).
    """

    def __init__(
        self,
        dataset: ShardStream,
        epoch_fn: Callable[[], int],
        consumed_fn: Callable[[], int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, **kwargs)
        self.epoch_fn = epoch_fn
        self.consumed_fn = consumed_fn
        self._handed_out = 0
        self._loaded = False

    def __iter__(self) -> Any:
        if self.restore and not self._loaded:
            # left over from the resumed epoch: Lightning stops at len(loader) without
            # exhausting the iterator, so litdata never cleared it
            self.restore = False
        self._loaded = False
        if not self.restore:
            self.current_epoch = int(self.epoch_fn())  # litdata counts from 1: it adds one
            self._handed_out = 0
        for batch in super().__iter__():
            self._handed_out += 1
            yield batch

    def consumed(self) -> int:
        """Batches of the current epoch that the training has used."""
        return int(self.consumed_fn()) if self.consumed_fn is not None else self._handed_out

    def layout(self) -> dict[str, int]:
        """What a position inside an epoch is only valid for: processes, batch size, workers
        (litdata assigns chunk pieces to workers) and the stream's images (all processes';
        the same on every process, whose checkpoint state is rank 0's)."""
        return {
            "world_size": self.dataset.distributed_env.world_size,
            "batch_size": int(self.batch_size or 1),
            "num_workers": self.num_workers,
            "samples": sum(end - start for start, end in self.dataset.region_of_interest),
        }

    def state_dict(self) -> dict[str, Any]:
        """litdata's state at :meth:`consumed` batches (what ``load_state_dict`` replays),
        plus ``batches`` / ``epoch_batches`` and the :meth:`layout` (fgvc's resume checks)."""
        batches = self.consumed()
        samples = batches * self.batch_size
        return {
            "dataset": self.dataset.state_dict(samples, self.num_workers, self.batch_size),
            "current_epoch": self.current_epoch,
            "num_samples_yielded": samples,
            "latest_worker_idx": (batches - 1) % max(1, self.num_workers),
            "batches": batches,
            "epoch_batches": len(self),
            **self.layout(),
        }

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        """Continue after the batches ``obj`` says were trained; a state saved at an epoch's
        end continues with the next epoch on any layout.

        Raises:
            ConfigError: saved inside an epoch on another layout (litdata would restripe the
                rest of the epoch: not the interrupted run).
        """
        # saved at an epoch's end, or before its first batch (the batch-size finder's restore
        # point): the trainer's epoch starts afresh, on any layout
        if obj.get("batches") in (0, obj.get("epoch_batches")):
            self.restore = self._loaded = False
            self.dataset.reset_state_dict()
            return
        saved = {key: obj.get(key) for key in self.layout()}
        if saved != self.layout():
            raise ConfigError(
                f"the checkpoint was saved inside an epoch with {_describe(saved)}, this run "
                f"has {_describe(self.layout())}: a position inside an epoch of a shard "
                f"stream continues only on the same processes, batch size and workers - "
                f"resume with those, or from a checkpoint saved at an epoch's end"
            )
        super().load_state_dict(obj)
        self._loaded = True
        self._handed_out = obj["num_samples_yielded"] // max(1, self.batch_size)


def _describe(layout: dict[str, Any]) -> str:
    return (
        f"{layout['world_size']} process(es) x {layout['batch_size']} images, "
        f"{layout['num_workers']} workers, {layout['samples']} images"
    )
