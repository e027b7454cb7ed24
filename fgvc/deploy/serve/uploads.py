"""The gate in front of ``POST /predict`` and ``POST /explain`` (an ASGI middleware).

An upload is read, checked and decoded here, in the HTTP server process, before anything is
queued for a model worker:

* the body: at most ``max_bytes`` - else 413 (read to its end first unless far larger,
  :data:`DRAIN_BYTES`, or announced so by ``Content-Length``);
* the image: multipart field ``image`` (a file; a browser's form), or else the raw body
  whatever its content type (``curl --data-binary @photo.jpg`` says urlencoded) - else 400
  naming what was sent;
* decoding and preprocessing: the bundle's
  :meth:`EvalPreprocessing.load_bytes <fgvc.data.preprocessing.EvalPreprocessing.load_bytes>`
  (fgvc's decoder: a decompression bomb is refused from its header before any pixel is
  decoded - 413; not an image, truncated, a 1 x 5000 strip - 400);
* the query: ``top_k`` (``/predict``; default 5), ``class`` and ``method`` (``/explain``).

What passes is rewritten into a JSON body holding the prepared ``uint8`` crop
(:func:`fgvc.deploy.serve.apis.encode_crop`), which LitServe hands to the worker. Every
refusal is answered here as ``{"error": "<one line>"}``: a bad upload never reaches a worker,
where LitServe would fail every request batched with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qs

import cv2

from fgvc.data.io import ImageTooLargeError
from fgvc.data.preprocessing import EvalPreprocessing
from fgvc.deploy.outputs import escape_controls
from fgvc.deploy.serve.apis import encode_crop
from fgvc.errors import ImageDecodeError, one_line

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

IMAGE_FIELD = "image"
DEFAULT_TOP_K = 5
#: ``method`` values of ``/explain``: Score-CAM (hundreds of passes an image) is left out.
SERVED_METHODS = ("gradcam", "gradcam++")
DEFAULT_MAX_BYTES = 20 * 2**20


class UploadError(Exception):
    """A request refused with ``status`` and a one-line ``message``; ``close``: the body was
    not read to its end, so the connection must end with the answer."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = one_line(message)
        self.close = close


async def send_json(send: Send, status: int, document: dict[str, Any], close: bool = False) -> None:
    """Answer with a JSON document (``close``: and end the connection, e.g. when the body
    was not read)."""
    body = json.dumps(document, ensure_ascii=False).encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


#: Bytes beyond the limit still read (and dropped) before answering 413: a client that
#: sends its whole body before reading the answer (urllib, requests) then gets the 413
#: instead of a reset connection. Larger bodies are cut off.
DRAIN_BYTES = 16 * 2**20


