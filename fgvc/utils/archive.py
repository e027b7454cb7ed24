"""Path-safe archive extraction.

:func:`safe_extract` extracts into an empty staging folder with tarfile's ``data`` filter, or
the same rules of its own where Python predates it (< 3.10.12 / 3.11.4); zip members are
checked by hand.
"""

from __future__ import annotations

import copy
import os
import tarfile
import zipfile
from pathlib import Path

from fgvc.errors import DownloadError


class _UnsafeMember(Exception):
    """args: (member name, why it is refused)."""


def _inside(root: str, path: str) -> bool:
    target = os.path.realpath(path)
    return os.path.commonpath([target, root]) == root


def _refuse_absolute(member: tarfile.TarInfo) -> None:
    # tarfile's filter would strip the slash; an archive with such members is not trusted
    if member.name.startswith(("/", os.sep)) or os.path.isabs(member.name):
        raise _UnsafeMember(member.name, "absolute path")


def _with_data_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    _refuse_absolute(member)
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError as err:
        raise _UnsafeMember(member.name, str(err)) from err


def _own_data_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """tarfile's ``data`` filter rules, for Pythons without it: refuse absolute paths, paths
    and links resolving outside ``dest`` (symlinks already extracted are followed, so it must
    run member by member) and special files; drop high mode bits, group/other write and
    ownership."""
    _refuse_absolute(member)
    if not _inside(dest, os.path.join(dest, member.name)):
        raise _UnsafeMember(member.name, "it would land outside the destination")
    if member.issym() or member.islnk():
        if os.path.isabs(member.linkname):
            raise _UnsafeMember(member.name, f"link to the absolute path {member.linkname!r}")
        base = os.path.dirname(member.name) if member.issym() else ""
        if not _inside(dest, os.path.join(dest, base, member.linkname)):
            raise _UnsafeMember(member.name, f"link to {member.linkname!r}, outside")
    elif not (member.isreg() or member.isdir()):
        raise _UnsafeMember(member.name, "device, fifo or other special file")
    safe = copy.copy(member)
    if member.isdir():
        safe.mode = 0o755
    elif not member.issym():
        mode = member.mode & 0o755
        safe.mode = (mode if mode & 0o100 else mode & ~0o111) | 0o600
    # -1 and empty names: the chown tarfile does as root changes nothing
    safe.uid = safe.gid = -1
    safe.uname = safe.gname = ""
    return safe


def safe_extract(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> None:
    """Extract a tar(.gz/.bz2/.xz) or zip archive into ``dest_dir``, which must be empty or
    missing (a staging folder), so that nothing there can be overwritten.

    Members with absolute paths, ``..`` components or links leading outside, and device or
    fifo files are refused (tarfile's ``data`` filter, or the same rules where Python lacks
    it; checked by hand for zip). Modes lose setuid/setgid/sticky and group/other write.
    """
    archive = Path(archive)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    if any(dest_dir.iterdir()):
        raise DownloadError(f"{dest_dir} is not empty; extract {archive.name} into a new folder")
    root = dest_dir.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if not _inside(str(root), str(root / name)):
                    raise DownloadError(f"{archive}: member {name!r} escapes the target")
            zf.extractall(root)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            try:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
                    tf.extractall(root, filter=_with_data_filter)
                else:  # lazily, so that links extracted earlier are followed by the checks
                    tf.extractall(root, members=(_own_data_filter(m, str(root)) for m in tf))
            except _UnsafeMember as err:
                name, why = err.args
                raise DownloadError(f"{archive}: refused unsafe member {name!r} ({why})") from err
    else:
        raise DownloadError(f"{archive} is neither a tar nor a zip archive")
