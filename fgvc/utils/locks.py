"""An advisory file lock that several processes - DDP ranks, nodes, users sharing a cache -
can use to let exactly one of them do a piece of work (a download, writing a dataset)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; callers' atomic renames still keep them safe
    fcntl = None

logger = logging.getLogger(__name__)

# flock errors meaning "this filesystem has no locks" (some NFS/Lustre mounts)
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[bool]:
    """Hold an exclusive advisory lock (``flock``) on ``path`` during the ``with`` block.

    The lock file is created writable by everyone (a second user sharing the folder must be
    able to lock it; NFS needs a writable descriptor) and removed on release, before
    unlocking. A waiter that then gets the lock checks that its file is still the one at
    ``path`` and starts over otherwise, so removing it never lets two processes in at once.
    Yields whether a lock is held: False where the platform or filesystem has no ``flock``.
    """
    path = Path(path)
    fd = _acquire(path) if fcntl is not None else None
    if fd is None:
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(OSError):  # e.g. another user's file in a sticky folder
            os.unlink(path)
        os.close(fd)


def _acquire(path: Path) -> int | None:
    while True:
        # O_NOFOLLOW: a link planted at the lock's path is never opened (nor made writable)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except PermissionError:  # another user's lock file; reading is enough for flock
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except FileNotFoundError:  # its holder removed it meanwhile: start over
                continue
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise OSError(f"{path} is not a regular file; remove it")
        if info.st_uid == os.geteuid():
            with contextlib.suppress(OSError):  # the umask would keep other users out
                os.fchmod(fd, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.warning("waiting for another process to finish with %s", path)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:
            os.close(fd)
            if err.errno not in _NO_LOCKS:
                raise
            logger.warning("no file locks on %s (%s); not serializing", path.parent, err)
            return None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed it before releasing: lock the current file
