"""Interleaved wall-clock timing shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work, so that a timing covers it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_ms(
    fns: dict[str, Callable[[], object]],
    device: str | torch.device,
    repeats: int,
    warmup: int = 1,
) -> dict[str, float]:
    """Median wall time (ms) of each function after ``warmup`` calls of each.

    The functions run interleaved, round after round, so load from elsewhere on the machine
    hits them all alike and their ratios stay fair.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}
