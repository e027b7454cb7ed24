"""``onnx``: the network as ONNX (float32), run on ONNX Runtime; the default runtime of
``fgvc predict`` and the way into other runtimes (TensorRT, OpenVINO, CoreML converters).

torch's ``torch.export``-based exporter first; if it fails, the legacy TorchScript-based one
(the iSQRT-COV layer turns into plain tensor code under any tracer). Input ``images``
``(N, 3, S, S)`` float32, output ``logits``, dynamic batch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fgvc.deploy.formats.base import ExportFormat, LogitsFn, first_line
from fgvc.errors import ExportError

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
ONNX_INPUT = "images"
ONNX_OUTPUT = "logits"
LEGACY_OPSET = 17


def _export_dynamo(net: nn.Module, path: Path, example: torch.Tensor) -> None:
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(
        net,
        (example,),
        str(path),
        dynamo=True,
        input_names=[ONNX_INPUT],
        output_names=[ONNX_OUTPUT],
        dynamic_shapes=({0: batch},),
        external_data=False,
        verbose=False,
    )


def _export_legacy(net: nn.Module, path: Path, example: torch.Tensor) -> None:
    # the ops layer turns into plain tensor code under tracers (no autograd.Function)
    torch.onnx.export(
        net,
        (example,),
        str(path),
        dynamo=False,
        input_names=[ONNX_INPUT],
        output_names=[ONNX_OUTPUT],
        dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
        opset_version=LEGACY_OPSET,
        do_constant_folding=True,
    )


#: (name, exporter) in the order they are tried.
ONNX_EXPORTERS: list[tuple[str, Callable[[nn.Module, Path, torch.Tensor], None]]] = [
    ("torch.export (dynamo)", _export_dynamo),
    ("torchscript (legacy)", _export_legacy),
]


@contextlib.contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Libraries' INFO chatter off, whatever the root logger's level."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(net: nn.Module, example: torch.Tensor, path: str | os.PathLike) -> dict[str, Any]:
    """Write ``net`` as ONNX (dynamic batch), trying :data:`ONNX_EXPORTERS` in order.

    Returns:
        ``{"exporter", "opset", "input", "output", "dynamic_axes"}`` for ``model.json``.

    Raises:
        ExportError: every exporter failed (all reasons in the message).
    """
    import onnx

    path = Path(path)
    net = net.eval()
    failures = []
    for name, exporter in ONNX_EXPORTERS:
        try:
            # the exporters' warnings are about tracing; the verification judges the result
            with torch.no_grad(), warnings.catch_warnings(), quiet_loggers("onnx_ir", "onnxscript"):
                warnings.simplefilter("ignore")
                exporter(net, path, example)
            proto = onnx.load(str(path), load_external_data=False)
            opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
            return {
                "exporter": name,
                "opset": int(opset),
                "input": ONNX_INPUT,
                "output": ONNX_OUTPUT,
                "dynamic_axes": {ONNX_INPUT: [0], ONNX_OUTPUT: [0]},
            }
        except Exception as err:  # any exporter failure: try the next one
            failures.append(f"{name}: {first_line(err)}")
            logger.warning("ONNX export with %s failed (%s)", name, first_line(err))
            for leftover in (path, path.with_name(path.name + ".data")):
                leftover.unlink(missing_ok=True)
    raise ExportError("ONNX export failed; " + "; ".join(failures))


def onnx_session(path: str | os.PathLike, device: str = "cpu", options: Any = None) -> Any:
    """An ONNX Runtime session on the ONNX file (parsed and optimized once): CPU, or with
    ``device="cuda"`` the CUDA provider first when this onnxruntime has it."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), options, providers=providers)


def onnx_logits(session: Any, images: np.ndarray) -> np.ndarray:
    """Logits of an :func:`onnx_session` on ``images``."""
    return session.run([ONNX_OUTPUT], {ONNX_INPUT: images})[0]


def onnx_runner(path: Path, device: str = "cpu", options: Any = None) -> LogitsFn:
    """A :data:`LogitsFn` on an ONNX file (float32 or quantized); ``options``: ONNX Runtime
    ``SessionOptions`` (e.g. threads)."""
    session = onnx_session(path, device, options)

    def run(images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(onnx_logits(session, array))

    return run


FORMAT = ExportFormat(
    name="onnx",
    file=ONNX_FILE,
    export=export_onnx,
    load=onnx_runner,
    runtime="onnxruntime",
    purpose="ONNX Runtime on CPU/GPU without PyTorch; input to TensorRT, OpenVINO and others",
    tolerance=1e-3,
    default=True,
    auto=3,
)
