"""Checked downloads and path-safe archive extraction.

Downloads go to ``<dest>.part`` while being hashed and are renamed into place only when the
checksum matches, so an interrupted or corrupt transfer never leaves a file that looks good.
Archives are extracted into an empty staging folder, refusing any member that would land
outside it; the caller moves what it needs into place.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from fgvc.errors import DownloadError

CHUNK = 1 << 20


def _hashers(algorithms: list[str]) -> dict[str, Any]:
    # md5 only where a dataset publishes nothing else
    return {name: hashlib.new(name, usedforsecurity=False) for name in algorithms}


def file_digests(path: str | os.PathLike, algorithms: list[str]) -> dict[str, str]:
    """Hex digests of a file in one chunked read, e.g. ``{"sha256": ..., "md5": ...}``."""
    hashers = _hashers(algorithms)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def _expected(
    sha256: str | None, sha256_prefix: str | None, md5: str | None
) -> list[tuple[str, str, bool]]:
    """(algorithm, expected lowercase digest, whether it is a prefix) for each one given."""
    checks = [("sha256", sha256, False), ("sha256", sha256_prefix, True), ("md5", md5, False)]
    return [(name, value.lower(), prefix) for name, value, prefix in checks if value is not None]


def _mismatch(
    digests: dict[str, str], expected: list[tuple[str, str, bool]]
) -> tuple[str, str, str] | None:
    """(algorithm, actual, expected as shown) for the first digest that does not match."""
    for name, value, prefix in expected:
        actual = digests[name]
        if not (actual.startswith(value) if prefix else actual == value):
            return name, actual, value + ("..." if prefix else "")
    return None


def download_url(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    md5: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest`` and verify it: sha256 (full digest or hub-style prefix)
    and/or md5, all hashed while the bytes stream in.

    An existing ``dest`` with the right checksums is reused; one with a wrong checksum is
    left untouched and reported. Nothing is written at ``dest`` unless the checksums match.

    Raises:
        DownloadError: network failure (the message names the URL and where to put the file
            by hand) or checksum mismatch.
    """
    dest = Path(dest)
    expected = _expected(sha256, sha256_prefix, md5)
    algorithms = sorted({name for name, _, _ in expected})
    if dest.exists():
        bad = _mismatch(file_digests(dest, algorithms), expected)
        if bad is None:
            return dest
        name, actual, want = bad
        raise DownloadError(
            f"{dest} exists but its {name} {actual[:16]}... does not match the expected "
            f"{want[:16]}...; move it away and download again"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    hashers = _hashers(algorithms)
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
                    for hasher in hashers.values():
                        hasher.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"could not download {url} ({getattr(err, 'reason', err)}); "
            f"without network, fetch it elsewhere and put it at {dest}"
        ) from err
    bad = _mismatch({name: h.hexdigest() for name, h in hashers.items()}, expected)
    if bad is not None:
        part.unlink(missing_ok=True)
        name, actual, want = bad
        raise DownloadError(
            f"checksum mismatch for {url}: got {name} {actual}, expected {want}; nothing was kept"
        )
    os.replace(part, dest)
    return dest


def _is_within(root: Path, member: str) -> bool:
    target = (root / member).resolve()
    return target == root or root in target.parents


def safe_extract(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> None:
    """Extract a tar(.gz/.bz2/.xz) or zip archive into ``dest_dir``, which must be empty or
    missing (a staging folder), so that nothing there can be overwritten.

    Members with absolute paths, ``..`` components, links pointing outside or device files
    are refused (tarfile's ``data`` filter; the same rule checked by hand for zip).
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
                if not _is_within(root, name):
                    raise DownloadError(f"{archive}: member {name!r} escapes the target")
            zf.extractall(root)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            try:
                tf.extractall(root, filter="data")
            except tarfile.FilterError as err:
                raise DownloadError(f"{archive}: refused unsafe member ({err})") from err
    else:
        raise DownloadError(f"{archive} is neither a tar nor a zip archive")
