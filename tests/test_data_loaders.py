"""fgvc.data.loaders: at most one DataLoader worker per CPU core among a machine's processes."""

from __future__ import annotations

import os

import pytest

from fgvc.data.loaders import capped_workers


@pytest.mark.parametrize(
    ("cores", "requested", "local", "expected"),
    [(8, 4, 1, 4), (8, 4, 2, 4), (8, 4, 4, 2), (8, 8, 3, 2), (2, 4, 4, 1), (8, 0, 2, 0)],
)
def test_workers_are_capped_at_the_cores_per_process(
    monkeypatch, cores, requested, local, expected
):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    workers, line = capped_workers(requested, local)
    assert workers == expected
    assert workers * local <= max(cores, local)  # a process keeps one worker at least
    if workers < requested:
        assert line == (
            f"data: {requested} workers per process x {local} processes would exceed the "
            f"{cores} CPU cores; using {expected} per process"
        )
    else:
        assert line is None
