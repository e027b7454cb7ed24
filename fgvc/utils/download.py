"""Checked downloads and path-safe archive extraction.

Downloads go to ``<dest>.part`` while being hashed and are renamed into place only when the
checksum matches, so an interrupted or corrupt transfer never leaves a file that looks good.
Archives are extracted into a temporary folder next to the target, refusing any member
that would land outside it, and then moved into place without overwriting anything.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed (offline, HTTP error) or its checksum did not match."""


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks (md5 only where a dataset publishes nothing else)."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_digest(actual: str, sha256: str | None, sha256_prefix: str | None) -> bool:
    if sha256 is not None and actual != sha256.lower():
        return False
    return sha256_prefix is None or actual.startswith(sha256_prefix.lower())


def download_url(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest`` and verify its sha256 (full digest or hub-style prefix).

    An existing ``dest`` with the right checksum is reused; one with the wrong checksum is
    left untouched and reported. Nothing is written at ``dest`` unless the checksum matches.

    Raises:
        DownloadError: network failure (the message names the URL and where to put the file
            by hand) or checksum mismatch.
    """
    dest = Path(dest)
    if dest.exists() and sha256 is None and sha256_prefix is None:
        return dest  # nothing to verify here (the caller checks another digest)
    if dest.exists():
        actual = file_digest(dest)
        if _check_digest(actual, sha256, sha256_prefix):
            return dest
        raise DownloadError(
            f"{dest} exists but its sha256 {actual[:16]}... does not match the expected "
            f"{(sha256 or sha256_prefix or '')[:16]}...; move it away and download again"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=dest.name,
                disable=not progress,
                leave=False,
            ) as bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"could not download {url} ({getattr(err, 'reason', err)}); "
            f"without network, fetch it elsewhere and put it at {dest}"
        ) from err
    actual = digest.hexdigest()
    if not _check_digest(actual, sha256, sha256_prefix):
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"checksum mismatch for {url}: got sha256 {actual}, expected "
            f"{sha256 or sha256_prefix + '...'}; nothing was kept"
        )
    os.replace(part, dest)
    return dest


def _is_within(root: Path, member: str) -> bool:
    target = (root / member).resolve()
    return target == root or root in target.parents


def safe_extract(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> list[Path]:
    """Extract a tar(.gz/.bz2/.xz) or zip archive under ``dest_dir``.

    Members with absolute paths, ``..`` components, links pointing outside or device files
    are refused (tarfile's ``data`` filter; the same rule checked by hand for zip). The
    archive is unpacked into a temporary folder first; each top-level entry is then moved
    into ``dest_dir``, and an entry that already exists there is never overwritten.

    Returns:
        the top-level paths created in ``dest_dir``.
    """
    archive = Path(archive)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".extract-") as tmp:
        tmp_root = Path(tmp).resolve()
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    if not _is_within(tmp_root, name):
                        raise DownloadError(f"{archive}: member {name!r} escapes the target")
                zf.extractall(tmp_root)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                try:
                    tf.extractall(tmp_root, filter="data")
                except tarfile.FilterError as err:
                    raise DownloadError(f"{archive}: refused unsafe member ({err})") from err
        else:
            raise DownloadError(f"{archive} is neither a tar nor a zip archive")
        created = []
        for entry in sorted(tmp_root.iterdir()):
            target = dest_dir / entry.name
            if target.exists():
                raise DownloadError(
                    f"{target} already exists; extraction stopped so nothing is overwritten "
                    f"(move it away to extract {archive.name} again)"
                )
            shutil.move(str(entry), target)
            created.append(target)
    return created
