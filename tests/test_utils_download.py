"""fgvc.utils.download: resumed and retried downloads against misbehaving loopback servers,
concurrent downloads by real processes, URL overrides."""

from __future__ import annotations

import hashlib
import io
import os
import random
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

import fgvc.utils.download as dl
from fgvc.utils.download import DownloadError, download_url, resolve_url

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = random.Random(0).randbytes(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def _quick_backoff(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_BACKOFF_S", 0.01, raising=False)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _range_start(headers: dict[str, str]) -> int:
    value = headers["Range"]
    assert value.startswith("bytes=") and value.endswith("-"), value
    return int(value[len("bytes=") : -1])


# ---------------------------------------------------------------------------------------------
# resume and retry


@pytest.mark.parametrize("drop_mode", ["eof", "reset"])
def test_dropped_connection_resumes_with_range(flaky_server, tmp_path, drop_mode):
    flaky_server.files["/w.bin"] = PAYLOAD
    flaky_server.drop_after, flaky_server.drop_mode = 100_000, drop_mode
    dest = tmp_path / "cache" / "w.bin"
    assert download_url(f"{flaky_server.base_url}/w.bin", dest, sha256=SHA, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD  # and the sha256 of both parts together matched
    first, second = flaky_server.requests
    assert "Range" not in first
    start = _range_start(second)
    assert 0 < start <= 100_000
    if drop_mode == "eof":  # every byte that arrived was kept
        assert start == 100_000
    assert second["If-Range"] == '"v1"'  # a changed file would come back whole
    assert _names(dest.parent) == ["w.bin"]


def test_server_ignoring_range_restarts_from_zero(flaky_server, tmp_path):
    flaky_server.files["/w.bin"] = PAYLOAD
    flaky_server.drop_after, flaky_server.honour_range = 100_000, False
    dest = tmp_path / "w.bin"
    download_url(f"{flaky_server.base_url}/w.bin", dest, md5=hashlib.md5(PAYLOAD).hexdigest())
    assert dest.read_bytes() == PAYLOAD
    assert len(flaky_server.requests) == 2
    assert _range_start(flaky_server.requests[1]) == 100_000  # asked, got 200 and all bytes
    assert _names(tmp_path) == ["w.bin"]


def test_retries_are_capped_when_nothing_arrives(flaky_server, tmp_path):
    flaky_server.files["/w.bin"] = PAYLOAD
    flaky_server.drop_after, flaky_server.drops = 0, 100
    dest = tmp_path / "w.bin"
    url = f"{flaky_server.base_url}/w.bin"
    with pytest.raises(DownloadError) as info:
        download_url(url, dest, sha256=SHA, progress=False, retries=2)
    message = str(info.value)
    assert len(flaky_server.requests) == 3
    assert "\n" not in message and url in message and str(dest) in message
    assert "connection dropped; 3 attempts" in message
    assert _names(tmp_path) == []


def test_attempts_that_bring_bytes_do_not_use_up_the_retries(flaky_server, tmp_path):
    """A server dropping every 10 kB still delivers the file with retries=1."""
    data = PAYLOAD[:50_000]
    flaky_server.files["/w.bin"] = data
    flaky_server.drop_after, flaky_server.drops = 10_000, 4
    dest = tmp_path / "w.bin"
    sha = hashlib.sha256(data).hexdigest()
    download_url(f"{flaky_server.base_url}/w.bin", dest, sha256=sha, progress=False, retries=1)
    assert dest.read_bytes() == data
    assert [_range_start(h) for h in flaky_server.requests[1:]] == [10_000, 20_000, 30_000, 40_000]


def test_server_errors_are_retried_client_errors_are_not(flaky_server, tmp_path):
    flaky_server.files["/w.bin"] = PAYLOAD
    flaky_server.errors = [503]
    download_url(f"{flaky_server.base_url}/w.bin", tmp_path / "w.bin", sha256=SHA, progress=False)
    assert (tmp_path / "w.bin").read_bytes() == PAYLOAD
    assert len(flaky_server.requests) == 2
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_url(f"{flaky_server.base_url}/gone.bin", tmp_path / "gone.bin", progress=False)
    assert len(flaky_server.requests) == 3  # one request, no retry
    assert _names(tmp_path) == ["w.bin"]


def test_unreachable_host_fails_at_once_and_leaves_nothing(tmp_path, dead_url, monkeypatch):
    """One attempt and no back-off (counted, not timed)."""
    attempts, waits = [], []
    real_urlopen = dl.urllib.request.urlopen

    def urlopen(*args, **kwargs):
        attempts.append(args[0].full_url)
        return real_urlopen(*args, **kwargs)

    monkeypatch.setattr(dl.urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(dl.time, "sleep", waits.append)
    dest = tmp_path / "cache" / "missing.pth"
    with pytest.raises(DownloadError) as info:
        download_url(dead_url, dest, sha256_prefix="12345678", progress=False)
    assert attempts == [dead_url] and waits == []
    message = str(info.value)
    assert "\n" not in message and dead_url in message and f"put it at {dest}" in message
    assert _names(dest.parent) == []


def test_wrong_existing_file_is_left_alone(flaky_server, tmp_path):
    flaky_server.files["/w.bin"] = PAYLOAD
    dest = tmp_path / "w.bin"
    dest.write_bytes(b"the user's file")
    with pytest.raises(DownloadError, match="exists but"):
        download_url(f"{flaky_server.base_url}/w.bin", dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == b"the user's file"
    assert flaky_server.requests == []


def test_partial_files_and_lock_of_a_killed_run_are_cleaned_up(flaky_server, tmp_path):
    flaky_server.files["/w.bin"] = PAYLOAD
    (tmp_path / ".w.bin.4242.deadbeef.part").write_bytes(PAYLOAD[:1000])
    (tmp_path / "w.bin.lock").touch()  # flock died with its process; the file stays
    (tmp_path / ".other.bin.4242.deadbeef.part").write_bytes(b"not ours")
    download_url(f"{flaky_server.base_url}/w.bin", tmp_path / "w.bin", sha256=SHA, progress=False)
    assert _names(tmp_path) == [".other.bin.4242.deadbeef.part", "w.bin"]


# ---------------------------------------------------------------------------------------------
# concurrent processes (DDP ranks on a first launch, two users sharing a cache)

_START_TOGETHER = """
import pathlib, sys, time
sync = pathlib.Path(sys.argv[1])
(sync / ("ready-" + sys.argv[2])).touch()
deadline = time.monotonic() + 60
while not (sync / "go").exists():
    if time.monotonic() > deadline:
        sys.exit("no start signal")
    time.sleep(0.002)
"""


def _run_together(tmp_path: Path, imports: str, action: str, args: list[str], n: int = 4):
    """Run ``imports``, then wait until all ``n`` processes are ready, then ``action``;
    returns the (returncode, stderr) of each."""
    sync = tmp_path / "sync"
    sync.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = imports + _START_TOGETHER + action
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(sync), str(rank), *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(n)
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(sync.glob("ready-*"))) < n and time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.01)
        (sync / "go").touch()
        errors = [p.communicate(timeout=120)[1] for p in procs]
        return [(p.returncode, err) for p, err in zip(procs, errors)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def test_four_processes_download_one_file_once(flaky_server, tmp_path):
    flaky_server.files["/w.bin"] = PAYLOAD
    flaky_server.delay_s = 0.3  # all four would be mid-download together without the lock
    dest = tmp_path / "cache" / "w.bin"
    results = _run_together(
        tmp_path,
        "from fgvc.utils.download import download_url\n",
        "download_url(sys.argv[3], sys.argv[4], sha256=sys.argv[5], progress=False)\n",
        [f"{flaky_server.base_url}/w.bin", str(dest), SHA],
    )
    assert [rc for rc, _ in results] == [0] * 4, [err for _, err in results]
    assert dest.read_bytes() == PAYLOAD
    assert len(flaky_server.requests) == 1  # the others waited, then used the file
    assert _names(dest.parent) == ["w.bin"]  # no temp or lock files


def _tiny_dataset_archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("TINY/a.txt", b"alpha\n"), ("TINY/sub/b.txt", b"beta\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.slow  # four interpreters importing fgvc.data: a few seconds on two cores
def test_four_processes_download_one_dataset_once(flaky_server, tmp_path):
    archive = _tiny_dataset_archive()
    flaky_server.files["/tiny.tgz"] = archive
    flaky_server.delay_s = 0.3
    root = tmp_path / "data"
    results = _run_together(
        tmp_path,
        "from fgvc.data.download import DatasetSource, download_dataset\n",
        "source = DatasetSource(sys.argv[3], 'tiny.tgz', 'TINY', sha256=sys.argv[5])\n"
        "print(download_dataset('tiny', sys.argv[4], {'tiny': source}, progress=False))\n",
        [f"{flaky_server.base_url}/tiny.tgz", str(root), hashlib.sha256(archive).hexdigest()],
    )
    assert [rc for rc, _ in results] == [0] * 4, [err for _, err in results]
    assert len(flaky_server.requests) == 1
    assert _names(root) == ["TINY"]  # no archive, lock, temp or staging folder
    assert (root / "TINY" / "a.txt").read_bytes() == b"alpha\n"
    assert (root / "TINY" / "sub" / "b.txt").read_bytes() == b"beta\n"


# ---------------------------------------------------------------------------------------------
# URL overrides


def test_resolve_url_precedence(monkeypatch):
    default = "http://origin.example/files/CUB_200_2011.tgz"
    assert resolve_url("cub", default, "CUB_200_2011.tgz") == default
    monkeypatch.setenv("FGVC_MIRROR", "file:///shared/mirror")
    assert resolve_url("cub", default, "CUB_200_2011.tgz") == (
        "file:///shared/mirror/CUB_200_2011.tgz"
    )
    monkeypatch.setenv("FGVC_CUB_URL", "http://lab.example/datasets/")  # a folder
    assert resolve_url("cub", default, "CUB_200_2011.tgz") == (
        "http://lab.example/datasets/CUB_200_2011.tgz"
    )
    monkeypatch.setenv("FGVC_CUB_URL", "http://lab.example/cub.tgz")  # a file
    assert resolve_url("cub", default, "CUB_200_2011.tgz") == "http://lab.example/cub.tgz"
    assert resolve_url("isqrt-imagenet", "x", "m.pth") == "file:///shared/mirror/m.pth"


def test_dataset_url_override_and_offline_message(flaky_server, tmp_path, monkeypatch, dead_url):
    from fgvc.data.download import DatasetSource, download_dataset

    archive = _tiny_dataset_archive()
    source = DatasetSource(dead_url, "tiny.tgz", "TINY", sha256=hashlib.sha256(archive).hexdigest())
    root = tmp_path / "data"
    with pytest.raises(DownloadError) as info:
        download_dataset("tiny", root, {"tiny": source}, progress=False)
    message = str(info.value)
    assert "\n" not in message and dead_url in message
    assert "FGVC_TINY_URL" in message and "FGVC_MIRROR" in message
    assert _names(root) == []
    # a mirror named by the environment; a staging folder a killed run left is cleared
    flaky_server.files["/mirror/tiny.tgz"] = archive
    monkeypatch.setenv("FGVC_TINY_URL", f"{flaky_server.base_url}/mirror/")
    (root / ".TINY.staging-k1lled").mkdir()
    assert download_dataset("tiny", root, {"tiny": source}, progress=False) == root / "TINY"
    assert _names(root) == ["TINY"]
    assert (root / "TINY" / "a.txt").read_bytes() == b"alpha\n"


def test_file_urls_download_from_a_shared_folder(tmp_path):
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "w.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "cache" / "w.bin"
    download_url((tmp_path / "mirror" / "w.bin").as_uri(), dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD


# ---------------------------------------------------------------------------------------------


def test_mirror_variables_take_urls_or_absolute_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("FGVC_MIRROR", str(tmp_path) + "/")
    assert resolve_url("cub", "https://x/y.tgz", "y.tgz") == (tmp_path / "y.tgz").as_uri()
    monkeypatch.setenv("FGVC_MIRROR", "relative/folder")
    with pytest.raises(DownloadError, match="FGVC_MIRROR='relative/folder' is neither"):
        resolve_url("cub", "https://x/y.tgz", "y.tgz")


# ---------------------------------------------------------------------------------------------
# what a resumed download accepts


def test_a_file_changed_on_the_server_is_downloaded_again_whole(flaky_server, tmp_path):
    """Dropped at 100 kB, then the file changes (new ETag): the resume's If-Range names the
    old version, the server answers 200 with the new file, and only the new file is kept
    (appending it to the old part would be neither). That answer is dropped too: the next
    resume names the new version, and continues it."""
    new = random.Random(1).randbytes(len(PAYLOAD))
    flaky_server.files["/w.bin"] = PAYLOAD
    flaky_server.changes["/w.bin"] = (new, '"v2"')
    flaky_server.drop_after, flaky_server.drops = 100_000, 2
    dest = tmp_path / "w.bin"
    sha = hashlib.sha256(new).hexdigest()
    download_url(f"{flaky_server.base_url}/w.bin", dest, sha256=sha, progress=False)
    assert dest.read_bytes() == new
    first, second, third = flaky_server.requests
    assert _range_start(second) == 100_000 and second["If-Range"] == '"v1"'
    assert _range_start(third) == 100_000 and third["If-Range"] == '"v2"'
    assert _names(tmp_path) == ["w.bin"]


def test_a_part_that_was_not_asked_for_is_not_appended(flaky_server, tmp_path):
    """Asked for bytes 100000-, the server answers 206 with bytes 0-: the part is dropped
    and the file fetched again from the start."""
    flaky_server.files["/w.bin"] = PAYLOAD
    flaky_server.drop_after, flaky_server.wrong_range = 100_000, True
    dest = tmp_path / "w.bin"
    download_url(f"{flaky_server.base_url}/w.bin", dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert ["Range" in h for h in flaky_server.requests] == [False, True, False]
    assert _names(tmp_path) == ["w.bin"]


def test_a_file_that_shrank_below_the_part_starts_over(flaky_server, tmp_path):
    """No validator (no ETag): the resume asks for bytes 100000- of a file now shorter
    than that; the server's 416 restarts the download, which keeps the new file."""
    short = PAYLOAD[:50_000][::-1]
    flaky_server.etag = None
    flaky_server.files["/w.bin"] = PAYLOAD
    flaky_server.changes["/w.bin"] = (short, None)
    flaky_server.drop_after = 100_000
    dest = tmp_path / "w.bin"
    sha = hashlib.sha256(short).hexdigest()
    download_url(f"{flaky_server.base_url}/w.bin", dest, sha256=sha, progress=False)
    assert dest.read_bytes() == short
    assert [_range_start(h) if "Range" in h else 0 for h in flaky_server.requests] == [
        0,
        100_000,  # answered 416
        0,
    ]
    assert "If-Range" not in flaky_server.requests[1]
    assert _names(tmp_path) == ["w.bin"]


# ---------------------------------------------------------------------------------------------
# a download waiting for another one's lock (threads: flock is per open file, so they
# contend like processes)


@pytest.fixture
def lock_waits(monkeypatch):
    """An Event set when a download starts waiting for the lock another holder has."""
    import logging

    waiting = threading.Event()

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("waiting for another process"):
                waiting.set()

    logger = logging.getLogger("fgvc.utils.locks")
    handler = Handler(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield waiting
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("holder_leaves", ["the file", "a wrong file", "a partial file"])
def test_a_download_waiting_for_the_lock_takes_only_a_verified_file(
    flaky_server, tmp_path, lock_waits, holder_leaves
):
    """Another holder of ``<dest>.lock`` finishes while this download waits: its verified
    file is used as it is (no request); a file with another checksum is refused and left
    alone; a holder that left only its partial file (a killed run) is replaced by a download
    of this one's own, which removes that part."""
    from fgvc.utils.locks import file_lock

    flaky_server.files["/w.bin"] = PAYLOAD
    dest = tmp_path / "w.bin"
    outcome: dict[str, object] = {}

    def download() -> None:
        try:
            outcome["path"] = download_url(
                f"{flaky_server.base_url}/w.bin", dest, sha256=SHA, progress=False
            )
        except DownloadError as err:
            outcome["error"] = err

    with file_lock(dest.with_name("w.bin.lock")):
        waiter = threading.Thread(target=download)
        waiter.start()
        # a guard against a hang, not a race: the waiter logs before it blocks
        assert lock_waits.wait(timeout=120), "the download did not wait for the lock"
        if holder_leaves == "the file":
            dest.write_bytes(PAYLOAD)
        elif holder_leaves == "a wrong file":
            dest.write_bytes(PAYLOAD[::-1])
        else:
            (tmp_path / ".w.bin.4242.deadbeef.part").write_bytes(PAYLOAD[:1000])
    waiter.join(timeout=120)
    assert not waiter.is_alive()
    if holder_leaves == "a wrong file":
        assert "exists but has sha256" in str(outcome["error"])
        assert dest.read_bytes() == PAYLOAD[::-1] and flaky_server.requests == []
    else:
        assert outcome == {"path": dest} and dest.read_bytes() == PAYLOAD
        assert len(flaky_server.requests) == (holder_leaves == "a partial file")
    assert _names(tmp_path) == ["w.bin"]
