"""Real failures during writes: a small tmpfs that fills up, a process killed in a save, and
dead process ids for the stale-file checks."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_filesystem(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount's syntax: ``135m``) mounted at ``where`` for the block.

    Mounting needs root (CI runs the tests as root); elsewhere the test is skipped, saying
    so: the simulated full-disk tests of ``tests/test_utils_atomic.py`` still run."""
    where.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root, as in CI): {mount.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` to its last byte (a file of zeros); returns it."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as file:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    file.write(b"\0" * size)
            except OSError as err:
                assert err.errno == errno.ENOSPC, err
    return filler


def dead_pid() -> int:
    """The id of a process that has ended (and was reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def fit_killed_during_save(min_bytes: int = 1 << 20) -> None:
    """``python -c 'from tests.fs_helpers import fit_killed_during_save as f; f()' fit ...``:
    run ``fgvc`` and SIGKILL it in the middle of the second save of ``last.ckpt``, at the
    first moment that either ``last.ckpt`` is no longer the file it was or ``min_bytes`` of
    a new file have been written beside it - wherever the checkpoint IO writes, the kill
    lands while the new checkpoint is half-way to its place."""
    import pytorch_lightning as pl

    save = pl.Trainer.save_checkpoint

    def killing_save(self, filepath, *args, **kwargs):
        path = Path(filepath)
        if path.name != "last.ckpt" or not path.is_file():
            return save(self, filepath, *args, **kwargs)
        before = _identity(path)
        others = set(os.listdir(path.parent))

        def hook(frame, event, arg):
            if event != "c_call":
                return
            grown = [
                n
                for n in os.listdir(path.parent)
                if n not in others and os.stat(path.parent / n).st_size >= min_bytes
            ]
            if _identity(path) != before or grown:
                os.kill(os.getpid(), signal.SIGKILL)

        sys.setprofile(hook)
        try:
            return save(self, filepath, *args, **kwargs)
        finally:
            sys.setprofile(None)

    pl.Trainer.save_checkpoint = killing_save
    from fgvc.commands.main import main

    sys.exit(main(sys.argv[1:]))


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns
