"""Shuffling and augmentation that depend only on (seed, epoch, sample).

The training loader draws its order and every sample's augmentation seed from
``(seed, epoch)``, never from a process-global random state. A run therefore sees the same
images in the same order with the same crops and flips whatever the number of workers,
whether workers persist, and whether it was interrupted and resumed from a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class EpochSeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, sample_seed)`` in a random order fixed by ``(seed, epoch)``.

    Args:
        length: dataset size.
        seed: run seed.
        epoch_fn: returns the epoch about to be iterated (the DataModule passes the
            trainer's ``current_epoch``, which a resumed run restores). Reading it at
            iteration time also covers samplers wrapped for DDP, whose ``set_epoch``
            never reaches this one.
    """

    def __init__(self, length: int, seed: int, epoch_fn: Callable[[], int]) -> None:
        self.length = length
        self.seed = seed
        self.epoch_fn = epoch_fn

    def set_epoch(self, epoch: int) -> None:
        """Accepted for Lightning's sake; the epoch comes from ``epoch_fn``."""

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        sequence = np.random.SeedSequence([self.seed, int(self.epoch_fn())])
        order_seed, sample_seed = sequence.spawn(2)
        gen = torch.Generator().manual_seed(int(order_seed.generate_state(1)[0]))
        seeds = sample_seed.generate_state(max(1, self.length))
        for index in torch.randperm(self.length, generator=gen).tolist():
            yield index, int(seeds[index])
