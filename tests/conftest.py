"""Shared fixtures: W&B kept inside the test session's tmp, a tiny trained run, a loopback
HTTP server."""

from __future__ import annotations

import functools
import http.server
import threading
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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Path, Path]:
    """(root, module in eval mode, best checkpoint, run folder) of :func:`tests.tiny.make_run`."""
    from tests.tiny import make_run

    root = tmp_path_factory.mktemp("tiny-run")
    module, ckpt, run = make_run(root)
    return root, module, ckpt, run


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
