"""Reference formulations, kept for verification and benchmarks (not used by the models).

- :func:`authors_isqrt_cov`: iSQRT-COV as the paper formulates it, written by us from its
  equations: covariance as X I_hat X^T with the M x M matrix
  I_hat = (I - 1/M 1 1^T) / M, and the hand-derived backward of the paper (Sec. 3.2):
  for k = N .. 1, with Y_0 = A, Z_0 = I,

      dY_{k-1} = 1/2 (dY_k (3I - Y Z) - Z dZ_k Z - Z Y dY_k)
      dZ_{k-1} = 1/2 ((3I - Y Z) dZ_k - Y dY_k Y - dZ_k Z Y)      (Y, Z at step k-1)

  then dSigma = dA / tr - tr(dA^T Sigma) / tr^2 I + tr(dC^T Y_N) / (2 sqrt(tr)) I.
- :func:`eig_sqrt_cov`: MPN-COV style, the exact square root by eigendecomposition.
"""

from __future__ import annotations

from typing import Any

import torch

from fgvc.ops.triu import triu_vec


def _i_hat(m: int, like: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(m, dtype=like.dtype, device=like.device)
    return (eye - 1.0 / m) / m


class AuthorsCovpool(torch.autograd.Function):
    """Sigma = X I_hat X^T; backward dX = (G + G^T) X I_hat."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w = x.shape
        feats = x.reshape(b, d, h * w)
        i_hat = _i_hat(h * w, x)
        ctx.save_for_backward(feats, i_hat)
        ctx.in_shape = x.shape
        return feats.matmul(i_hat).bmm(feats.mT)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        feats, i_hat = ctx.saved_tensors
        return ((grad + grad.mT).bmm(feats).matmul(i_hat)).reshape(ctx.in_shape)


class AuthorsSqrtm(torch.autograd.Function):
    """Trace pre-normalization, coupled Newton-Schulz, post-compensation; paper backward."""

    @staticmethod
    def forward(ctx: Any, sigma: torch.Tensor, iterations: int) -> torch.Tensor:
        b, d, _ = sigma.shape
        eye3 = 3.0 * torch.eye(d, dtype=sigma.dtype, device=sigma.device).expand(b, d, d)
        trace = sigma.diagonal(dim1=-2, dim2=-1).sum(-1)
        a = sigma / trace[:, None, None]
        ys, zs = [a], [torch.eye(d, dtype=sigma.dtype, device=sigma.device).expand(b, d, d)]
        for _ in range(1, iterations):
            t = 0.5 * (eye3 - zs[-1].bmm(ys[-1]))
            ys.append(ys[-1].bmm(t))
            zs.append(t.bmm(zs[-1]))
        y_n = 0.5 * ys[-1].bmm(eye3 - zs[-1].bmm(ys[-1]))
        ctx.iterations = iterations
        ctx.save_for_backward(sigma, a, trace, y_n, *ys, *zs)
        return y_n * trace.sqrt()[:, None, None]

    @staticmethod
    def backward(ctx: Any, grad_c: torch.Tensor) -> tuple[torch.Tensor, None]:
        n = ctx.iterations
        sigma, a, trace, y_n, *rest = ctx.saved_tensors
        ys, zs = rest[:n], rest[n:]
        b, d, _ = sigma.shape
        eye3 = 3.0 * torch.eye(d, dtype=sigma.dtype, device=sigma.device).expand(b, d, d)
        root = trace.sqrt()[:, None, None]
        d_y = grad_c * root
        d_trace_post = (grad_c * y_n).sum((1, 2)) / (2 * trace.sqrt())
        d_z = torch.zeros_like(d_y)
        for k in range(n - 1, -1, -1):  # step k+1 maps (Y_k, Z_k) -> (Y_{k+1}, Z_{k+1})
            y, z = ys[k], zs[k]
            yz = eye3 - y.bmm(z)
            zy = z.bmm(y)
            d_y, d_z = (
                0.5 * (d_y.bmm(yz) - z.bmm(d_z).bmm(z) - zy.bmm(d_y)),
                0.5 * (yz.bmm(d_z) - y.bmm(d_y).bmm(y) - d_z.bmm(zy)),
            )
        d_a = d_y  # Y_0 = A; Z_0 = I is a constant
        d_trace = d_trace_post - (d_a * sigma).sum((1, 2)) / trace**2
        d_sigma = d_a / trace[:, None, None] + d_trace[:, None, None] * torch.eye(
            d, dtype=sigma.dtype, device=sigma.device
        )
        return d_sigma, None


def authors_isqrt_cov(x: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    """iSQRT-COV in the paper's formulation (slow; for checks and benchmarks)."""
    return triu_vec(AuthorsSqrtm.apply(AuthorsCovpool.apply(x), iterations))


def eig_sqrt_cov(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """MPN-COV style: exact square root of the covariance by ``torch.linalg.eigh``."""
    b, d, h, w = x.shape
    feats = x.reshape(b, d, h * w)
    centred = feats - feats.mean(dim=2, keepdim=True)
    sigma = centred.bmm(centred.mT) / (h * w)
    evals, evecs = torch.linalg.eigh(sigma)
    root = evals.clamp_min(eps).sqrt()
    return triu_vec((evecs * root[:, None, :]).bmm(evecs.mT))
