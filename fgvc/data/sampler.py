"""Samplers: training order fixed by (seed, epoch), evaluation shards that count every image once.

The training loader draws its order and every sample's augmentation seed from
``(seed, epoch)``, never from a process-global random state. A run therefore sees the same
images in the same order with the same crops and flips whatever the number of workers,
whether workers persist, and whether it was interrupted and resumed from a checkpoint.
:class:`ClassBalancedSampler` draws every class equally often on the same terms.

The samplers know the process's rank and the number of processes, so they are
``DistributedSampler`` s in Lightning's eyes and it leaves them alone (it would otherwise wrap
them in a sampler that pads every shard to the same length - for evaluation that counts some
images twice).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DistributedSampler


class EpochSeededSampler(DistributedSampler):
    """Yields ``(index, sample_seed, epoch)`` in a random order fixed by ``(seed, epoch)``.

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

    def epoch_draw(self, epoch: int) -> list[tuple[int, int]]:
        """The whole epoch's ``(index, sample_seed)`` pairs, before sharding."""
        sequence = np.random.SeedSequence([self.seed, epoch])
        order_seed, sample_seed = sequence.spawn(2)
        gen = torch.Generator().manual_seed(int(order_seed.generate_state(1)[0]))
        seeds = sample_seed.generate_state(max(1, self.length))
        order = torch.randperm(self.length, generator=gen).tolist()
        return [(index, int(seeds[index])) for index in order]

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        epoch = int(self.epoch_fn())
        order = self.epoch_draw(epoch)
        padded = len(self) * self.num_replicas
        # repeated as often as needed (fewer images than processes too): every shard is full
        order = (order * math.ceil(padded / max(1, len(order))))[:padded]
        # the epoch travels with each sample to the worker that loads it: a persistent
        # worker's transform follows the epoch (progressive resizing) without a rebuild
        for index, seed in order[self.rank :: self.num_replicas]:
            yield index, seed, epoch


class ClassBalancedSampler(EpochSeededSampler):
    """Class-balanced training order: each epoch draws as many samples as the training set
    has, every class (with at least one image) equally often, fixed by ``(seed, epoch)``
    and sharded across processes exactly as :class:`EpochSeededSampler`.

    The draw is stratified rather than i.i.d.: with ``N`` samples and ``C`` classes, each
    class gets ``N // C`` draws and ``N % C`` classes chosen at random one more; within a
    class the draws walk through fresh random permutations of its images (a rare class is
    repeated, each image as evenly as possible; a frequent class is subsampled, different
    images each epoch). In expectation this is sampling a class uniformly and then an image
    of it, with less epoch-to-epoch noise. A repeated image is augmented differently each
    time: sample seeds belong to the draw (its position in the epoch's order), not to the
    image.

    Args:
        targets: the label of every training sample.
        seed, epoch_fn, rank, world_size: as :class:`EpochSeededSampler`.
    """

    def __init__(
        self,
        targets: Sequence[int],
        seed: int,
        epoch_fn: Callable[[], int],
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(len(targets), seed, epoch_fn, rank, world_size)
        # each present class's indices, ascending (one sort, whatever the number of classes)
        labels = np.asarray(targets, dtype=np.int64)
        by_label = np.argsort(labels, kind="stable")
        _, starts = np.unique(labels[by_label], return_index=True)
        self.members = np.split(by_label, starts[1:]) if len(labels) else []

    def epoch_draw(self, epoch: int) -> list[tuple[int, int]]:
        if not self.members:
            return []
        # another stream than the uniform sampler's: a switch of sampler changes everything
        sequence = np.random.SeedSequence([self.seed, epoch, 1])
        order_seed, sample_seed = sequence.spawn(2)
        rng = np.random.default_rng(order_seed)
        quotas = np.full(len(self.members), self.length // len(self.members))
        quotas[rng.choice(len(self.members), self.length % len(self.members), replace=False)] += 1
        drawn = []
        for members, quota in zip(self.members, quotas):
            rounds = -(-quota // len(members))
            cycled = np.concatenate([rng.permutation(members) for _ in range(rounds)])
            drawn.append(cycled[:quota])
        order = rng.permutation(np.concatenate(drawn))
        seeds = sample_seed.generate_state(self.length)
        return [(int(index), int(s)) for index, s in zip(order, seeds)]


#: ``data.init_args.sampler`` values: ``uniform`` (:class:`EpochSeededSampler`, every image
#: once an epoch) and ``balanced`` (:class:`ClassBalancedSampler`)
TRAIN_SAMPLERS = ("uniform", "balanced")


def train_sampler(
    kind: str,
    targets: Sequence[int],
    seed: int,
    epoch_fn: Callable[[], int],
    rank: int = 0,
    world_size: int = 1,
) -> EpochSeededSampler:
    """The training sampler ``kind`` (a :data:`TRAIN_SAMPLERS` name) over ``targets``."""
    if kind == "balanced":
        return ClassBalancedSampler(targets, seed, epoch_fn, rank, world_size)
    if kind != "uniform":
        raise ValueError(f"sampler {kind!r}: choose {' or '.join(TRAIN_SAMPLERS)}")
    return EpochSeededSampler(len(targets), seed, epoch_fn, rank, world_size)


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
