"""Keep the meta-layer in full precision under mixed precision training."""

from __future__ import annotations

import torch

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def to_full_precision(x: torch.Tensor) -> torch.Tensor:
    """Upcast half/bfloat16 to float32; float32 and float64 pass through unchanged."""
    return x.float() if x.dtype in _LOW_PRECISION else x


def autocast_disabled(x: torch.Tensor) -> torch.autocast:
    """Autocast switched off for ``x``'s device type, so that bmm stays in ``x``'s dtype."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def tracing() -> bool:
    """Under a tracer/exporter (TorchScript, ONNX, torch.compile/export), where the layer must
    be plain tensor code rather than a custom autograd.Function with workspace buffers."""
    return bool(
        torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
    )


def use_custom_backward(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad and not tracing()
