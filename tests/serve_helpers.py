"""``fgvc serve`` in a child process, images for it, and hostile uploads: shared by
tests/test_deploy_serve.py, tests/test_commands_serve.py and benchmarks/serve.py."""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port nothing listens on now (LitServe takes 1024 to 65535; the kernel picks there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_images(folder: Path, count: int = 6, seed: int = 0) -> list[Path]:
    """Photos of several sizes and formats (PNG, JPEG, WebP), some smaller than the crop."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        h, w = int(rng.integers(24, 90)), int(rng.integers(24, 90))
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        suffix = (".png", ".jpg", ".webp")[i % 3]
        path = folder / f"photo {i}{suffix}"
        image.save(path, quality=92) if suffix != ".png" else image.save(path)
        paths.append(path)
    return paths


def png_bomb(side: int = 30000) -> bytes:
    """A PNG of a few hundred bytes whose header claims ``side`` x ``side`` RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * side) * 4, 9)  # 4 rows; the decoder needs more
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    """A JPEG cut in the middle of its scan data."""
    buffer = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    data = buffer.getvalue()
    return data[: len(data) // 2]


def strip_png() -> bytes:
    """A 5000 x 2 PNG: a strip, not a photograph."""
    buffer = io.BytesIO()
    Image.new("RGB", (5000, 2)).save(buffer, "PNG")
    return buffer.getvalue()


def http(
    method: str,
    url: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> tuple[int, bytes, dict[str, str]]:
    """``(status, body, headers)``; HTTP errors are answers too."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body with one file field (what a browser's form sends)."""
    boundary = "fgvc-test-boundary-7d1b"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class ServerProcess:
    """``python -m fgvc serve BUNDLE --port <free> ARGS`` in a child process, with its own
    temporary folder (``tmp``) so that nothing it leaves there goes unseen."""

    def __init__(self, bundle: Path, workdir: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.tmp = workdir / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "server.log"
        env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(self.tmp)}
        command = [sys.executable, "-m", "fgvc", "serve", str(bundle), "--port", str(self.port)]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [*command, *args], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.children: set[int] = set()

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"fgvc serve exited ({self.process.returncode}): {self.output()}"
                )
            try:
                status, body, _ = http("GET", f"{self.url}/health", timeout=5)
                if status == 200 and body == b"ok":
                    self.children = descendants(self.process.pid)
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise AssertionError(f"fgvc serve not healthy after {timeout} s: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signal the server (only its main process, as a process manager does); its exit
        code. Killed, with its children, if it does not stop within ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                for pid in descendants(self.process.pid) | {self.process.pid}:
                    os.kill(pid, signal.SIGKILL)
                self.process.wait(10)
                raise
        return self.process.returncode
