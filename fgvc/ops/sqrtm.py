"""Matrix square root by the coupled Newton-Schulz iteration (iSQRT-COV, CVPR 2018).

Forward, for N iterations on a trace-normalized A = Sigma / tr(Sigma):

    Y_0 = A, Z_0 = I,  T_k = (3I - Z_{k-1} Y_{k-1}) / 2
    Y_k = Y_{k-1} T_k,  Z_k = T_k Z_{k-1}          (Z_N is not needed)
    C = sqrt(tr(Sigma)) Y_N                         (post-compensation)

The backward is the exact reverse-mode gradient of these truncated operations, written
out by hand so that sums ride inside GEMMs (in-place ``baddbmm_``) and the first step
(T_1 = (3I - A)/2, so Y_1 = 1.5 A - 0.5 A^2) costs one product instead of two.
Products: forward 3N - 3, backward 6N - 6 (N >= 2); N = 1: one and two.
Saved for backward: A and, per step k >= 2, Y_{k-1}, Z_{k-1}, T_k (Z_1 is rebuilt from A).
"""

from __future__ import annotations

from typing import Any

import torch

from fgvc.ops._precision import autocast_disabled, to_full_precision, use_custom_backward
from fgvc.ops._workspace import Workspace, give_back, into

#: lower bound on the trace: an all-zero map (dead ReLU features) gives finite values.
TRACE_EPS = 1e-12


def check_iterations(iterations: int) -> None:
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")


def check_square_batch(cov: torch.Tensor, name: str = "sqrtm_newton_schulz") -> None:
    if cov.dim() != 3 or cov.shape[1] != cov.shape[2]:
        raise ValueError(f"{name} expects (B, d, d) matrices, got {tuple(cov.shape)}")


