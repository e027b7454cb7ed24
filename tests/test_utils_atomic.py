"""fgvc.utils.atomic: a full disk or a kill at any byte leaves the previous file whole; what a
killed writer leaves is cleaned up, and only that."""

from __future__ import annotations

import errno
import io
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fgvc.errors import DiskFullError
from fgvc.utils import atomic
from tests.fs_helpers import dead_pid, fill, small_filesystem

REPO = Path(__file__).resolve().parents[1]
OLD, NEW = b"old content\n" * 100, b"new content, longer\n" * 500


class _FullAfter(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, raw: io.FileIO, room: int) -> None:
        self.raw, self.room = raw, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self.raw.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.raw.write(data)

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()
        super().close()


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("room", [0, 1, len(NEW) // 2, len(NEW) - 1])
def test_a_full_disk_at_any_byte_keeps_the_previous_file(tmp_path, monkeypatch, room):
    target = tmp_path / "metrics.csv"
    target.write_bytes(OLD)
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):  # the writer's file, full after `room` bytes
        return io.BufferedWriter(_FullAfter(real_fdopen(fd, "wb", buffering=0), room), 7)

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(DiskFullError) as failed:
        atomic.atomic_write_bytes(target, NEW)
    monkeypatch.undo()
    assert target.read_bytes() == OLD
    assert hidden(tmp_path) == []  # the partial temporary file is gone
    message = str(failed.value)
    assert str(target) in message and "is full" in message and "metrics.csv is intact" in message


def test_a_real_full_filesystem(tmp_path):
    with small_filesystem(tmp_path / "small", "64k") as small:
        target = small / "val_split.json"
        atomic.atomic_write_text(target, "whole\n")
        fill(small)
        with pytest.raises(DiskFullError, match=f"the filesystem at {small} is full"):
            atomic.atomic_write_text(target, "x" * 100_000)
        assert target.read_text() == "whole\n"
        assert hidden(small) == []
        (small / "filler").unlink()
        atomic.atomic_write_text(target, "new\n")  # room again: it works
        assert target.read_text() == "new\n"


def test_a_new_file_gets_open_s_mode_and_a_replaced_one_keeps_its_own(tmp_path):
    fresh = tmp_path / "fresh.txt"
    atomic.atomic_write_text(fresh, "a")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0o600
    fresh.chmod(0o640)
    atomic.atomic_write_text(fresh, "b")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640 and fresh.read_text() == "b"


def test_an_error_in_the_block_keeps_the_previous_file(tmp_path):
    target = tmp_path / "out.csv"
    target.write_bytes(OLD)
    with pytest.raises(RuntimeError), atomic.atomic_file(target) as file:
        file.write(NEW)
        raise RuntimeError("serializer failed")
    assert target.read_bytes() == OLD and hidden(tmp_path) == []


_PAUSING_WRITER = """
import sys
from fgvc.utils.atomic import atomic_file
with atomic_file(sys.argv[1], "wb") as file:
    file.write(b"n" * 5000)
    file.flush()
    print("paused", flush=True)
    sys.stdin.readline()  # never answered: killed here
    file.write(b"never")
"""


def test_a_kill_in_the_middle_keeps_the_previous_file_and_the_next_write_cleans_up(tmp_path):
    target = tmp_path / "last.ckpt"
    target.write_bytes(OLD)
    child = subprocess.Popen(
        [sys.executable, "-c", _PAUSING_WRITER, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout.readline() == b"paused\n"
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdin.close()
    child.stdout.close()
    assert target.read_bytes() == OLD
    (left,) = hidden(tmp_path)  # the killed writer's, named after it
    assert left.startswith(".last.ckpt.tmp-") and f"-{child.pid}-" in left
    assert (tmp_path / left).stat().st_size == 5000
    atomic.atomic_write_bytes(tmp_path / "other.ckpt", NEW)  # any write in the folder
    assert hidden(tmp_path) == [] and target.read_bytes() == OLD


def test_only_dead_writers_files_of_this_host_are_removed(tmp_path):
    host = atomic.hidden_prefix("x").split("-")[1]
    gone = dead_pid()
    names = {
        f".a.ckpt.tmp-{host}-{gone}-abcd1234": False,  # a killed writer's: removed
        f".b.ckpt.tmp-{host}-{os.getpid()}-abcd1234": True,  # a live one's
        f".c.ckpt.tmp-{host}-{os.getppid()}-abcd1234": True,
        f".d.ckpt.tmp-otherhost-{gone}-abcd1234": True,  # another host's: unknown, kept
        ".e.ckpt.tmp-abcd1234": True,  # not named by fgvc
        f".f.tmp-{host}-{gone}-abcd1234": False,  # a staging folder
    }
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / f".f.tmp-{host}-{gone}-abcd1234").unlink()
    (tmp_path / f".f.tmp-{host}-{gone}-abcd1234").mkdir()
    (tmp_path / f".f.tmp-{host}-{gone}-abcd1234" / "model.onnx").write_bytes(b"x")
    atomic.remove_stale(tmp_path)
    assert hidden(tmp_path) == sorted(n for n, kept in names.items() if kept)


def test_a_folder_moved_aside_by_a_killed_swap_goes_back(tmp_path):
    host = atomic.hidden_prefix("x").split("-")[1]
    aside = tmp_path / f".export.old-{host}-{dead_pid()}-abcd1234"
    aside.mkdir()
    (aside / "model.json").write_text("{}")
    atomic.remove_stale(tmp_path)
    assert (tmp_path / "export" / "model.json").read_text() == "{}"
    assert hidden(tmp_path) == []


def test_full_is_found_behind_a_library_s_own_error():
    """torch.save reports a failed write as a RuntimeError with the OSError as context."""
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError:
            raise RuntimeError("unexpected pos 704 vs 598")  # noqa: B904 - as torch does
    except RuntimeError as err:
        assert atomic.is_full(err)
    assert not atomic.is_full(RuntimeError("unexpected pos 704 vs 598"))
    assert not atomic.is_full(OSError(errno.EACCES, "Permission denied"))
