"""Matrix square root by the coupled Newton-Schulz iteration (iSQRT-COV, CVPR 2018).

Forward, for N iterations on a trace-normalized A = Sigma / tr(Sigma):

    Y_0 = A, Z_0 = I,  T_k = (3I - Z_{k-1} Y_{k-1}) / 2
    Y_k = Y_{k-1} T_k,  Z_k = T_k Z_{k-1}          (Z_N is not needed)
    C = sqrt(tr(Sigma)) Y_N                         (post-compensation)

Backward. Every Y_k, Z_k is a polynomial in A, so for symmetric A they are symmetric and
commute, and Y_N = f(A) for a fixed polynomial f. Its Frechet derivative L(A, .) is then
self-adjoint, so for a symmetric input the gradient sym(dL/dA) equals L(A, sym(dL/dY_N)): the
derivative of the truncated iteration along the symmetrized upstream gradient E, carried
forward. With P_k = Z_k Y_k = P_{k-1} T_k^2, F_k = dP_k and D_k = dY_k along E:

    D_1 = 1.5 E - 0.5 (A E + E A),   F_1 = D_1 T_1 - 0.5 Y_1 E       (P_1 = Y_1 T_1)
    D_k = D_{k-1} T_k - 0.5 Y_{k-1} F_{k-1}
    F_k = H + H^T + T_k J,  J = F_{k-1} T_k,  H = J T_k - 1.5 J

That is 5 products and one transposed sum a step, where reverse mode through the coupled
pair needs 6 products: forward 3N - 3, backward 5N - 5 (N = 1: one and one). The result
is exact for the truncated iteration (not the true square root's gradient) and is the
gradient with respect to a symmetric argument, as covariances are: like
``torch.linalg.eigh``, the antisymmetric part of the elementwise gradient is not formed.
Saved for backward: A, the output and, per step k >= 2, Y_{k-1} and T_k.
"""

from __future__ import annotations

from typing import Any

import torch

from fgvc.ops._precision import autocast_disabled, to_full_precision, use_custom_backward
from fgvc.ops._workspace import Workspace, give_back, into
from fgvc.ops.checks import check_iterations, check_square_batch

#: lower bound on the trace: an all-zero map (dead ReLU features) gives finite values.
TRACE_EPS = 1e-12


def _eye(like: torch.Tensor) -> torch.Tensor:
    return torch.eye(like.shape[-1], dtype=like.dtype, device=like.device)


def _t1(a: torch.Tensor, ws: Workspace | None = None) -> torch.Tensor:
    """T_1 = Z_1 = 1.5 I - 0.5 A."""
    if ws is None:  # functional form: exporters do not take in-place diagonal updates
        return torch.add(_eye(a).mul_(1.5), a, alpha=-0.5)
    t = torch.mul(a, -0.5, out=ws.take(tuple(a.shape), a))
    t.diagonal(dim1=-2, dim2=-1).add_(1.5)  # cheaper than adding a broadcast identity
    return t


def _half_step(z: torch.Tensor, y: torch.Tensor, ws: Workspace | None) -> torch.Tensor:
    """T = 1.5 I - 0.5 Z Y."""
    if ws is None:
        return torch.baddbmm(_eye(y), z, y, beta=1.5, alpha=-0.5)
    t = ws.take(tuple(y.shape), y)
    # beta=0: the GEMM ignores t's old contents and scales as it writes (no copy pass)
    torch.baddbmm(t, z, y, beta=0.0, alpha=-0.5, out=t)
    t.diagonal(dim1=-2, dim2=-1).add_(1.5)
    return t


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
    """Y_N for a (B, d, d) batch ``a``, and [Y_1, T_2, Y_2, T_3, ..., Y_{N-1}, T_N].

    Y_N and the Z_k come from ``ws``, the matrices the backward needs from ``ws_saved``
    (fresh tensors when None: autograd may keep them for several backward calls).
    """
    last = iterations == 1
    y = torch.baddbmm(  # Y_1 = A (3I - A) / 2
        a, a, a, beta=1.5, alpha=-0.5, **into(ws if last else ws_saved, a)
    )
    if last:
        return y, []
    z = _t1(a, ws)  # Z_1
    saved: list[torch.Tensor] = []
    for k in range(2, iterations + 1):
        last = k == iterations
        t = _half_step(z, y, ws_saved)  # T_k
        saved += [y, t]
        if not last:
            z_next = torch.bmm(t, z, **into(ws, a))
            give_back(ws, z)
            z = z_next
        y = torch.bmm(y, t, **into(ws if last else ws_saved, a))
    give_back(ws, z)
    return y, saved


