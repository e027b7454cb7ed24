"""Shared fixtures: W&B kept inside the test session's tmp, a tiny trained run, loopback
HTTP servers (a plain one and a misbehaving one)."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session", autouse=True)
def _wandb_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """W&B's own folders under the session's tmp: offline runs stage a copy of every logged
    artifact (checkpoints, exports) in its data dir, which nothing would ever delete."""
    root = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as mp:  # subprocesses inherit os.environ
        for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
            mp.setenv(var, str(root / var.lower()))
        yield


@pytest.fixture(autouse=True)
def _no_download_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """Download URL overrides (FGVC_MIRROR, FGVC_<NAME>_URL) of the caller's shell stay out."""
    for var in list(os.environ):
        if var == "FGVC_MIRROR" or (var.startswith("FGVC_") and var.endswith("_URL")):
            monkeypatch.delenv(var)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Path, Path]:
    """(root, module in eval mode, best checkpoint, run folder) of :func:`tests.tiny.make_run`."""
    from tests.tiny import make_run

    root = tmp_path_factory.mktemp("tiny-run")
    module, ckpt, run = make_run(root)
    return root, module, ckpt, run


@pytest.fixture(scope="session")
def all_formats_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_run) -> Path:
    """The tiny run's best checkpoint exported in every format of the table (read-only:
    copy it before changing it)."""
    from fgvc.deploy.export import export_checkpoint
    from fgvc.deploy.formats import NAMES

    _, _, ckpt, _ = tiny_run
    return export_checkpoint(ckpt, tmp_path_factory.mktemp("all-formats") / "bundle", NAMES)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Serve a fresh folder on 127.0.0.1; yields (base_url, folder to put files in)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def dead_url() -> str:
    """A loopback URL on which nothing listens (stands in for 'offline')."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/missing.pth"


@dataclasses.dataclass
class FlakyServer:
    """A loopback server for ``files`` (URL path -> bytes) that misbehaves on demand.

    The first ``drops`` answers stop after ``drop_after`` body bytes: the connection closes
    (``drop_mode="eof"``) or is reset (``"reset"``). ``errors`` are HTTP statuses answered to
    the first requests, in order. ``honour_range=False`` answers every Range request with the
    whole file (200). ``delay_s`` waits before each body. Every request's headers are kept in
    ``requests``. ``changes`` (URL path -> (bytes, ETag or None)) replaces a file once its
    first request was answered: the file changed on the server during a download. An
    ``If-Range`` naming another ETag than the current one is answered with the whole file
    (RFC 9110). ``wrong_range`` answers the first Range request with 206 and the whole file
    under ``Content-Range: bytes 0-...``: a part the client did not ask for.
    """

    base_url: str = ""
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)
    drop_after: int | None = None
    drops: int = 1
    drop_mode: str = "eof"
    honour_range: bool = True
    delay_s: float = 0.0
    etag: str | None = '"v1"'
    errors: list[int] = dataclasses.field(default_factory=list)
    changes: dict[str, tuple[bytes, str | None]] = dataclasses.field(default_factory=dict)
    wrong_range: bool = False
    requests: list[dict[str, str]] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    def do_GET(self):  # noqa: N802 - stdlib name
        state: FlakyServer = self.server.state
        with state.lock:
            state.requests.append(dict(self.headers))
            error = state.errors.pop(0) if state.errors else None
            drop = state.drop_after is not None and state.drops > 0
            state.drops -= drop
            body, etag = state.files.get(self.path), state.etag
            if self.path in state.changes:  # this answer is the old file's, the next the new
                state.files[self.path], state.etag = state.changes.pop(self.path)
            wrong_range = state.wrong_range and "Range" in self.headers
            state.wrong_range &= not wrong_range
        if error is not None or body is None:
            self.send_error(error or 404)
            return
        start = 0
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        if wanted and if_range is not None and if_range != etag:
            wanted = None  # another version than the client's part: all of it
        if wanted and wrong_range:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 0-{len(body) - 1}/{len(body)}")
        elif wanted and state.honour_range:
            start = int(wanted.group(1))
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        if etag:
            self.send_header("ETag", etag)
        if state.honour_range:
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        time.sleep(state.delay_s)
        if not drop:
            self.wfile.write(body[start:])
            return
        self.wfile.write(body[start : start + state.drop_after])
        self.wfile.flush()
        if state.drop_mode == "reset":  # close now with linger 0: RST instead of FIN
            linger = struct.pack("ii", 1, 0)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            self.rfile.close()  # its reference would keep the socket open
            self.connection.close()
        self.close_connection = True


@pytest.fixture
def flaky_server() -> Iterator[FlakyServer]:
    """A :class:`FlakyServer` on 127.0.0.1 (HTTP/1.0: one request per connection)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyHandler)
    server.daemon_threads = True
    state = FlakyServer(base_url=f"http://127.0.0.1:{server.server_address[1]}")
    server.state = state
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
