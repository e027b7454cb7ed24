"""Writing a file whole or not at all: the one low-level writer every fgvc output goes through.

A file is written into a hidden temporary file beside its destination (same filesystem, so
the final rename is atomic, unlike a copy from ``$TMPDIR``), flushed to disk (``fsync``) and
renamed over the destination: a kill or a full disk at any byte leaves the previous file
whole. A full disk becomes one :class:`~fgvc.errors.DiskFullError` naming the file and the
filesystem.

Temporary names carry their owner, ``.<name>.tmp-<host>-<pid>-<random>``, so that the next
write in the same folder removes those of killed processes (and only those: never another
host's or a live process's). Folders swapped whole use ``.<name>.old-<host>-<pid>-<random>``
for the previous version while it is moved aside; one left by a kill is put back if nothing
took its place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from fgvc.errors import DiskFullError

#: errno values meaning "no room": the filesystem is full, or the user's quota is.
FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

_HOST = re.sub(r"[^A-Za-z0-9]+", "_", socket.gethostname())[:40] or "host"
_OURS = re.compile(
    r"^\.(?P<name>.+)\.(?P<kind>tmp|old|bak)-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[A-Za-z0-9_]+$"
)


def hidden_prefix(name: str, kind: str = "tmp") -> str:
    """The start of a hidden temporary name for ``name`` owned by this process (``kind``:
    ``tmp`` a new version being written, ``old`` the previous one moved aside, ``bak`` a
    backup of replaced files)."""
    return f".{name}.{kind}-{_HOST}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def stale_entries(folder: str | os.PathLike, kind: str) -> list[tuple[Path, str]]:
    """Hidden temporary entries of ``kind`` (``tmp``, ``old`` or ``bak``) in ``folder``
    whose owner (on this host, by pid) is dead, as (path, the name they stand for)."""
    found = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        match = _OURS.match(entry.name)
        if (
            match
            and match["kind"] == kind
            and match["host"] == _HOST
            and not _alive(int(match["pid"]))
        ):
            found.append((Path(entry.path), match["name"]))
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale(folder: str | os.PathLike) -> None:
    """Clean up after killed writers in ``folder``: their temporary files and staging
    folders are removed, and a previous version they had moved aside goes back in place when
    nothing replaced it (else it is removed). Best effort: what cannot be removed is left."""
    folder = Path(folder)
    for path, _ in stale_entries(folder, "tmp"):
        with contextlib.suppress(OSError):
            _remove(path)
    for path, name in stale_entries(folder, "old"):
        with contextlib.suppress(OSError):
            if os.path.lexists(folder / name):
                _remove(path)
            else:  # killed between the two renames of a swap
                os.replace(path, folder / name)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (where the filesystem allows directory fsync)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:  # some filesystems refuse fsync on a directory
        if err.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike) -> None:
    """fsync every file under ``folder``, then the folders themselves."""
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)


def is_full(err: BaseException) -> bool:
    """Whether ``err`` or anything in its cause/context chain is a full disk or quota.

    Libraries re-raise it their own way: torch as a RuntimeError with the OSError as its
    context, safetensors (Rust) as an error whose text is the system's message."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in FULL:
            return True
        if any(os.strerror(code) in str(current) for code in FULL):
            return True
        current = current.__cause__ or current.__context__
    return False


def mount_point(path: str | os.PathLike) -> Path:
    """The mount point of the filesystem holding ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    device = path.stat().st_dev
    while path != path.parent and path.parent.stat().st_dev == device:
        path = path.parent
    return path


def full_disk_error(path: str | os.PathLike, kept: bool) -> DiskFullError:
    """The one line for a write of ``path`` that found no room (``kept``: a previous
    version of ``path`` is still there, whole)."""
    path = Path(path).absolute()
    try:
        where = f"the filesystem at {mount_point(path.parent)}"
    except OSError:
        where = f"the filesystem holding {path.parent}"
    outcome = f"the previous {path.name} is intact" if kept else "nothing was written"
    return DiskFullError(
        f"cannot write {path}: {where} is full (no space left on device or quota exceeded); "
        f"{outcome} - free some space there or write elsewhere"
    )


def _new_file_mode(path: Path) -> int:
    """An existing file's permissions, else what ``open()`` would give (0o666 & ~umask)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_file(
    path: str | os.PathLike,
    mode: str = "wb",
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
) -> Iterator[IO[Any]]:
    """Yield a file object for ``path`` whose content replaces ``path`` only when the block
    ends without error (written beside it, flushed, fsynced, renamed; the folder fsynced).

    On any error the temporary file is removed and ``path`` is as it was.

    Raises:
        DiskFullError: the filesystem (or quota) is full, whatever layer reported it.
        OSError: any other failure to create, write or rename.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    folder = path.parent
    remove_stale(folder)
    kept = path.is_file()
    try:
        fd, tmp = tempfile.mkstemp(prefix=hidden_prefix(path.name), dir=folder)
    except OSError as err:
        if is_full(err):
            raise full_disk_error(path, kept) from err
        raise
    try:
        with os.fdopen(fd, mode, encoding=encoding, errors=errors, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, Exception) and is_full(err):
            raise full_disk_error(path, kept) from err
        raise
    fsync_dir(folder)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` whole or not at all (see :func:`atomic_file`)."""
    with atomic_file(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(
    path: str | os.PathLike, text: str, encoding: str = "utf-8", errors: str = "strict"
) -> None:
    """Replace ``path`` with ``text`` whole or not at all (see :func:`atomic_file`); line
    endings are written as given."""
    with atomic_file(path, "w", encoding=encoding, errors=errors, newline="") as handle:
        handle.write(text)