def _eye(d: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(d, dtype=like.dtype, device=like.device)


def _z1(a: torch.Tensor, ws: Workspace | None = None) -> torch.Tensor:
    eye = _eye(a.shape[-1], a).mul_(1.5)
    return torch.add(eye, a, alpha=-0.5, **into(ws, a))  # Z_1 = T_1 = 1.5 I - 0.5 A


def batch_inner(u: torch.Tensor, v: torch.Tensor, ws: Workspace | None = None) -> torch.Tensor:
    """<u_b, v_b> (Frobenius) per batch entry (a batched GEMV would be 10x slower on CPU)."""
    prod = torch.mul(u, v, **into(ws, u))
    inner = prod.sum(tuple(range(1, u.dim())))
    give_back(ws, prod)
    return inner


def newton_schulz_forward(
    a: torch.Tensor,
    iterations: int,
    ws: Workspace | None = None,
    ws_saved: Workspace | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Y_N for a (B, d, d) batch ``a``, and [Y_1, T_2, Y_2, Z_2, T_3, ...] for the backward.

    Y_N comes from ``ws`` and the matrices the backward needs from ``ws_saved`` (fresh
    tensors when None: autograd may keep them for several backward calls).
    """
    last = iterations == 1
    y = torch.baddbmm(  # Y_1 = A (3I - A) / 2
        a, a, a, beta=1.5, alpha=-0.5, **into(ws if last else ws_saved, a)
    )
    if last:
        return y, []
    eye = _eye(a.shape[-1], a)
    z1 = z = _z1(a, ws)
    saved: list[torch.Tensor] = []
    for k in range(2, iterations + 1):
        last = k == iterations
        # T_k = 1.5 I - 0.5 Z Y
        t = torch.baddbmm(eye, z, y, beta=1.5, alpha=-0.5, **into(ws_saved, a))
        saved += [y, t] if k == 2 else [y, z, t]
        if not last:
            z = torch.bmm(t, z, **into(ws_saved, a))
        y = torch.bmm(y, t, **into(ws if last else ws_saved, a))
    give_back(ws, z1)  # rebuilt from A in the backward
    return y, saved


def newton_schulz_backward(
    grad_y: torch.Tensor,
    a: torch.Tensor,
    saved: list[torch.Tensor],
    iterations: int,
    ws: Workspace | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reverse-mode through the iteration (transposes kept exact).

    Returns:
        (dL/dA, <dL/dY_N, Y_N>) -- the inner product, needed for the post-compensation,
        falls out of the first step (<G, Y T> = <Y^T G, T>) so Y_N need not be kept.
        With a workspace, dL/dA is one of its buffers; ``grad_y`` stays the caller's.
    """

    def mm(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.bmm(u, v, **into(ws, a))

    if iterations == 1:
        ga_t = mm(grad_y, a.mT)  # G A^T; <G, A A> = <G A^T, A>
        inner = 1.5 * batch_inner(grad_y, a, ws) - 0.5 * batch_inner(ga_t, a, ws)
        grad_a = ga_t.baddbmm_(a.mT, grad_y).mul_(-0.5).add_(grad_y, alpha=1.5)
        return grad_a, inner
    gy = grad_y
    gz: torch.Tensor | None = None
    inner = grad_y.new_empty(0)
    z1 = _z1(a, ws)
    for k in range(iterations, 1, -1):
        if k == 2:
            (y, t), z = saved[:2], z1
        else:
            y, z, t = saved[2 + 3 * (k - 3) : 2 + 3 * (k - 2)]
        # forward step: T = 1.5 I - 0.5 Z Y, Y_k = Y T, Z_k = T Z (Z_N unused)
        gt = mm(y.mT, gy)
        if gz is None:
            inner = batch_inner(gt, t, ws)
        else:
            gt.baddbmm_(gz, z.mT)
        gy_prev = mm(gy, t.mT).baddbmm_(z.mT, gt, alpha=-0.5)
        if gz is None:
            gz_prev = mm(gt, y.mT).mul_(-0.5)
        else:
            gz_prev = mm(t.mT, gz).baddbmm_(gt, y.mT, alpha=-0.5)
        give_back(ws, gt, gz, None if gy is grad_y else gy)
        gy, gz = gy_prev, gz_prev
    # Y_1 = 1.5 A - 0.5 A A, Z_1 = 1.5 I - 0.5 A
    grad_a = mm(gy, a.mT).baddbmm_(a.mT, gy).mul_(-0.5)
    grad_a.add_(gy, alpha=1.5).add_(gz, alpha=-0.5)
    give_back(ws, gz, z1, None if gy is grad_y else gy)
    return grad_a, inner


def sqrtm_forward(
    cov: torch.Tensor,
    iterations: int,
    ws: Workspace | None = None,
    ws_saved: Workspace | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Pre-normalize, iterate, post-compensate. Returns (C, A, trace, saved).

    C comes from ``ws``; A and ``saved`` (what the backward needs) from ``ws_saved``.
    """
    trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1)
    trace_c = trace.clamp_min(TRACE_EPS)
    a = torch.div(cov, trace_c[:, None, None], **into(ws_saved, cov))
    y, saved = newton_schulz_forward(a, iterations, ws, ws_saved)
    return y.mul_(trace_c.sqrt()[:, None, None]), a, trace, saved


def sqrtm_backward(
    grad_c: torch.Tensor,
    a: torch.Tensor,
    trace: torch.Tensor,
    saved: list[torch.Tensor],
    iterations: int,
    ws: Workspace | None = None,
) -> torch.Tensor:
    """dL/dSigma from dL/dC for C = sqrt(t) Y_N(Sigma / t), t = max(tr Sigma, eps).

    ``grad_c`` is consumed (scaled in place). With a workspace the result is its buffer.
    """
    trace_c = trace.clamp_min(TRACE_EPS)
    root = trace_c.sqrt()
    grad_y = grad_c.mul_(root[:, None, None])
    grad_a, inner = newton_schulz_backward(grad_y, a, saved, iterations, ws)
    # t enters twice: post-compensation sqrt(t) (<dC, Y_N> / (2 sqrt t) = inner / (2 t))
    # and pre-normalization A = Sigma / t (-<dA, A> / t).
    grad_t = (0.5 * inner - batch_inner(grad_a, a, ws)) / trace_c
    grad_t = grad_t * (trace > TRACE_EPS)  # clamp_min passes no gradient below eps
    grad_cov = grad_a.div_(trace_c[:, None, None])
    grad_cov.diagonal(dim1=-2, dim2=-1).add_(grad_t[:, None])
    return grad_cov


class _NewtonSchulzSqrtm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, cov: torch.Tensor, iterations: int) -> torch.Tensor:
        c, a, trace, saved = sqrtm_forward(cov, iterations)
        ctx.iterations = iterations
        ctx.save_for_backward(a, trace, *saved)
        return c

    @staticmethod
    def backward(ctx: Any, grad_c: torch.Tensor) -> tuple[torch.Tensor, None]:
        a, trace, *saved = ctx.saved_tensors
        with autocast_disabled(a):
            grad = sqrtm_backward(grad_c.clone(), a, trace, saved, ctx.iterations)
        return grad, None


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
        if use_custom_backward(cov):
            return _NewtonSchulzSqrtm.apply(cov, iterations)
        return sqrtm_forward(cov, iterations)[0]