def _next_dp(j: torch.Tensor, t: torch.Tensor, ws: Workspace | None) -> torch.Tensor:
    """F_k = dP_k from J = F_{k-1} T_k: H + H^T + T_k J with H = J T_k - 1.5 J.

    P_k = P_{k-1} T_k^2 and T_k = (3I - P_{k-1}) / 2 give
    dP_k = F T^2 + T^2 F + T F T - 1.5 (F T + T F) for symmetric F, T that commute.
    """
    h = torch.baddbmm(j, j, t, beta=-1.5, **into(ws, j))
    f = torch.add(h, h.mT, **into(ws, j))
    give_back(ws, h)
    return f.baddbmm_(t, j)


def newton_schulz_backward(
    grad_y: torch.Tensor,
    a: torch.Tensor,
    saved: list[torch.Tensor],
    iterations: int,
    ws: Workspace | None = None,
) -> torch.Tensor:
    """dL/dA (symmetric) from a symmetric dL/dY_N: the derivative of Y_N along ``grad_y``.

    With a workspace the result is one of its buffers; ``grad_y`` stays the caller's.
    """

    def mm(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.bmm(u, v, **into(ws, a))

    e = grad_y
    # Y_1 = 1.5 A - 0.5 A^2: D_1 = 1.5 E - 0.5 (A E + E A)
    ae = mm(a, e)
    d_y = torch.add(ae, ae.mT, **into(ws, a)).mul_(-0.5).add_(e, alpha=1.5)
    give_back(ws, ae)
    if iterations == 1:
        return d_y
    # P_1 = Y_1 T_1 with T_1 = 1.5 I - 0.5 A: F_1 = D_1 T_1 - 0.5 Y_1 E, no transposed sum
    f = torch.baddbmm(d_y, d_y, a, beta=1.5, alpha=-0.5, **into(ws, a))
    f.baddbmm_(saved[0], e, alpha=-0.5)
    for k in range(2, iterations + 1):
        y, t = saved[2 * (k - 2) : 2 * (k - 1)]  # Y_{k-1}, T_k
        j = mm(f, t) if k < iterations else None
        d_next = mm(d_y, t).baddbmm_(y, f, alpha=-0.5)
        f_next = _next_dp(j, t, ws) if j is not None else None
        give_back(ws, d_y, f, j)
        d_y, f = d_next, f_next
    return d_y


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
    grad_sym: torch.Tensor,
    inner: torch.Tensor,
    a: torch.Tensor,
    trace: torch.Tensor,
    saved: list[torch.Tensor],
    iterations: int,
    ws: Workspace | None = None,
) -> torch.Tensor:
    """dL/dSigma (symmetric) for C = sqrt(t) Y_N(Sigma / t), t = max(tr Sigma, eps).

    Args:
        grad_sym: the symmetric part of dL/dC; consumed (scaled in place).
        inner: <dL/dC, C> per batch entry.

    With a workspace the result is its buffer.
    """
    trace_c = trace.clamp_min(TRACE_EPS)
    grad_y = grad_sym.mul_(trace_c.sqrt()[:, None, None])
    grad_a = newton_schulz_backward(grad_y, a, saved, iterations, ws)
    # t enters twice: post-compensation sqrt(t) (<dC, C> / (2 t)) and pre-normalization
    # A = Sigma / t (-<dA, A> / t).
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
        ctx.save_for_backward(a, trace, c, *saved)
        return c

    @staticmethod
    def backward(ctx: Any, grad_c: torch.Tensor) -> tuple[torch.Tensor, None]:
        a, trace, c, *saved = ctx.saved_tensors
        with autocast_disabled(a):
            grad_sym = (grad_c + grad_c.mT).mul_(0.5)
            inner = batch_inner(grad_c, c)
            grad = sqrtm_backward(grad_sym, inner, a, trace, saved, ctx.iterations)
        return grad, None


def sqrtm_newton_schulz(cov: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    """Approximate square root of SPD matrices, iSQRT-COV style.

    Args:
        cov: (B, d, d) symmetric positive semi-definite matrices (covariances).
        iterations: Newton-Schulz iterations N >= 1 (the paper uses 5 for ResNets).

    Returns:
        (B, d, d) ``sqrt(tr Sigma) * Y_N``; float32 when ``cov`` is half/bfloat16 or under
        autocast. The gradient is that of the truncated iteration with respect to a
        symmetric ``cov`` (the symmetric part of the elementwise gradient).
    """
    check_square_batch(cov, "sqrtm_newton_schulz")
    check_iterations(iterations)
    cov = to_full_precision(cov)
    with autocast_disabled(cov):
        if use_custom_backward(cov):
            return _NewtonSchulzSqrtm.apply(cov, iterations)
        return sqrtm_forward(cov, iterations)[0]
