"""``fgvc serve``'s server: LitServe with fgvc's model APIs, upload gate and web page.

Processes (LitServe's): this one (supervises; stops everything on Ctrl-C or SIGTERM), one
model worker per API (:class:`~fgvc.deploy.serve.apis.PredictAPI`, and
:class:`~fgvc.deploy.serve.apis.ExplainAPI` unless ``explain=False``), spawned, each loading
the bundle once; and the HTTP servers (uvicorn, one per worker unless told), forked, which run
:class:`~fgvc.deploy.serve.uploads.UploadGate` on every upload. Routes:

    GET  /          the web page (static/): choose or drop a photo, see top-5 and Grad-CAM
    POST /predict   image -> {"predictions": [{class_name, class_index, probability}, ...]}
    POST /explain   image -> Grad-CAM overlay (base64 PNG) of the predicted or a chosen class
    GET  /health    200 "ok" once every worker has loaded the model, else 503 "not ready"
    GET  /info      the model: bundle, class names, preprocessing, limits

Every error is ``{"error": "<one line>"}`` with a 4xx status (5xx only for a failure of the
server itself: its traceback goes to the server's log, never to the client).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import litserve as ls
from fastapi import Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles

from fgvc.deploy.bundle import CONFIG_FILE, bundle_file, parse_config, read_config
from fgvc.deploy.formats.onnx_fp32 import ONNX_FILE
from fgvc.deploy.serve.apis import ExplainAPI, PredictAPI
from fgvc.deploy.serve.uploads import DEFAULT_MAX_BYTES, DEFAULT_TOP_K, SERVED_METHODS, UploadGate
from fgvc.errors import FgvcError, UsageError

STATIC = Path(__file__).with_name("static")


def model_info(
    bundle: Path,
    config: dict[str, Any],
    backend: str,
    tta: bool | None,
    explain: bool,
    max_bytes: int,
) -> dict[str, Any]:
    """``GET /info``'s ``model``: what the page and clients need to know (from model.json)."""
    spec, names, prep = parse_config(config, bundle / CONFIG_FILE)
    onnx = bundle_file(bundle, config, "onnx", ONNX_FILE).is_file()
    return {
        "bundle": str(bundle),
        "name": bundle.name,
        "model": spec.describe(),
        "class_names": names,
        "num_classes": len(names),
        "preprocessing": prep.describe(),
        "tta": prep.tta if tta is None else tta,
        "backend": ("onnx" if onnx else "torch") if backend == "auto" else backend,
        "explain": explain,
        "explain_methods": list(SERVED_METHODS) if explain else [],
        "top_k": DEFAULT_TOP_K,
        "max_upload_bytes": max_bytes,
    }


