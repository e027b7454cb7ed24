"""Matrix square root by the coupled Newton-Schulz iteration (iSQRT-COV, CVPR 2018).

Forward, for N iterations on a trace-normalized A = Sigma / tr(Sigma):

    Y_0 = A, Z_0 = I,  T_k = (3I - Z_{k-1} Y_{k-1}) / 2
    Y_k = Y_{k-1} T_k,  Z_k = T_k Z_{k-1}          (Z_N is not needed)
    C = sqrt(tr(Sigma)) Y_N                         (post-compensation)

The backward is the exact reverse-mode gradient of these truncated operations, written
out by hand so that each scale and sum rides inside a GEMM (``baddbmm``'s alpha/beta),
and the first iteration (T_1 = (3I - A)/2) costs one product instead of two.
Products: forward 3N - 3, backward 6N - 6 (N >= 2); N = 1: one and two.
"""

from __future__ import annotations

from typing import Any

import torch

from fgvc.ops._precision import autocast_disabled, to_full_precision

#: lower bound on the trace: an all-zero map (dead ReLU features) gives finite values.
TRACE_EPS = 1e-12


def check_iterations(iterations: int) -> None:
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")


def _eye(d: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(d, dtype=like.dtype, device=like.device)


def newton_schulz_forward(
    a: torch.Tensor, iterations: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Y_N for a (B, d, d) batch ``a``; also the intermediates the backward needs."""
    eye = _eye(a.shape[-1], a)
    # Y_1 = A (3I - A) / 2 = 1.5 A - 0.5 A A
    y = torch.baddbmm(a, a, a, beta=1.5, alpha=-0.5)
    if iterations == 1:
        return y, []
    z = torch.add(eye * 1.5, a, alpha=-0.5)  # Z_1 = T_1
    saved: list[torch.Tensor] = []
    for k in range(2, iterations + 1):
        t = torch.baddbmm(eye, z, y, beta=1.5, alpha=-0.5)  # T_k = 1.5 I - 0.5 Z Y
        saved += [y, z, t]
        y_next = torch.bmm(y, t)
        if k < iterations:
            z = torch.bmm(t, z)
        y = y_next
    return y, saved


def newton_schulz_backward(
    grad_y: torch.Tensor, a: torch.Tensor, saved: list[torch.Tensor], iterations: int
) -> torch.Tensor:
    """dL/dA given dL/dY_N, reverse-mode through the iteration (transposes kept exact)."""
    gy = grad_y
    gz: torch.Tensor | None = None
    for k in range(iterations, 1, -1):
        y, z, t = saved[3 * (k - 2) : 3 * (k - 1)]
        # Y_k = Y T, Z_k = T Z, T = 1.5 I - 0.5 Z Y
        gt = torch.bmm(y.mT, gy)
        if gz is not None:
            gt = torch.baddbmm(gt, gz, z.mT)
        gy_prev = torch.baddbmm(torch.bmm(gy, t.mT), z.mT, gt, alpha=-0.5)
        if gz is not None:
            gz_prev = torch.baddbmm(torch.bmm(t.mT, gz), gt, y.mT, alpha=-0.5)
        else:
            gz_prev = torch.baddbmm(gt.new_empty(gt.shape), gt, y.mT, beta=0.0, alpha=-0.5)
        gy, gz = gy_prev, gz_prev
    # Y_1 = 1.5 A - 0.5 A A, Z_1 = 1.5 I - 0.5 A
    if gz is None:
        base = gy * 1.5
    else:
        base = torch.add(gy * 1.5, gz, alpha=-0.5)
    base = torch.baddbmm(base, gy, a.mT, alpha=-0.5)
    return torch.baddbmm(base, a.mT, gy, alpha=-0.5)


def sqrtm_forward(
    cov: torch.Tensor, iterations: int
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], list[torch.Tensor]]:
    """Pre-normalize, iterate, post-compensate. Returns (C, (A, Y_N, trace), saved)."""
    trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1)
    trace_c = trace.clamp_min(TRACE_EPS)
    a = cov / trace_c[:, None, None]
    y, saved = newton_schulz_forward(a, iterations)
    c = y * trace_c.sqrt()[:, None, None]
    return c, (a, y, trace), saved


def sqrtm_backward(
    grad_c: torch.Tensor,
    a: torch.Tensor,
    y: torch.Tensor,
    trace: torch.Tensor,
    saved: list[torch.Tensor],
    iterations: int,
) -> torch.Tensor:
    """dL/dSigma from dL/dC for C = sqrt(t) Y_N(Sigma / t), t = max(tr Sigma, eps)."""
    trace_c = trace.clamp_min(TRACE_EPS)
    root = trace_c.sqrt()
    grad_a = newton_schulz_backward(grad_c * root[:, None, None], a, saved, iterations)
    # t enters twice: the post-compensation sqrt(t) and the pre-normalization 1/t.
    grad_t = (grad_c * y).sum((-2, -1)) / (2 * root) - (grad_a * a).sum((-2, -1)) / trace_c
    grad_t = grad_t * (trace > TRACE_EPS)  # clamp_min passes no gradient below eps
    grad_cov = grad_a / trace_c[:, None, None]
    grad_cov.diagonal(dim1=-2, dim2=-1).add_(grad_t[:, None])
    return grad_cov


class _NewtonSchulzSqrtm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, cov: torch.Tensor, iterations: int) -> torch.Tensor:
        c, (a, y, trace), saved = sqrtm_forward(cov, iterations)
        ctx.iterations = iterations
        ctx.save_for_backward(a, y, trace, *saved)
        return c

    @staticmethod
    def backward(ctx: Any, grad_c: torch.Tensor) -> tuple[torch.Tensor, None]:
        a, y, trace, *saved = ctx.saved_tensors
        with autocast_disabled(a):
            return sqrtm_backward(grad_c, a, y, trace, saved, ctx.iterations), None


def check_square_batch(cov: torch.Tensor, name: str = "sqrtm_newton_schulz") -> None:
    if cov.dim() != 3 or cov.shape[1] != cov.shape[2]:
        raise ValueError(f"{name} expects (B, d, d) matrices, got {tuple(cov.shape)}")


def sqrtm_newton_schulz(cov: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    """Approximate square root of SPD matrices, iSQRT-COV style.

    Args:
        cov: (B, d, d) symmetric positive semi-definite matrices (covariances).
        iterations: Newton-Schulz iterations N >= 1 (the paper uses 5 for ResNets).

    Returns:
        (B, d, d) ``sqrt(tr Sigma) * Y_N``; float32 when ``cov`` is half/bfloat16 or under
        autocast. The gradient is that of the truncated iteration.
    """
    check_square_batch(cov)
    check_iterations(iterations)
    cov = to_full_precision(cov)
    with autocast_disabled(cov):
        if torch.is_grad_enabled() and cov.requires_grad:
            return _NewtonSchulzSqrtm.apply(cov, iterations)
        return sqrtm_forward(cov, iterations)[0]
