"""Fetching datasets safely: the files their descriptors list, checked and unpacked.

Each dataset's :class:`~fgvc.data.descriptor.DatasetSpec` lists its files (URLs and
checksums); :data:`SOURCES` gathers them (tests point it elsewhere).
``FGVC_<NAME>_URL`` (``FGVC_CUB_URL``, ``FGVC_AIRCRAFT_URL``: the archive's URL, or a folder
URL ending in ``/``; a folder URL for datasets of several files) or ``FGVC_MIRROR`` (a folder
URL holding the files under their usual names) download from elsewhere; the checksums stay
those of the descriptor (see :mod:`fgvc.utils.download`).

Downloads go through :func:`fgvc.utils.download.download_url` (own partial file, resume,
checksum, rename) and :func:`fgvc.utils.archive.safe_extract` (path-safe, into an empty
staging folder). The dataset folder is built in a staging folder beside it and renamed into
``root`` whole, never over anything (CUB's archive also holds a stray ``attributes.txt``,
which is left out). Download, extraction and move run under a lock
(``<root>/<folder>.lock``): of several processes (DDP ranks, two users), one fetches the
dataset and the others wait, then use its folder.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fgvc.data.datasets import registry
from fgvc.data.descriptor import DatasetSource
from fgvc.utils.archive import safe_extract
from fgvc.utils.download import (
    MIRROR_ENV,
    DownloadError,
    download_url,
    env_var,
    resolve_url,
)
from fgvc.utils.locks import file_lock

#: ``{dataset name: its files}`` for every dataset that can be downloaded
SOURCES: dict[str, DatasetSource | tuple[DatasetSource, ...]] = {
    name: spec.sources for name, spec in registry().items() if spec.sources
}


def download_dataset(
    name: str,
    root: str | os.PathLike,
    sources: dict[str, DatasetSource | tuple[DatasetSource, ...]] | None = None,
    progress: bool = True,
    keep_archive: bool = False,
) -> Path:
    """Download and unpack dataset ``name`` into ``root``; returns the dataset folder.

    An existing dataset folder is left alone (and returned), also one that another process
    finished while this one waited for the lock. Every file is verified against the
    published sha256 and/or md5 while it downloads, and deleted after unpacking unless
    ``keep_archive`` (a file that was already in ``root`` is kept and used).

    Raises:
        DownloadError: network failure, checksum mismatch, unsafe or unexpected archive.
        KeyError: ``name`` has no download source.
    """
    sources = SOURCES if sources is None else sources
    if name not in sources:
        raise KeyError(f"no download source for {name!r}; known: {sorted(sources)}")
    files = _as_files(sources[name])
    root = Path(root).expanduser()
    target = root / files[0].folder
    if target.exists():
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        with file_lock(root / f"{files[0].folder}.lock") as locked:
            if not target.exists():  # else another process finished it while this one waited
                _fetch_and_unpack(name, files, root, locked, progress, keep_archive)
    except OSError as err:  # the folder, the lock, extraction: disk problems
        raise DownloadError(
            f"cannot write {target} ({err.strerror or err}); free some space or choose another root"
        ) from err
    return target


def _as_files(
    entry: DatasetSource | Sequence[DatasetSource],
) -> tuple[DatasetSource, ...]:
    files = (entry,) if isinstance(entry, DatasetSource) else tuple(entry)
    if not files or len({source.folder for source in files}) != 1:
        raise ValueError("a dataset's files must all build one folder")
    return files


def _fetch(name: str, source: DatasetSource, root: Path, progress: bool, several: bool) -> Path:
    own = os.environ.get(env_var(name), "").strip()
    if several and own and not own.endswith("/"):
        raise DownloadError(
            f"{env_var(name)}={own} names one file, but {name} is several files; set it to a "
            f"folder URL ending in / that holds {source.filename} and the others"
        )
    archive = root / source.filename
    url = resolve_url(name, source.url, source.filename)
    try:
        download_url(url, archive, sha256=source.sha256, md5=source.md5, progress=progress)
    except DownloadError as err:
        what = "a folder URL ending in /" if several else "the archive's URL"
        raise DownloadError(
            f"{err}; or set {env_var(name)} ({what}) or {MIRROR_ENV} (a folder URL "
            f"holding {source.filename}) to download from a mirror"
        ) from err
    return archive


def _fetch_and_unpack(
    name: str,
    files: tuple[DatasetSource, ...],
    root: Path,
    locked: bool,
    progress: bool,
    keep: bool,
) -> None:
    folder = files[0].folder
    staging_prefix = f".{folder}.staging-"
    if locked:  # staging folders are only made under the lock: these are from killed runs
        for stale in root.glob(glob.escape(staging_prefix) + "*"):
            shutil.rmtree(stale, ignore_errors=True)
    existed = {source.filename: (root / source.filename).exists() for source in files}
    # every file first: a missing second file costs no extraction of the first
    archives: list[Path] = []
    try:
        for source in files:
            archives.append(_fetch(name, source, root, progress, len(files) > 1))
    except BaseException:  # one failed: keep nothing this download fetched
        for archive in archives:
            if not existed[archive.name]:
                archive.unlink(missing_ok=True)
        raise
    staging = Path(tempfile.mkdtemp(dir=root, prefix=staging_prefix))
    try:
        build = staging / folder
        for source, archive in zip(files, archives):
            _unpack(name, source, archive, staging, build)
        target = root / folder
        try:
            os.rename(build, target)
        except OSError:
            if not target.is_dir():  # else a process without file locks was first: use it
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for archive in archives:
        if not keep and not existed[archive.name]:
            archive.unlink(missing_ok=True)


def _unpack(name: str, source: DatasetSource, archive: Path, staging: Path, build: Path) -> None:
    """Put ``archive``'s contents (or the file itself) where ``source`` says, in ``build``."""
    if not source.extract:
        dest = build / (source.into or "")
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, dest / source.filename)
        return
    scratch = Path(tempfile.mkdtemp(dir=staging, prefix="unpack-"))
    safe_extract(archive, scratch)
    if source.into is None:
        extracted = scratch / source.folder
        if not extracted.is_dir() or build.exists():
            found = sorted(p.name for p in scratch.iterdir())
            raise DownloadError(
                f"{archive.name} does not hold {source.folder}/ (found {found}); "
                f"is the descriptor of {name!r} right?"
            )
        os.rename(extracted, build)
    else:
        dest = build / source.into
        dest.mkdir(parents=True, exist_ok=True)
        for entry in sorted(scratch.iterdir()):
            if (dest / entry.name).exists():
                raise DownloadError(
                    f"{archive.name} and another file of {name!r} both hold {entry.name}; "
                    f"is the descriptor of {name!r} right?"
                )
            os.rename(entry, dest / entry.name)
    shutil.rmtree(scratch, ignore_errors=True)
