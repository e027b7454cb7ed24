"""``fgvc serve`` as a user runs it: its own processes on 127.0.0.1, the API over loopback
against ``fgvc predict`` on the same photos, 16 concurrent clients, hostile uploads, the page
in headless Chromium (screenshots kept in test-artifacts/serve/, or $FGVC_TEST_ARTIFACTS),
and a shutdown that leaves no process and no file behind."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgvc.commands.predict import main as predict_main
from fgvc.commands.serve import main as serve_main
from fgvc.deploy.export import export_checkpoint
from tests.serve_helpers import (
    REPO,
    ServerProcess,
    alive,
    descendants,
    free_port,
    http,
    multipart,
    png_bomb,
    truncated_jpeg,
    write_images,
)
from tests.tiny import CLASS_NAMES

ARTIFACTS = Path(os.environ.get("FGVC_TEST_ARTIFACTS", REPO / "test-artifacts")) / "serve"


def run_serve(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    code = serve_main(argv, stderr=err)
    return code, err.getvalue()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_run):
    return export_checkpoint(tiny_run[2], tmp_path_factory.mktemp("serve-bundle") / "bundle")


def test_usage_errors_in_one_line(bundle, tmp_path):
    code, err = run_serve([str(tmp_path), "--port", str(free_port())])
    assert code == 2 and err.count("\n") == 1 and "model.json not found" in err
    code, err = run_serve([str(bundle), "--port", "80"])
    assert code == 2 and "1024 to 65535" in err
    code, err = run_serve([str(bundle), "--host", "localhost"])
    assert code == 2 and "invalid choice" in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, err = run_serve([str(bundle), "--port", str(busy.getsockname()[1])])
    assert code == 2 and "cannot listen" in err and "--port" in err
    assert err.count("\n") == 1


def processes_with(marker: str) -> list[int]:
    """Processes whose environment holds ``marker`` (children inherit it)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_a_model_that_does_not_load_stops_the_server_in_one_line(bundle, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # ONNX loads; the Grad-CAM worker cannot
    marker = f"FGVC_SERVE_TEST_{os.getpid()}_{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": str(REPO), marker: "1"}
    command = [sys.executable, "-m", "fgvc", "serve", str(broken), "--port", str(free_port())]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.endswith("\n") and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("fgvc serve: error: ") and "model.safetensors" in last
    deadline = time.monotonic() + 10
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in processes_with(marker) if alive(pid)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("serve-photos"), count=6)


@pytest.fixture(scope="module")
def expected(bundle, photos):
    """What ``fgvc predict`` says of each photo: {file name: [(class_name, probability)]}."""
    out, err = io.StringIO(), io.StringIO()
    argv = [*map(str, photos), "--model", str(bundle), "--topk", "3", "--format", "json"]
    assert predict_main([*argv, "--no-progress"], stdout=out, stderr=err) == 0, err.getvalue()
    document = json.loads(out.getvalue())
    return {
        Path(p["image"]).name: [(e["class_name"], e["probability"]) for e in p["top"]]
        for p in document["predictions"]
    }


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("serve-run")
    process = ServerProcess(bundle, workdir, "--max-upload-mb", "1", "--max-batch-size", "8")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def assert_same(answer: dict, truth: list[tuple[str, float]]) -> None:
    entries = answer["predictions"]
    assert [e["class_name"] for e in entries] == [name for name, _ in truth]
    got = [e["probability"] for e in entries]
    np.testing.assert_allclose(got, [p for _, p in truth], rtol=0, atol=1e-5)


def predict(server: ServerProcess, photo: Path, raw: bool = False, query: str = "top_k=3"):
    data = photo.read_bytes()
    body, headers = (data, {}) if raw else multipart("image", photo.name, data)
    return http("POST", f"{server.url}/predict?{query}", body, headers)


@pytest.mark.slow
def test_health_info_and_answers_as_fgvc_predict(server, photos, expected):
    assert http("GET", f"{server.url}/health")[:2] == (200, b"ok")
    info = json.loads(http("GET", f"{server.url}/info")[1])["model"]
    assert info["class_names"] == CLASS_NAMES and info["backend"] == "onnx"
    for photo in photos:
        for raw in (False, True):
            status, body, headers = predict(server, photo, raw)
            assert status == 200 and headers["content-type"] == "application/json"
            assert_same(json.loads(body), expected[photo.name])
    status, body, _ = predict(server, photos[0], query="")  # default top-5: all 3 classes
    assert status == 200 and len(json.loads(body)["predictions"]) == len(CLASS_NAMES)


@pytest.mark.slow
def test_sixteen_concurrent_clients(server, photos, expected):
    jobs = [photos[i % len(photos)] for i in range(64)]
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda p: predict(server, p, raw=hash(p) % 2 == 0), jobs))
    elapsed = time.monotonic() - started
    assert elapsed < 120, f"64 requests from 16 clients took {elapsed:.0f} s"
    for photo, (status, body, _) in zip(jobs, answers):
        assert status == 200, body
        assert_same(json.loads(body), expected[photo.name])


def one_line_error(answer: tuple[int, bytes, dict], status: int, *words: str) -> None:
    code, body, headers = answer
    assert code == status, body
    assert headers["content-type"] == "application/json"
    line = json.loads(body)["error"]
    assert "\n" not in line and "Traceback" not in line
    for word in words:
        assert word in line, line


