"""fgvc.deploy.serve in this process: the upload gate (limits, multipart / raw bodies,
hostile images, one-line 4xx errors), the model APIs against fgvc predict / fgvc explain on
the same files, and the server's page and error routes. The server over HTTP, in its own
processes: tests/test_commands_serve.py."""

from __future__ import annotations

import base64
import io
import json
import queue
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from fgvc.deploy.bundle import load
from fgvc.deploy.explain import explain_images
from fgvc.deploy.export import export_checkpoint
from fgvc.deploy.predict import load_predictor, predict_files
from fgvc.deploy.serve.apis import ExplainAPI, PredictAPI, decode_crop, encode_crop
from fgvc.deploy.serve.server import STATIC, FgvcServer
from fgvc.deploy.serve.uploads import DRAIN_BYTES, UploadGate, send_json
from tests.serve_helpers import multipart, png_bomb, strip_png, truncated_jpeg, write_images
from tests.tiny import CLASS_NAMES


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_run):
    """(bundle folder, photos) of the tiny trained model."""
    root = tmp_path_factory.mktemp("serve")
    bundle = export_checkpoint(tiny_run[2], root / "bundle")
    return bundle, write_images(root / "photos")


async def _echo(scope, receive, send):
    """What the model worker would receive: the body and its content type."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = dict(scope["headers"])
    await send_json(
        send,
        200,
        {
            "payload": json.loads(body),
            "content_type": headers[b"content-type"].decode(),
            "content_length": int(headers[b"content-length"]),
            "length": len(body),
        },
    )


@pytest.fixture(scope="module")
def gate(setup):
    bundle, _ = setup
    prep = load(bundle).preprocessing
    return TestClient(UploadGate(_echo, prep, CLASS_NAMES, max_bytes=64 * 1024)), prep


def assert_one_line_error(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert list(document) == ["error"]
    line = document["error"]
    assert line and "\n" not in line and "Traceback" not in line
    for word in words:
        assert word in line, line
    return line


def test_multipart_and_raw_uploads_become_the_evaluation_crop(setup, gate):
    _, photos = setup
    client, prep = gate
    for photo in photos:
        data = photo.read_bytes()
        expected = prep.load(photo)  # the file read from disk, as fgvc predict reads it
        body, headers = multipart("image", photo.name, data)
        answers = [
            client.post("/predict", content=body, headers=headers),
            client.post("/predict?top_k=2", content=data),  # raw, no content type
            # curl --data-binary says urlencoded: still the raw image
            client.post(
                "/explain?class=1&method=gradcam%2B%2B",
                content=data,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ),
        ]
        for response in answers:
            assert response.status_code == 200, response.text
            echoed = response.json()
            assert echoed["content_type"] == "application/json"
            assert echoed["content_length"] == echoed["length"]
            assert decode_crop(echoed["payload"]).equal(expected)
        first, second, third = (r.json()["payload"] for r in answers)
        assert first["top_k"] == 3  # default 5, at most the number of classes
        assert second["top_k"] == 2
        assert first["name"] == photo.name and second["name"] == "upload"
        assert third["class_index"] == 1 and third["method"] == "gradcam++"


def test_explain_class_by_name_and_default(gate):
    client, _ = gate
    data = truncated_jpeg()  # not decoded: the query is refused first
    name = CLASS_NAMES[2]
    photo = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 10, 10)).save(photo, "PNG")
    answer = client.post("/explain", params={"class": name}, content=photo.getvalue())
    assert answer.json()["payload"]["class_index"] == 2
    answer = client.post("/explain", content=photo.getvalue())
    payload = answer.json()["payload"]
    assert payload["class_index"] is None and payload["method"] == "gradcam"
    bad = client.post("/explain?class=nope", content=data)
    assert_one_line_error(bad, 400, "nope", "not a class", "0 to 2")
    for index in ("3", "%C2%B2", "-1"):
        assert_one_line_error(client.post(f"/explain?class={index}", content=data), 400)
    by_index = client.post("/explain?class=%201", content=photo.getvalue())
    assert by_index.json()["payload"]["class_index"] == 1


def test_bad_uploads_are_refused_in_one_line(gate):
    client, _ = gate
    photo = io.BytesIO()
    Image.new("RGB", (40, 40)).save(photo, "PNG")
    body, headers = multipart("file", "x.png", photo.getvalue())
    assert_one_line_error(client.post("/predict", content=body, headers=headers), 400, "'image'")
    text_body = b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\nhello\r\n--b--\r\n'
    text = client.post(
        "/predict", content=text_body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert_one_line_error(text, 400, "text, not a file")
    assert_one_line_error(client.post("/predict", content=b""), 400, "empty request")
    not_image = assert_one_line_error(
        client.post("/predict", content=b"hello, not an image"), 400, "cannot decode", "upload"
    )
    assert not re.search(r"0x[0-9a-f]+", not_image)  # no buffer address from the library
    body, headers = multipart("image", "cut.jpg", truncated_jpeg())
    truncated = client.post("/predict", content=body, headers=headers)
    assert_one_line_error(truncated, 400, "cut.jpg")
    assert_one_line_error(client.post("/predict", content=strip_png()), 400, "5000x2")
    bomb = client.post("/predict", content=png_bomb())
    assert_one_line_error(bomb, 413, "30000x30000", "decompression")
    too_big = b"\xff" * (64 * 1024 + 1)
    assert_one_line_error(client.post("/predict", content=too_big), 413, "65,536 bytes")

    def chunks():  # no Content-Length: counted while read
        for _ in range(80):
            yield b"\x00" * 1024

    assert_one_line_error(client.post("/predict", content=chunks()), 413, "limit")
    # far beyond the limit: answered without reading it all, and the connection ends
    huge = client.post("/predict", content=b"\x00" * (64 * 1024 + DRAIN_BYTES + 1))
    assert_one_line_error(huge, 413, "limit")
    assert huge.headers["connection"] == "close"
    for query in ("top_k=0", "top_k=-1", "top_k=two", "top_k=", "top_k=%C2%B2"):
        assert_one_line_error(client.post(f"/predict?{query}", content=b"x"), 400, "top_k")
    assert_one_line_error(client.post("/explain?method=scorecam", content=b"x"), 400, "gradcam")


def test_other_routes_pass_through(gate):
    client, _ = gate
    # not an upload route: the app behind answers (here the echo, which wants JSON)
    with pytest.raises(json.JSONDecodeError):
        client.post("/other", content=b"not json")


def _worker_requests(prep, photos, top_k):
    return [
        {"top_k": top_k, "name": p.name, **encode_crop(prep.load_bytes(p.read_bytes(), p.name))}
        for p in photos
    ]


def test_predict_api_answers_as_fgvc_predict(setup):
    bundle, photos = setup
    api = PredictAPI(str(bundle), max_batch_size=4)
    api.setup("cpu")
    assert api.model.backend == "onnx" and api.tta is True  # the bundle's flip TTA
    requests = _worker_requests(api.model.preprocessing, photos, 3)
    batched = api.predict([api.decode_request(r) for r in requests])
    answers = [api.encode_response(y) for y in batched]
    single = [api.encode_response(api.predict(api.decode_request(r))) for r in requests]
    truth, errors = predict_files(load_predictor(bundle), photos, topk=3, progress=False)
    assert not errors and len(truth) == len(answers) == len(photos)
    for answer, alone, expected in zip(answers, single, truth):
        for got in (answer, alone):
            entries = got["predictions"]
            assert [e["class_name"] for e in entries] == [name for _, name, _ in expected.top]
            assert [e["class_index"] for e in entries] == [i for i, _, _ in expected.top]
            probs = [e["probability"] for e in entries]
            np.testing.assert_allclose(probs, [p for *_, p in expected.top], rtol=0, atol=1e-6)
    json.dumps(answers)  # plain JSON types


def test_explain_api_answers_as_fgvc_explain(setup):
    bundle, photos = setup
    api = ExplainAPI(str(bundle))
    api.setup("cpu")
    prep = api.model.preprocessing
    requests = _worker_requests(prep, photos[:3], 1)
    requests[1]["class_index"] = 2
    outputs = api.predict([api.decode_request(r) for r in requests])
    answers = [api.encode_response(y) for y in outputs]
    truth, _ = explain_images(
        load_predictor(bundle, "torch"), photos[:3], target=[None, 2, None], progress=False
    )
    for answer, expected in zip(answers, truth):
        assert answer["class_name"] == expected.class_name
        assert answer["top1_name"] == expected.top1_name
        assert answer["probability"] == pytest.approx(expected.probability, abs=1e-6)
        overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["overlay"]))))
        crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["crop"]))))
        np.testing.assert_array_equal(crop, expected.crop)
        assert overlay.shape == expected.crop.shape
        assert np.abs(overlay.astype(int) - expected.overlay().astype(int)).max() <= 1
    assert answers[1]["class_name"] == CLASS_NAMES[2]


def test_setup_failure_is_reported_in_one_line(setup, tmp_path):
    bundle, _ = setup
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "model.onnx").unlink()
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    failures: queue.SimpleQueue = queue.SimpleQueue()
    api = PredictAPI(str(broken), failures=failures)
    api.setup("cpu")
    message, usage = failures.get_nowait()
    assert "model.safetensors" in message and "\n" not in message and usage
    assert api.model is None


def test_page_static_files_and_json_errors(setup):
    bundle, _ = setup
    server = FgvcServer(bundle)
    client = TestClient(server.app)  # no lifespan: no workers; the page needs none
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<label for="image-input">' in page.text and 'id="image-input"' in page.text
    for name in ("app.js", "style.css"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and response.text == (STATIC / name).read_text()
    for path in STATIC.iterdir():  # offline: nothing from elsewhere
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", path.read_text()), path
    assert client.get("/nothing").json() == {"error": "Not Found"}
    assert client.get("/predict").status_code == 405
    assert list(client.get("/predict").json()) == ["error"]
    assert server.description["class_names"] == CLASS_NAMES
    assert server.description["backend"] == "onnx" and server.description["explain"]