async def read_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes:
    """The whole request body, or 413 when it exceeds ``max_bytes`` (nothing beyond the
    limit is kept; see :data:`DRAIN_BYTES`)."""

    def too_large(close: bool) -> UploadError:
        return UploadError(
            413,
            f"the upload is larger than the server's limit of {max_bytes:,} bytes; send a "
            f"smaller image (the limit is fgvc serve --max-upload-mb)",
            close,
        )

    length = _header(scope, b"content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes + DRAIN_BYTES:
        raise too_large(close=True)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise UploadError(400, "the client went away before the upload was complete", True)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= max_bytes:
            chunks.append(chunk)
        elif size > max_bytes + DRAIN_BYTES:
            raise too_large(close=True)
        if not message.get("more_body", False):
            if size > max_bytes:
                raise too_large(close=False)
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then waits for the client to go."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def image_from_request(scope: Scope, body: bytes, receive: Receive) -> tuple[bytes, str]:
    """``(image bytes, name)``: multipart field ``image``, or the raw body."""
    content_type = (_header(scope, b"content-type") or "").lower()
    # only multipart is a form: curl --data-binary sends raw bytes as urlencoded
    if content_type.startswith("multipart/form-data"):
        from starlette.requests import Request

        request = Request(scope, _replay(body, receive))
        try:
            form = await request.form(max_files=4, max_fields=32)
        except Exception as err:  # python-multipart's errors (starlette wraps some)
            detail = getattr(err, "detail", None) or getattr(err, "message", None) or err
            raise UploadError(400, f"cannot parse the form ({one_line(detail)})") from err
        try:
            field = form.get(IMAGE_FIELD)
            if field is None:
                keys = sorted(set(form.keys()))
                sent = ", ".join(repr(escape_controls(k)[:40]) for k in keys[:5]) or "none"
                sent += f" and {len(keys) - 5} more" if len(keys) > 5 else ""
                raise UploadError(
                    400,
                    f"no form field {IMAGE_FIELD!r} (fields sent: {sent}); send the photo as "
                    f"the file field {IMAGE_FIELD!r} or as the raw request body",
                )
            if isinstance(field, str):
                raise UploadError(
                    400, f"form field {IMAGE_FIELD!r} holds text, not a file; attach the photo"
                )
            return await field.read(), field.filename or "upload"
        finally:
            await form.close()
    if not body:
        raise UploadError(
            400,
            f"empty request; send the photo as the raw request body or as the multipart file "
            f"field {IMAGE_FIELD!r}",
        )
    return body, "upload"


def _query(scope: Scope) -> dict[str, str]:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return {key: values[-1] for key, values in query.items()}


def parse_top_k(query: dict[str, str], num_classes: int) -> int:
    """``top_k`` (default 5), at most the number of classes."""
    raw = query.get("top_k", str(DEFAULT_TOP_K)).strip()
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:  # not "²" (isdigit, no int)
        raise UploadError(400, f"top_k={raw!r} is not a whole number >= 1; e.g. ?top_k=5")
    return min(int(raw), num_classes)


def parse_class(query: dict[str, str], class_names: Sequence[str]) -> int | None:
    """``class``: a class name or index to explain (None: the predicted class)."""
    raw = query.get("class")
    if raw is None or raw == "":
        return None
    if raw in class_names:
        return list(class_names).index(raw)
    index = raw.strip()
    if index.isascii() and index.isdigit() and int(index) < len(class_names):
        return int(index)
    raise UploadError(
        400,
        f"class={escape_controls(raw)[:100]!r} is not a class of this model; give a class name "
        f"or an index from 0 to {len(class_names) - 1} (GET /info lists the names)",
    )


def parse_method(query: dict[str, str]) -> str:
    method = query.get("method", SERVED_METHODS[0])
    if method not in SERVED_METHODS:
        raise UploadError(
            400,
            f"method={escape_controls(method)[:50]!r}; choose one of {', '.join(SERVED_METHODS)}",
        )
    return method


def prepare(preprocessing: EvalPreprocessing, data: bytes, name: str) -> Any:
    """The crop evaluation would feed the network, or an :class:`UploadError`."""
    try:
        return preprocessing.load_bytes(data, name)
    except ImageTooLargeError as err:
        raise UploadError(413, str(err)) from err
    except (ImageDecodeError, OSError, ValueError, RuntimeError, cv2.error) as err:
        cause = err.__cause__
        if isinstance(err, ImageDecodeError) and cause is None:  # fgvc's own rule: its line
            raise UploadError(400, str(err)) from err
        # the library's words, less the address of the buffer it read
        reason = re.sub(r" ?<[^<>]* at 0x[0-9a-f]+>", "", one_line(cause or err))
        raise UploadError(
            400,
            f"{name}: cannot decode the upload as an image ({reason}); send a JPEG, PNG, "
            f"WebP, BMP or TIFF file",
        ) from err


class UploadGate:
    """ASGI middleware: turns ``POST /predict`` and ``POST /explain`` uploads into prepared
    crops, or answers 4xx with one line (see the module doc).

    Args:
        app: the ASGI app (LitServe's FastAPI app).
        preprocessing: the bundle's evaluation preprocessing.
        class_names: the bundle's class names.
        max_bytes: the largest request body accepted.
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        preprocessing: EvalPreprocessing,
        class_names: Sequence[str],
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.app = app
        self.preprocessing = preprocessing
        self.class_names = list(class_names)
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or path
            not in (
                "/predict",
                "/explain",
            )
        ):
            await self.app(scope, receive, send)
            return
        import anyio

        try:
            # the body first, also when the query is wrong: see DRAIN_BYTES
            body = await read_body(scope, receive, self.max_bytes)
            query = _query(scope)
            if path == "/predict":
                fields: dict[str, Any] = {"top_k": parse_top_k(query, len(self.class_names))}
            else:
                fields = {
                    "class_index": parse_class(query, self.class_names),
                    "method": parse_method(query),
                }
            data, name = await image_from_request(scope, body, receive)
            name = escape_controls(one_line(name))[:200]
            crop = await anyio.to_thread.run_sync(prepare, self.preprocessing, data, name)
        except UploadError as err:
            await send_json(send, err.status, {"error": err.message}, close=err.close)
            return
        payload = json.dumps({**fields, **encode_crop(crop), "name": name}).encode("utf-8")
        headers = [
            (key, value)
            for key, value in scope.get("headers", [])
            if key.lower() not in (b"content-type", b"content-length", b"transfer-encoding")
        ]
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        await self.app({**scope, "headers": headers}, _replay(payload, receive), send)
