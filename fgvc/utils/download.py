"""Checked, resumable, concurrency-safe downloads.

:func:`download_url` streams into a temporary file of its own (``.<name>.<pid>.<random>.part``
next to the destination) while hashing, and renames it into place only when every checksum
matches. A dropped connection is resumed with an HTTP ``Range`` request (restarted when the
server ignores it); ``retries`` attempts in a row without progress, with a short exponential
back-off, end the download. A host not reached at all on the first request (offline, DNS,
refused) fails at once. Processes fetching the same file (DDP ranks, users sharing a cache)
serialize on :func:`file_lock` (``<dest>.lock``): one downloads, the others wait and reuse it.

Where files come from, one scheme for weights and datasets (:func:`resolve_url`):
``FGVC_<NAME>_URL`` (``NAME``: ``ISQRT_IMAGENET``, ``CUB``, ``AIRCRAFT``) is where that file is
downloaded from: a value ending in ``/`` is a folder the file's usual name is appended to,
anything else the file's full URL. ``FGVC_MIRROR`` is a folder holding any of the files under
their usual names, for every file without its own variable. ``file://`` URLs work too; the
checksums are verified whatever the source.
"""

from __future__ import annotations

import glob
import hashlib
import http.client
import logging
import os
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO

from tqdm.auto import tqdm

from fgvc.errors import DownloadError
from fgvc.utils.locks import file_lock

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
#: Attempts in a row without new bytes before a download gives up.
RETRIES = 5
#: First back-off between attempts, doubled after each attempt without progress (capped).
RETRY_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 8.0
# Hard cap on requests for one file, even when every attempt brings a few bytes.
_MAX_REQUESTS = 200
MIRROR_ENV = "FGVC_MIRROR"


def resolve_url(name: str, default: str, filename: str) -> str:
    """Where to download ``filename`` (the file of ``name``, e.g. ``"CUB"``) from:
    ``FGVC_<NAME>_URL`` if set, else ``FGVC_MIRROR`` + ``filename`` if set, else ``default``."""
    own = _as_url(env_var(name))
    if own:
        return own + urllib.parse.quote(filename) if own.endswith("/") else own
    mirror = _as_url(MIRROR_ENV)
    if mirror:
        return mirror.rstrip("/") + "/" + urllib.parse.quote(filename)
    return default


def _as_url(variable: str) -> str:
    """The URL an environment variable gives: http(s) or file URLs as they are, an absolute
    path as a file URL (keeping a trailing ``/``).

    Raises:
        DownloadError: anything else (named, with what to write instead).
    """
    value = os.environ.get(variable, "").strip()
    if not value:
        return ""
    scheme = urllib.parse.urlparse(value).scheme
    if scheme in ("http", "https", "file"):
        return value
    if os.path.isabs(value):
        return Path(value).as_uri() + ("/" if value.endswith("/") else "")
    raise DownloadError(
        f"{variable}={value!r} is neither an http(s)/file URL nor an absolute path; "
        f"e.g. https://mirror.example.org/fgvc/ or /srv/fgvc-mirror/"
    )


def env_var(name: str) -> str:
    """The variable overriding the URL of ``name``: ``FGVC_<NAME>_URL``."""
    return f"FGVC_{name.upper().replace('-', '_')}_URL"


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


def _mismatch(digests: dict[str, str], expected: list[tuple[str, str, bool]]) -> str | None:
    """``"<algorithm> <actual>, expected <digest>"`` for the first digest that differs."""
    for name, value, prefix in expected:
        if not (digests[name].startswith(value) if prefix else digests[name] == value):
            return f"{name} {digests[name]}, expected {value}{'...' if prefix else ''}"
    return None


def _reusable(dest: Path, expected: list[tuple[str, str, bool]]) -> bool:
    """Whether ``dest`` is there with the right checksums; raises if it is there but wrong."""
    if not dest.is_file():
        return False
    bad = _mismatch(file_digests(dest, sorted({n for n, _, _ in expected})), expected)
    if bad is not None:
        raise DownloadError(f"{dest} exists but has {bad}; move it away and download again")
    return True


def download_url(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    md5: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    retries: int = RETRIES,
) -> Path:
    """Download ``url`` to ``dest`` and verify it: sha256 (full digest or hub-style prefix)
    and/or md5, all hashed while the bytes stream in (see the module doc for resuming and
    locking).

    An existing ``dest`` with the right checksums is reused, also when another process put it
    there while this one waited for the lock; one with a wrong checksum is left untouched and
    reported. Nothing is written at ``dest`` unless the checksums match.

    Raises:
        DownloadError: network failure (the message names the URL and where to put the file
            by hand), checksum mismatch, or a folder that cannot be written.
    """
    dest = Path(dest)
    expected = _expected(sha256, sha256_prefix, md5)
    if _reusable(dest, expected):
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(dest.with_name(dest.name + ".lock")) as locked:
            if _reusable(dest, expected):  # another process finished it meanwhile
                return dest
            if locked:  # only lock holders write temp files: any left are from killed runs
                for stale in dest.parent.glob(f".{glob.escape(dest.name)}.*.part"):
                    stale.unlink(missing_ok=True)
            part = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
            try:
                # O_EXCL: never someone else's file; 0o666 & umask like any new file (mkstemp's
                # 0o600 would keep the other users of a shared cache out)
                fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                algorithms = sorted({name for name, _, _ in expected})
                bar = tqdm(
                    unit="B", unit_scale=True, desc=dest.name, disable=not progress, leave=False
                )
                with os.fdopen(fd, "wb") as out, bar:
                    digests = _Transfer(url, dest, out, algorithms, bar).run(timeout, retries)
                bad = _mismatch(digests, expected)
                if bad is not None:
                    raise DownloadError(f"checksum mismatch for {url}: got {bad}; nothing was kept")
                os.replace(part, dest)
            finally:
                part.unlink(missing_ok=True)
    except OSError as err:  # the folder, lock or temp file; network errors are handled below
        raise DownloadError(
            f"cannot write {dest} ({err.strerror or err}); free some space or choose a "
            f"writable folder"
        ) from err
    return dest


