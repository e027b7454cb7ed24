"""Writing outputs so that a failure leaves nothing half-written and nothing of the user's lost.

* :func:`staged_folder`: a bundle is assembled in a hidden folder beside its destination and
  moved into place only when everything in it was written and verified. An existing non-empty
  destination is touched only with ``force``: then the bundle's own files are replaced (the
  old ones restored if anything fails) and every other file stays where it is.
* :func:`replaced_folder`: a folder fgvc owns (a run's ``export/``, ``explain/``) is
  replaced whole: the new one is written beside it and swapped in.
* :func:`atomic_write_text`: a file is written beside its destination and renamed over it.

Files are written and flushed to disk (fsync) before anything is renamed
(:mod:`fgvc.utils.atomic`); a full disk is one :class:`~fgvc.errors.DiskFullError` line.
Staging folders carry their owner's host and pid: the next write beside them removes those
a killed process left (and puts back what it had moved aside).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from fgvc.errors import DiskFullError, UsageError
from fgvc.utils import atomic


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def check_destination(out: Path, force: bool, replaced: str = "the bundle's files") -> None:
    """Refuse a destination that is a file, or a non-empty folder without ``force``
    (``replaced``: what ``--force`` would replace there, for the message)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.is_dir() and not _is_empty_dir(out) and not force:
        raise UsageError(
            f"--out {out} exists and is not empty; choose another folder or pass --force "
            f"(which replaces {replaced} and keeps any other file there)"
        )


def _default_mode(folder: bool) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def _make_parents(folder: Path, created: list[Path]) -> None:
    """Create ``folder``'s missing ancestors, recording each in ``created`` as it is made
    (outermost first), so that a failure half-way still knows what to remove."""
    for parent in reversed(folder.parents):
        if not parent.exists():
            parent.mkdir()
            created.append(parent)


def _writable(folder: Path) -> None:
    """Raise UsageError unless a file can be created in ``folder`` (tried, not guessed)."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".fgvc-write-test-")
    except OSError as err:
        raise UsageError(
            f"cannot write in {folder} ({err.strerror or err}); choose another folder or fix "
            f"its permissions"
        ) from err
    os.close(fd)
    os.unlink(probe)


@contextlib.contextmanager
def staged_folder(
    out: Path, force: bool, files: Sequence[str], last: str | None = None
) -> Iterator[Path]:
    """Yield an empty folder to write into; publish it at ``out`` when the block succeeds.

    Args:
        out: the destination folder.
        force: replace ``files`` in a non-empty ``out`` (any other file there is kept).
        files: every name the staged folder may hold (what ``force`` replaces).
        last: the file to move into an existing ``out`` last (the one that describes the
            others, so that a reader never sees it beside old files).

    On any error the staged folder, and any parent folder created for it, are removed and
    ``out`` is as it was.

    Raises:
        UsageError: ``out`` is in the way, or a folder that must be written is not writable.
    """
    out = Path(out).expanduser().absolute()
    check_destination(out, force)
    created: list[Path] = []
    try:
        _make_parents(out, created)
        atomic.remove_stale(out.parent)
        _roll_back_stale(out)
        staging = Path(tempfile.mkdtemp(prefix=atomic.hidden_prefix(out.name), dir=out.parent))
    except OSError as err:
        _remove_empty(created)
        if atomic.is_full(err):
            raise atomic.full_disk_error(out, out.exists()) from err
        raise UsageError(
            f"cannot create {out} ({err.strerror or err}); choose another --out or fix the "
            f"permissions of {out.parent}"
        ) from err
    try:
        os.chmod(staging, _default_mode(folder=True))  # mkdtemp makes it private
        yield staging
        for entry in staging.iterdir():
            os.chmod(entry, _default_mode(folder=False))
        atomic.fsync_tree(staging)  # on disk before it is published
        _publish(staging, out, files, last)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        if isinstance(err, Exception) and atomic.is_full(err):
            raise atomic.full_disk_error(out, out.exists()) from err
        raise
    atomic.fsync_dir(out.parent)


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        if _is_empty_dir(folder):
            folder.rmdir()


def _publish(staging: Path, out: Path, files: Sequence[str], last: str | None) -> None:
    if not out.exists():
        os.replace(staging, out)  # one rename: the bundle appears whole
        return
    # An existing folder keeps its identity and mode: files are moved into it. The old
    # bundle files go to a hidden folder inside it first and come back if anything fails.
    _writable(out)
    backup = Path(tempfile.mkdtemp(prefix=atomic.hidden_prefix(out.name, "bak"), dir=out))
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        for name in files:
            if (out / name).exists():
                os.replace(out / name, backup / name)
                moved_out.append(name)
        names = sorted((p.name for p in staging.iterdir()), key=lambda n: n == last)
        for name in names:
            os.replace(staging / name, out / name)
            moved_in.append(name)
    except BaseException:
        for name in moved_in:
            (out / name).unlink(missing_ok=True)
        for name in moved_out:
            os.replace(backup / name, out / name)
        raise
    finally:
        shutil.rmtree(backup, ignore_errors=True)
    staging.rmdir()
    atomic.fsync_dir(out)


def _roll_back_stale(out: Path) -> None:
    """Undo a publish into ``out`` that a kill interrupted: the old files its backup holds
    go back in place (a kill while the files were moved in leaves a mix otherwise)."""
    for backup, _ in atomic.stale_entries(out, "bak"):
        with contextlib.suppress(OSError):
            for entry in backup.iterdir():
                os.replace(entry, out / entry.name)
            shutil.rmtree(backup)


@contextlib.contextmanager
def replaced_folder(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a path (not yet existing) beside ``out`` to create the new folder at; when the
    block succeeds it replaces ``out`` whole (every old file goes), else it is removed and
    ``out`` stays as it was. For folders fgvc owns, such as a run's ``export/``: a reader
    sees the old folder or the new one, never a mix. A kill between the two renames of the
    swap leaves the old folder aside, put back by the next write in that folder."""
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder")
    atomic.remove_stale(out.parent)
    new = out.parent / f"{atomic.hidden_prefix(out.name)}{secrets.token_hex(4)}"
    try:
        yield new
        if not new.is_dir():
            raise FileNotFoundError(f"nothing was written at {new}")
        if not out.exists():
            os.replace(new, out)
        else:
            old = out.parent / f"{atomic.hidden_prefix(out.name, 'old')}{secrets.token_hex(4)}"
            os.replace(out, old)
            os.replace(new, out)
            shutil.rmtree(old, ignore_errors=True)
        atomic.fsync_dir(out.parent)
    except BaseException:
        if new.exists():
            shutil.rmtree(new, ignore_errors=True)
        raise


def atomic_write_text(
    path: str | os.PathLike, text: str, encoding: str = "utf-8", errors: str = "strict"
) -> None:
    """:func:`fgvc.utils.atomic.atomic_write_text` for a path the user gave: ``path`` holds
    either its old content or all of the new (an existing file keeps its permissions).

    Raises:
        UsageError: the folder is missing or not writable.
        DiskFullError: no room on its filesystem (``path`` is left as it was).
    """
    path = Path(path).expanduser().absolute()
    if not path.parent.is_dir():
        raise UsageError(f"folder {path.parent} does not exist")
    if path.is_dir():
        raise UsageError(f"{path} is a folder; name a file")
    try:
        atomic.atomic_write_text(path, text, encoding, errors)
    except DiskFullError:
        raise
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise UsageError(
            f"cannot write in {path.parent} ({err.strerror or err}); choose another file"
        ) from err
