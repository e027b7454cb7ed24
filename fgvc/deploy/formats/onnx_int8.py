"""``onnx-int8``: the ONNX model with 8-bit weights and dynamically quantized activations
(``onnxruntime.quantization.quantize_dynamic``): a file a quarter the size, at some accuracy
and - for a convolutional trunk on ONNX Runtime's CPU kernels - no speed-up; both measured by
``benchmarks/export_formats.py`` (README, "Deploy").

Convolutions become ``ConvInteger`` and the classifier ``MatMulInteger``, with uint8 weights
per output channel (ONNX Runtime's ``ConvInteger`` with int8 weights ran about 4x slower than
with uint8 on the machine measured, at the same accuracy); the iSQRT-COV head's own matrix
products (activation x activation) stay float32.
Activations are quantized per tensor over the whole batch, so an image's logits move a
little with the other images of its batch.

Verified by top-1 agreement with PyTorch (at least :data:`MIN_TOP1` of the verification
images), not by a logit bound: quantization error is expected, a changed decision is what
matters.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fgvc.deploy.formats.base import ExportFormat, first_line
from fgvc.deploy.formats.onnx_fp32 import ONNX_FILE, export_onnx, onnx_runner, quiet_loggers
from fgvc.errors import ExportError

INT8_FILE = "model.int8.onnx"
MIN_TOP1 = 0.75
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")


def export_int8(net: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """Quantize the float32 ONNX model beside ``path`` (written first by the same export:
    the table puts ``onnx`` before this), or one exported to a temporary folder for it."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = path.with_name(ONNX_FILE)
        info: dict[str, Any] = {}
        if not fp32.is_file():
            fp32 = Path(tmp) / ONNX_FILE
            info = export_onnx(net, example, fp32)
        else:
            info = {"from": ONNX_FILE}
        prepared = Path(tmp) / "prepared.onnx"
        try:
            # shape inference and graph optimization first, as onnxruntime advises
            with quiet_loggers(""):  # its INFO lines per tensor go to the root logger
                quant_pre_process(str(fp32), str(prepared))
                quantize_dynamic(
                    prepared,
                    path,
                    op_types_to_quantize=list(QUANTIZED_OPS),
                    per_channel=True,
                    weight_type=QuantType.QUInt8,
                )
        except Exception as err:  # onnxruntime's own error types
            raise ExportError(f"int8 quantization failed; {first_line(err)}") from err
    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    quantized = {op: n for op, n in sorted(ops.items()) if op.endswith("Integer")}
    return {
        **info,
        "quantization": "onnxruntime.quantization.quantize_dynamic",
        "weights": "uint8, per output channel",
        "activations": "uint8, per tensor, scale computed per batch at run time",
        "quantized_ops": quantized,
    }


FORMAT = ExportFormat(
    name="onnx-int8",
    file=INT8_FILE,
    export=export_int8,
    load=onnx_runner,
    runtime="onnxruntime",
    purpose="ONNX Runtime, 8-bit weights: a quarter of the size, approximate",
    tolerance=None,
    min_top1=MIN_TOP1,
)
