"""iSQRT-COV meta-layer: covariance pooling -> Newton-Schulz square root -> triu vector."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fgvc.ops._precision import (
    autocast_disabled,
    to_full_precision,
    tracing,
    use_custom_backward,
)
from fgvc.ops._workspace import WORKSPACE, Lease, Workspace
from fgvc.ops.checks import check_feature_map, check_iterations
from fgvc.ops.covariance import covariance_backward, covariance_forward
from fgvc.ops.sqrtm import batch_inner, sqrtm_backward, sqrtm_forward
from fgvc.ops.triu import triu_flat_index, triu_position_index, triu_vec


class _ISqrtCov(torch.autograd.Function):
    """One graph node for the whole layer: keeps the input and the iteration's matrices.

    Temporaries come from the shared CPU workspace and go straight back to it; the
    matrices kept for the backward go back when this graph node is freed.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, iterations: int, index: torch.Tensor) -> torch.Tensor:
        out, (mean, a, trace, saved) = _forward(x, iterations, index, WORKSPACE)
        ctx.lease = Lease(WORKSPACE, [a, *saved])
        ctx.iterations = iterations
        ctx.save_for_backward(x, mean, out, a, trace, *saved)
        return out

    @staticmethod
    def backward(ctx: Any, grad_vec: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        x, mean, out, a, trace, *saved = ctx.saved_tensors
        b, d = a.shape[:2]
        ws = WORKSPACE
        with autocast_disabled(a):
            # dL/dC is grad_vec on the upper triangle and zero below; its symmetric part
            # (all the backward needs) has half of it on both sides and all of it on the
            # diagonal: one gather (a scatter and a transposed sum cost three times more).
            grad_sym = ws.take((b, d, d), a)
            torch.index_select(
                grad_vec.mul(0.5), 1, triu_position_index(d, a.device), out=grad_sym.view(b, -1)
            )
            grad_sym.diagonal(dim1=-2, dim2=-1).mul_(2.0)
            inner = batch_inner(grad_vec, out, ws)  # <dL/dC, C>: out is C's upper triangle
            grad_sigma = sqrtm_backward(grad_sym, inner, a, trace, saved, ctx.iterations, ws)
            grad_x = covariance_backward(grad_sigma, x, mean, ws, symmetric=True)
        ws.give_back([grad_sym, grad_sigma])
        return grad_x, None, None


def _forward(
    x: torch.Tensor, iterations: int, index: torch.Tensor, ws: Workspace | None
) -> tuple[torch.Tensor, tuple]:
    """The layer's output and what a backward needs (mean, A, trace, saved matrices).

    Sigma and C go back to the workspace at once; the rest stays the caller's.
    """
    sigma, mean = covariance_forward(x, ws)
    c, a, trace, saved = sqrtm_forward(sigma, iterations, ws, ws)
    out = triu_vec(c, index)
    if ws is not None:
        ws.give_back([sigma, c])
    return out, (mean, a, trace, saved)


def _isqrt_cov_inference(x: torch.Tensor, iterations: int, index: torch.Tensor) -> torch.Tensor:
    # exporters see plain tensor code (no workspace, no out= buffers)
    ws = None if tracing() else WORKSPACE
    out, (_, a, _, saved) = _forward(x, iterations, index, ws)
    if ws is not None:
        ws.give_back([a, *saved])
    return out


def isqrt_cov(
    x: torch.Tensor, iterations: int = 5, triu_index: torch.Tensor | None = None
) -> torch.Tensor:
    """iSQRT-COV pooling of a feature map.

    Args:
        x: (B, d, h, w) features (ResNets: d = 256 after the 1x1 reduction).
        iterations: Newton-Schulz iterations N >= 1.
        triu_index: optional precomputed ``triu_flat_index(d)``.

    Returns:
        (B, d (d + 1) / 2) float32 (float64 for float64 input), whatever autocast says.
    """
    check_feature_map(x, "isqrt_cov")
    check_iterations(iterations)
    x = to_full_precision(x)
    d = x.shape[1]
    if triu_index is None:
        triu_index = triu_flat_index(d, x.device)
    with autocast_disabled(x):
        if use_custom_backward(x):
            return _ISqrtCov.apply(x, iterations, triu_index)
        return _isqrt_cov_inference(x, iterations, triu_index)


class ISqrtCov(nn.Module):
    """Module form of :func:`isqrt_cov`.

    Args:
        dim: number of input channels d; when given, inputs are checked against it and the
            triangle indices live in a (non-persistent) buffer, which exporters prefer.
        iterations: Newton-Schulz iterations N >= 1.
    """

    triu_index: torch.Tensor | None

    def __init__(self, dim: int | None = None, iterations: int = 5) -> None:
        super().__init__()
        check_iterations(iterations)
        self.dim = dim
        self.iterations = iterations
        if dim is not None:
            self.register_buffer("triu_index", triu_flat_index(dim), persistent=False)
        else:
            self.triu_index = None

    @property
    def output_dim(self) -> int | None:
        return None if self.dim is None else self.dim * (self.dim + 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dim is not None and x.dim() == 4 and x.shape[1] != self.dim:
            raise ValueError(
                f"ISqrtCov(dim={self.dim}) got {x.shape[1]} channels; "
                f"match the reduction layer's output to dim"
            )
        return isqrt_cov(x, self.iterations, self.triu_index)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, iterations={self.iterations}"
