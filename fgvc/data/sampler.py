"""Samplers: training order fixed by (seed, epoch), evaluation shards that count every image once.

The training loader draws its order and every sample's augmentation seed from
``(seed, epoch)``, never from a process-global random state. A run therefore sees the same
images in the same order with the same crops and flips whatever the number of workers,
whether workers persist, and whether it was interrupted and resumed from a checkpoint.

Both samplers know the process's rank and the number of processes, so they are
``DistributedSampler`` s in Lightning's eyes and it leaves them alone (it would otherwise wrap
them in a sampler that pads every shard to the same length - for evaluation that counts some
images twice).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler


class EpochSeededSampler(DistributedSampler):
    """Yields ``(index, sample_seed)`` in a random order fixed by ``(seed, epoch)``.

    With several processes, the epoch's order is padded by repeating its first indices to a
    multiple of ``world_size`` and process ``rank`` takes every ``world_size``-th position
    from ``rank`` on (as ``DistributedSampler`` does): the shards together are the whole
    order, each ``ceil(length / world_size)`` long. A sample's seed depends on its index, not
    on where it lands.

    Args:
        length: dataset size.
        seed: run seed.
        epoch_fn: returns the epoch about to be iterated (the DataModule passes the
            trainer's ``current_epoch``, which a resumed run restores).
        rank, world_size: this process's place among the training processes.
    """

    def __init__(
        self,
        length: int,
        seed: int,
        epoch_fn: Callable[[], int],
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        # DistributedSampler's own __init__ needs a dataset and a process group; this one
        # needs neither
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.length = length
        self.seed = seed
        self.epoch_fn = epoch_fn
        self.rank = rank
        self.num_replicas = world_size
        self.shuffle = True
        self.drop_last = False

    def set_epoch(self, epoch: int) -> None:
        """Accepted for Lightning's sake; the epoch comes from ``epoch_fn``."""

    def __len__(self) -> int:
        return math.ceil(self.length / self.num_replicas)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        sequence = np.random.SeedSequence([self.seed, int(self.epoch_fn())])
        order_seed, sample_seed = sequence.spawn(2)
        gen = torch.Generator().manual_seed(int(order_seed.generate_state(1)[0]))
        seeds = sample_seed.generate_state(max(1, self.length))
        order = torch.randperm(self.length, generator=gen).tolist()
        padded = len(self) * self.num_replicas
        # repeated as often as needed (fewer images than processes too): every shard is full
        order = (order * math.ceil(padded / max(1, len(order))))[:padded]
        for index in order[self.rank :: self.num_replicas]:
            yield index, int(seeds[index])


class ShardSampler(DistributedSampler):
    """Evaluation order split across processes without padding: process ``rank`` takes
    indices ``rank, rank + world_size, ...``, so every image is evaluated exactly once and
    the shards differ in length by at most one.

    Raises:
        ValueError: fewer images than processes (a process would have nothing to evaluate,
            and the others would wait for it).
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if length < world_size:
            raise ValueError(
                f"{length} evaluation images for {world_size} processes; each process needs at "
                f"least one - evaluate on fewer devices"
            )
        self.length = length
        self.rank = rank
        self.num_replicas = world_size
        self.shuffle = False
        self.drop_last = False

    def set_epoch(self, epoch: int) -> None:
        """Evaluation order does not change between epochs."""

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.num_replicas))