class _WriteError(Exception):
    """Writing the temporary file failed (args: the OSError): never retried like the network."""


class _Transfer:
    """One download into ``out``: the bytes kept so far, their running digests, resumes."""

    def __init__(self, url: str, dest: Path, out: BinaryIO, algorithms: list[str], bar: tqdm):
        self.url, self.dest, self.out, self.algorithms, self.bar = url, dest, out, algorithms, bar
        self.hashers = _hashers(algorithms)
        self.size = 0
        self.validator: str | None = None  # ETag/Last-Modified of the first answer: If-Range

    def reset(self) -> None:
        self.out.seek(0)
        self.out.truncate()
        self.hashers = _hashers(self.algorithms)
        self.size = 0
        self.validator = None  # the next answer's, the version now being fetched
        self.bar.reset(total=self.bar.total)

    def run(self, timeout: float, retries: int) -> dict[str, str]:
        """Fetch with resumes; returns the hex digests of what was written."""
        requests = stalled = 0
        while True:
            requests += 1
            before = self.size
            try:
                self._fetch(timeout)
                return {name: hasher.hexdigest() for name, hasher in self.hashers.items()}
            except _WriteError as err:
                raise err.args[0] from None
            except urllib.error.HTTPError as err:
                err.close()
                if err.code == 416 and self.size:  # Range not satisfiable: the file changed
                    self.reset()
                elif not (err.code in (408, 425, 429) or err.code >= 500):
                    raise DownloadError(_failed(self.url, self.dest, _reason(err))) from err
                error: BaseException = err
            except urllib.error.URLError as err:
                if requests == 1:  # never reached the host: offline, DNS, refused
                    raise DownloadError(_failed(self.url, self.dest, _reason(err))) from err
                error = err
            except (OSError, http.client.HTTPException) as err:  # dropped, reset, timed out
                error = err
            stalled = 0 if self.size > before else stalled + 1
            if stalled > retries or requests >= _MAX_REQUESTS:
                detail = f"{_reason(error)}; {requests} attempts, {self.size} bytes kept"
                raise DownloadError(_failed(self.url, self.dest, detail)) from error
            delay = min(RETRY_BACKOFF_S * 2**stalled, _MAX_BACKOFF_S)
            logger.warning(
                "%s: %s at byte %d; resuming in %.1f s", self.url, _reason(error), self.size, delay
            )
            time.sleep(delay)

    def _fetch(self, timeout: float) -> None:
        """One request from byte ``size`` on; raises on a short body, so that run() resumes."""
        headers = {"Range": f"bytes={self.size}-"} if self.size else {}
        if self.size and self.validator:  # a changed file comes back whole (200)
            headers["If-Range"] = self.validator
        request = urllib.request.Request(self.url, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = getattr(response, "status", None)  # None for file:// URLs
            content_range = response.headers.get("Content-Range", "")
            if self.size and not (
                status == 206 and content_range.startswith(f"bytes {self.size}-")
            ):
                self.reset()
                if status == 206:  # some other part of the file: ask for all of it
                    raise http.client.HTTPException(f"unexpected Content-Range {content_range!r}")
                logger.warning("%s: the server does not resume; restarting", self.url)
            header = response.headers.get("Content-Length", "")
            length = int(header) if header.isdigit() else None
            if self.bar.total is None and length is not None:
                self.bar.total = self.size + length
            if self.validator is None:
                etag = response.headers.get("ETag", "")
                weak = etag.startswith("W/")  # If-Range needs a strong validator
                self.validator = (
                    etag if etag and not weak else response.headers.get("Last-Modified")
                )
            got = 0
            # read1: what one recv brings; read(CHUNK) loses a whole chunk when a reset
            # interrupts it, so a server dropping often would never make progress
            for chunk in iter(lambda: response.read1(CHUNK), b""):
                try:
                    self.out.write(chunk)
                except OSError as err:
                    raise _WriteError(err) from None
                for hasher in self.hashers.values():
                    hasher.update(chunk)
                self.size += len(chunk)
                got += len(chunk)
                self.bar.update(len(chunk))
            # http.client returns b"" when the connection closes early: compare with the length
            if length is not None and got < length:
                raise http.client.IncompleteRead(b"", length - got)


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        text = f"HTTP {err.code} {err.reason}"
    elif isinstance(err, http.client.IncompleteRead):
        text = "connection dropped"
    else:
        text = str(getattr(err, "reason", err)) or type(err).__name__
    return " ".join(text.split())  # one line


def _failed(url: str, dest: Path, reason: str) -> str:
    return (
        f"could not download {url} ({reason}); without network, fetch it elsewhere and put it "
        f"at {dest}"
    )