@pytest.mark.slow
def test_bad_uploads_get_4xx_and_the_server_stays_healthy(server, photos, expected):
    url = f"{server.url}/predict"
    one_line_error(http("POST", url, b"not an image"), 400, "cannot decode")
    one_line_error(http("POST", url, *multipart("image", "cut.jpg", truncated_jpeg())), 400)
    one_line_error(http("POST", url, *multipart("photo", "a.png", b"x")), 400, "'image'")
    one_line_error(http("POST", url, png_bomb()), 413, "decompression")
    big = photos[0].read_bytes() + b"\x00" * (2**20)  # over --max-upload-mb 1
    one_line_error(http("POST", url, big), 413, "1,048,576 bytes")
    one_line_error(http("POST", f"{url}?top_k=0", photos[0].read_bytes()), 400, "top_k")
    one_line_error(http("POST", f"{server.url}/explain?class=9", b"x"), 400, "0 to 2")
    one_line_error(http("GET", f"{server.url}/nothing"), 404)
    assert http("GET", f"{server.url}/health")[:2] == (200, b"ok")
    status, body, _ = predict(server, photos[1])
    assert status == 200 and server.process.poll() is None
    assert_same(json.loads(body), expected[photos[1].name])


@pytest.mark.slow
def test_explain_over_http(server, photos, expected):
    status, body, _ = http("POST", f"{server.url}/explain", photos[2].read_bytes())
    assert status == 200, body
    answer = json.loads(body)
    assert answer["class_name"] == expected[photos[2].name][0][0]  # fgvc predict's top-1
    overlay = Image.open(io.BytesIO(base64.b64decode(answer["overlay"])))
    assert overlay.format == "PNG" and overlay.size == (32, 32) and overlay.mode == "RGB"


def chromium() -> str:
    """The system's Chromium; the test fails (never skips) without it."""
    found = os.environ.get("FGVC_CHROMIUM") or next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    if not found:
        pytest.fail(
            "no Chromium for the page test: apt-get install -y chromium (or set FGVC_CHROMIUM)",
            pytrace=False,
        )
    return found


@pytest.mark.slow
def test_page_in_headless_chromium(server, photos, expected, tmp_path):
    executable = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[dev]'", pytrace=False)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    photo = photos[1]
    status, body, _ = predict(server, photo, query="top_k=5")
    api = json.loads(body)["predictions"]
    not_image = tmp_path / "notes.png"
    not_image.write_bytes(b"these are notes, not a photo")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 1100})
            page.goto(f"{server.url}/")
            page.wait_for_function("document.getElementById('model-name').textContent !== ''")
            assert page.inner_text("#health") == "ready"
            # the file input is found by its label, as a screen reader announces it
            page.get_by_label("Choose a photo, or drop one here").set_input_files(str(photo))
            page.wait_for_selector("body[data-state=done]", timeout=60_000)
            shown = page.eval_on_selector_all(
                "#predictions li",
                "items => items.map(li => [li.dataset.className, Number(li.dataset.probability)])",
            )
            assert [name for name, _ in shown] == [e["class_name"] for e in api]
            assert [p for _, p in shown] == [e["probability"] for e in api]
            first = page.inner_text("#predictions li:first-child .class-name")
            assert first == api[0]["class_name"]
            loaded = page.eval_on_selector("#overlay", "img => img.complete && img.naturalWidth")
            assert loaded == 32
            assert api[0]["class_name"] in page.get_attribute("#overlay", "alt")
            page.screenshot(path=str(ARTIFACTS / "page-prediction.png"), full_page=True)

            page.get_by_label("Choose a photo, or drop one here").set_input_files(str(not_image))
            page.wait_for_selector("body[data-state=error]", timeout=60_000)
            alert = page.get_by_role("alert").inner_text()
            assert "notes.png" in alert and "cannot decode" in alert
            assert page.eval_on_selector_all("#predictions li", "items => items.length") == 0
            page.screenshot(path=str(ARTIFACTS / "page-error.png"), full_page=True)
        finally:
            browser.close()
    for name in ("page-prediction.png", "page-error.png"):
        assert Image.open(ARTIFACTS / name).size[0] == 1000


@pytest.mark.slow
def test_shutdown_leaves_no_process_and_no_file(server):
    """Last in this file: stops the module's server."""
    children = server.children
    # this process, LitServe's two model workers and two HTTP servers, its queue manager
    # and multiprocessing's resource tracker
    assert len(children) >= 5, children
    assert server.stop(signal.SIGTERM, timeout=60) == 0
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if alive(pid)]
    assert not descendants(server.process.pid)
    log = server.output()
    assert "fgvc serve: stopped" in log and "Traceback" not in log, log
    # no temporary file left; ONNX Runtime keeps one file of its own there (.ses: a
    # session id it reuses, as every fgvc predict run does), written once
    assert [p.name for p in server.tmp.iterdir() if p.name != ".ses"] == []
    assert sorted(p.name for p in server.workdir.iterdir()) == ["server.log", "tmp"]
    with socket.socket() as probe:  # the port is free again (for a server: as uvicorn binds)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", server.port))


@pytest.mark.slow
def test_a_worker_that_dies_stops_the_server(bundle, tmp_path):
    server = ServerProcess(bundle, tmp_path, "--no-explain")
    try:
        server.wait_ready()
        workers = [
            pid
            for pid in server.children
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(workers) == 1  # --no-explain: the /predict worker only
        os.kill(workers[0], signal.SIGKILL)  # as the out-of-memory killer would
        assert server.process.wait(60) == 1
    finally:
        server.stop()
    lines = server.output().splitlines()
    assert lines[-1].startswith("fgvc serve: error: a model worker stopped while serving")
    assert "exit code -9" in lines[-1] and "Traceback" not in server.output()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in server.children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in server.children if alive(pid)]