class FgvcServer(ls.LitServer):
    """A LitServer that serves only once every worker has loaded the model, and stops with
    the worker's one-line error (and nothing left running) when one cannot.

    Args:
        bundle: the export folder.
        backend: of ``/predict`` (``auto``, ``onnx``, ``torch``).
        device: ``auto``, ``cpu`` or ``cuda``.
        tta: flip TTA (None: as the bundle says).
        explain: also serve ``POST /explain`` (a second worker with the PyTorch network).
        max_batch_size, batch_timeout: ``/predict``'s server-side batching.
        max_bytes: the largest upload.
        timeout: seconds a request may wait for a worker before 504.
    """

    def __init__(
        self,
        bundle: str | os.PathLike,
        backend: str = "auto",
        device: str = "auto",
        tta: bool | None = None,
        explain: bool = True,
        max_batch_size: int = 16,
        batch_timeout: float = 0.01,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout: float = 30.0,
    ) -> None:
        if device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"device {device!r}: choose auto, cpu or cuda")
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise UsageError("--device cuda: no CUDA device available")
        bundle = Path(bundle).expanduser().absolute()
        config = read_config(bundle)
        _, names, prep = parse_config(config, bundle / CONFIG_FILE)
        self.description = model_info(bundle, config, backend, tta, explain, max_bytes)
        # written by a worker's setup (before it says it is ready), read here
        self.failures = mp.get_context("spawn").SimpleQueue()
        apis: list[ls.LitAPI] = [
            PredictAPI(str(bundle), backend, tta, self.failures, max_batch_size, batch_timeout)
        ]
        if explain:
            apis.append(ExplainAPI(str(bundle), tta, self.failures, 4, batch_timeout))
        gate = {"preprocessing": prep, "class_names": names, "max_bytes": max_bytes}
        super().__init__(
            apis,
            accelerator=device,  # auto: every GPU when there are any (a worker on each)
            timeout=timeout,
            model_metadata=self.description,
            middlewares=[(UploadGate, gate)],
            disable_openapi_url=True,
        )
        self._add_page_and_errors()

    def _add_page_and_errors(self) -> None:
        app = self.app
        # LitServe's "/" says "litserve running"; the page takes its place
        app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", "") != "/"]

        async def page() -> FileResponse:
            return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

        app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        async def http_error(request: Request, err: HTTPException) -> JSONResponse:
            detail = err.detail if isinstance(err.detail, str) else str(err.detail)
            return JSONResponse({"error": " ".join(detail.split())}, err.status_code, err.headers)

        async def server_error(request: Request, err: Exception) -> JSONResponse:
            return JSONResponse({"error": "internal server error (see the server's log)"}, 500)

        app.add_exception_handler(HTTPException, http_error)
        app.add_exception_handler(Exception, server_error)

    @property
    def worker_count(self) -> int:
        return sum(
            len(self._inference_workers_config_for_api(a.api_path)) for a in self.litapi_connector
        )

    def verify_worker_status(self) -> None:
        """Wait until every worker has loaded the model (LitServe waits for one)."""
        from litserve.utils import WorkerSetupStatus

        while True:
            if not self.failures.empty():
                message, usage = self.failures.get()
                raise (UsageError if usage else FgvcError)(message)
            states = list(dict(self.workers_setup_status).values())
            if WorkerSetupStatus.ERROR in states:
                raise FgvcError("a model worker failed to start (its error is above)")
            if len(states) == self.worker_count and all(
                s == WorkerSetupStatus.READY for s in states
            ):
                if not self.failures.empty():  # a failure reported just before "ready"
                    continue
                return
            if any(not w.is_alive() for w in self.inference_workers):
                raise FgvcError("a model worker exited while loading the model (see above)")
            time.sleep(0.05)

    def _start_worker_monitoring(self, manager: Any, uvicorn_workers: dict) -> None:
        """Stop serving when a model worker dies (killed, out of memory): requests would wait
        for it in vain. Replaces LitServe's monitor, which also fires when Ctrl-C's shutdown
        stops the workers and then shuts down a second time."""

        def watch() -> None:
            while not self._stopping:
                dead = [w for w in self.inference_workers if not w.is_alive()]
                if dead and not self._stopping:
                    self._worker_died = dead[0].exitcode
                    self._shutdown_event.set()  # run() returns and shuts down
                    return
                time.sleep(0.5)

        threading.Thread(target=watch, name="fgvc-serve-watch", daemon=True).start()

    def _perform_graceful_shutdown(self, *args: Any, **kwargs: Any) -> None:
        self._stopping = True
        super()._perform_graceful_shutdown(*args, **kwargs)

    def _start_server(self, port: int, *args: Any, **kwargs: Any) -> dict:
        workers = super()._start_server(port, *args, **kwargs)
        host = getattr(self, "_host", "127.0.0.1")
        shown = f"[{host}]" if ":" in host else host
        print(
            f"fgvc serve: {self.description['name']} ({self.description['num_classes']} classes, "
            f"{self.description['backend']}) at http://{shown}:{port}/ - POST /predict"
            f"{', POST /explain' if self.description['explain'] else ''}, GET /health; "
            f"Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
        return workers

    def serve(self, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
        """Serve until Ctrl-C (or SIGTERM, raised as KeyboardInterrupt by the caller);
        every process started is gone when this returns or raises.

        Raises:
            UsageError: the bundle cannot be loaded.
            FgvcError: a worker failed to start, or died while serving.
            ValueError: a host other than 127.0.0.1, 0.0.0.0 and :: (LitServe's rule).
        """
        self._host = host
        self._stopping = False
        self._worker_died: int | None = None
        try:
            self.run(
                host=host,
                port=port,
                log_level=log_level,
                generate_client_file=False,  # LitServe would write client.py into the cwd
            )
        finally:
            self._stopping = True
            self._stop_leftovers()
        if self._worker_died is not None:
            raise FgvcError(
                f"a model worker stopped while serving (exit code {self._worker_died}; "
                f"killed, or out of memory?); the server stopped - start it again"
            )

    def _stop_leftovers(self) -> None:
        """What LitServe leaves running when it stops before serving (a worker that failed
        to start raises out of ``run`` past its shutdown)."""
        for worker in getattr(self, "inference_workers", []):
            if worker.is_alive():
                worker.terminate()
                worker.join(5)
                if worker.is_alive():
                    worker.kill()
                    worker.join(5)
        manager = getattr(self.transport_config, "manager", None)
        if manager is not None:
            manager.shutdown()
