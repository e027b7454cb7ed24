"""What every fgvc DataLoader shares: how its workers start and how many a process may start."""

from __future__ import annotations

import os

from torch.utils.data import get_worker_info


def init_worker(worker_id: int) -> None:
    """One OpenCV thread per worker; a distinct augmentation stream each (training samples
    reseed the pipeline anyway, see :class:`~fgvc.data.sampler.EpochSeededSampler`)."""
    import cv2

    cv2.setNumThreads(1)
    info = get_worker_info()
    if info is None:
        return
    transform = getattr(info.dataset, "transform", None)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(info.seed % 2**32)


def capped_workers(requested: int, local_processes: int) -> tuple[int, str | None]:
    """``requested`` workers per process, capped so that all of this machine's processes
    together start at most one worker per CPU core.

    Returns:
        The number of workers, and the line that says so when it was capped.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    cap = max(1, cores // local_processes) if requested else 0
    if requested <= cap:
        return requested, None
    return cap, (
        f"data: {requested} workers per process x {local_processes} processes would exceed "
        f"the {cores} CPU cores; using {cap} per process"
    )
