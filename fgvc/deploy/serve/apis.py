"""The model side of ``fgvc serve``: two LitServe APIs, each in its own worker process.

:class:`PredictAPI` (``POST /predict``) batches concurrent requests (LitServe's
``max_batch_size`` / ``batch_timeout``) through the bundle's predictor - ONNX Runtime when the
bundle has ``model.onnx``, else PyTorch, as ``fgvc predict`` - and answers each with its top-k.
:class:`ExplainAPI` (``POST /explain``) computes a Grad-CAM map on the PyTorch network and
answers with the overlay as a PNG.

Both receive what :mod:`fgvc.deploy.serve.uploads` made of an upload: the ``(3, S, S)``
``uint8`` crop that the bundle's :class:`~fgvc.data.preprocessing.EvalPreprocessing` produced,
base64 in a JSON body. A bad upload therefore never reaches a worker: LitServe answers every
request of a batch with the same error when one of them raises.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import litserve as ls
import numpy as np

#: What a worker's ``setup`` reports when the model cannot be loaded: ``(message, usage)``.
SetupFailure = tuple[str, bool]


def encode_crop(crop: Any) -> dict[str, Any]:
    """The JSON form of a ``(3, S, S)`` ``uint8`` crop (what the workers receive)."""
    array = np.ascontiguousarray(np.asarray(crop, dtype=np.uint8))
    return {"shape": list(array.shape), "crop": base64.b64encode(array.tobytes()).decode("ascii")}


def decode_crop(request: dict[str, Any]) -> Any:
    """The inverse of :func:`encode_crop`: a ``uint8`` tensor."""
    import torch

    shape = tuple(int(n) for n in request["shape"])
    data = base64.b64decode(request["crop"])
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).reshape(shape).copy())


def png_base64(picture: np.ndarray) -> str:
    """An RGB ``uint8`` picture as base64 PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def top_entries(probs: Any, k: int, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """``[{class_name, class_index, probability}]`` of the ``k`` most probable classes of one
    row of probabilities (:func:`fgvc.deploy.predict.top_k`, as ``fgvc predict``)."""
    from fgvc.deploy.predict import top_k

    return [
        {"class_name": name, "class_index": index, "probability": probability}
        for index, name, probability in top_k(probs[None], k, class_names)[0]
    ]


class _BundleAPI(ls.LitAPI):
    """Loads the bundle in ``setup``; a failure to load is sent to the server process (which
    stops with one line) instead of a traceback in the worker's log."""

    def __init__(self, bundle: str, tta: bool | None, failures: Any, **options: Any) -> None:
        super().__init__(**options)
        self.bundle = bundle
        self.tta_override = tta
        self.failures = failures  # a multiprocessing queue, or None

    def load(self, device: str) -> Any:
        raise NotImplementedError

    def setup(self, device: str) -> None:
        import multiprocessing
        import signal

        from fgvc.errors import FgvcError, is_usage_error, user_message

        if multiprocessing.parent_process() is not None:  # a worker process of the server
            # Ctrl-C reaches every process of the terminal's group; the server stops this
            # one (SIGTERM) once it takes no more requests, instead of a traceback here
            signal.signal(signal.SIGINT, signal.SIG_IGN)

        if device.startswith("cuda:"):  # LitServe names the GPU; fgvc's loaders take "cuda"
            import torch

            torch.cuda.set_device(int(device.split(":")[1]))
            device = "cuda"
        try:
            self.model = self.load(device)
        except (FgvcError, OSError) as err:
            if self.failures is None:
                raise
            self.failures.put((user_message(err), is_usage_error(err)))
            self.model = None
            return
        preprocessing = self.model.preprocessing
        self.tta = preprocessing.tta if self.tta_override is None else self.tta_override
        self.class_names = list(self.model.class_names)


class PredictAPI(_BundleAPI):
    """``POST /predict``: ``{"predictions": [{class_name, class_index, probability}, ...]}``.

    Args:
        bundle: the export folder.
        backend: ``auto`` (ONNX Runtime when the bundle has ``model.onnx``), ``onnx`` or
            ``torch``.
        tta: flip TTA (None: as the bundle says).
        failures: a queue for the message of a failed ``setup``.
        max_batch_size, batch_timeout: LitServe's server-side batching.
    """

    def __init__(
        self,
        bundle: str,
        backend: str = "auto",
        tta: bool | None = None,
        failures: Any = None,
        max_batch_size: int = 16,
        batch_timeout: float = 0.01,
    ) -> None:
        super().__init__(
            bundle,
            tta,
            failures,
            max_batch_size=max_batch_size,
            batch_timeout=batch_timeout,
            api_path="/predict",
        )
        self.backend = backend

    def load(self, device: str) -> Any:
        from fgvc.deploy.predict import load_predictor

        return load_predictor(self.bundle, self.backend, device)

    # LitServe reads the request's type off decode_request's annotation (FastAPI would take
    # it for a query parameter) and the response's off encode_response's: neither is annotated

    def decode_request(self, request):  # noqa: ANN001, ANN201
        return {"crop": decode_crop(request), "top_k": int(request["top_k"])}

    def predict(self, x: Any) -> Any:
        items = x if isinstance(x, list) else [x]  # a list when LitServe batches
        batch = self.model.preprocessing.batch([item["crop"] for item in items])
        probs = self.model.predict_logits(batch, tta=self.tta).float().softmax(-1)
        outputs = [(row, item["top_k"]) for row, item in zip(probs, items)]
        return outputs if isinstance(x, list) else outputs[0]

    def encode_response(self, output):  # noqa: ANN001, ANN201
        probs, k = output
        return {"predictions": top_entries(probs, min(k, len(self.class_names)), self.class_names)}


class ExplainAPI(_BundleAPI):
    """``POST /explain``: a class activation map of the upload, on the PyTorch network.

    Answers ``{class_name, class_index, probability, top1_name, top1_probability, method,
    target_layer, crop, overlay}``; ``crop`` and ``overlay`` are base64 PNGs of the crop the
    network saw and of the heat map blended over it (:meth:`Explanation.overlay
    <fgvc.deploy.explain.Explanation.overlay>`).
    """

    def __init__(
        self,
        bundle: str,
        tta: bool | None = None,
        failures: Any = None,
        max_batch_size: int = 4,
        batch_timeout: float = 0.01,
    ) -> None:
        super().__init__(
            bundle,
            tta,
            failures,
            max_batch_size=max_batch_size,
            batch_timeout=batch_timeout,
            api_path="/explain",
        )

    def load(self, device: str) -> Any:
        from fgvc.deploy.predict import load_predictor

        return load_predictor(self.bundle, "torch", device)  # gradients: PyTorch only

    def decode_request(self, request):  # noqa: ANN001, ANN201 - see PredictAPI
        return {
            "crop": decode_crop(request),
            "name": str(request.get("name", "upload")),
            "target": request.get("class_index"),
            "method": str(request.get("method", "gradcam")),
        }

    def predict(self, x: Any) -> Any:
        from fgvc.deploy.explain import explain_crops

        items = x if isinstance(x, list) else [x]
        outputs: list[Any] = [None] * len(items)
        # one pass per method: a batch of requests may ask for different ones
        for method in dict.fromkeys(item["method"] for item in items):
            chosen = [i for i, item in enumerate(items) if item["method"] == method]
            done = explain_crops(
                self.model,
                [items[i]["crop"] for i in chosen],
                [items[i]["name"] for i in chosen],
                method=method,
                target=[items[i]["target"] for i in chosen],
                tta=self.tta,
            )
            for i, explanation in zip(chosen, done):
                outputs[i] = explanation
        return outputs if isinstance(x, list) else outputs[0]

    def encode_response(self, output):  # noqa: ANN001, ANN201 - see PredictAPI
        return {
            "class_name": output.class_name,
            "class_index": output.class_index,
            "probability": output.probability,
            "top1_name": output.top1_name,
            "top1_index": output.top1_index,
            "top1_probability": output.top1_probability,
            "method": output.method,
            "target_layer": output.target_layer,
            "crop": png_base64(output.crop),
            "overlay": png_base64(output.overlay()),
        }
