"""Global covariance pooling: (B, d, h, w) -> (B, d, d)."""

from __future__ import annotations

from typing import Any

import torch

from fgvc.ops._precision import autocast_disabled, to_full_precision, use_custom_backward
from fgvc.ops._workspace import Workspace, give_back, into
from fgvc.ops.checks import check_feature_map


def covariance_forward(
    x: torch.Tensor, ws: Workspace | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (Sigma, mu): Sigma = X_c X_c^T / M, X_c = X - mu over the M = h*w positions.

    Centring first costs O(d^2 M), against O(d M^2) for the paper's X I_hat X^T form, and
    keeps float32 accurate for features whose mean is large against their spread. With a
    workspace, Sigma is one of its buffers.
    """
    b, d, h, w = x.shape
    m = h * w
    feats = x.reshape(b, d, m)
    mean = feats.mean(dim=2, keepdim=True)
    centred = torch.sub(feats, mean, **into(ws, feats))
    if ws is None:  # plain tensor code (exporters, standalone use)
        return torch.bmm(centred, centred.transpose(1, 2)) / m, mean
    sigma = ws.take((b, d, d), feats)
    # alpha folds the 1/M into the GEMM; beta=0 ignores the (uninitialised) input.
    torch.baddbmm(sigma, centred, centred.mT, beta=0.0, alpha=1.0 / m, out=sigma)
    ws.give_back([centred])
    return sigma, mean


def covariance_backward(
    grad_sigma: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    ws: Workspace | None = None,
    symmetric: bool = False,
) -> torch.Tensor:
    """dL/dX for Sigma = X_c X_c^T / M: S X_c / M with S = G + G^T, one product.

    ``symmetric=True`` says G is already symmetric (S = 2 G, no transposed sum).

    Works from the input and its mean rather than a stored X_c: the input is usually held
    anyway (by the ReLU before the layer), and S X_c = S X - (S mu) 1^T lets the GEMM write
    straight onto the broadcast correction. The centring term of the chain rule vanishes:
    the rows of S X_c sum to zero.
    """
    b, d, h, w = x.shape
    m = h * w
    if symmetric:
        sym, scale = grad_sigma, 2.0 / m
    else:
        sym, scale = torch.add(grad_sigma, grad_sigma.mT, **into(ws, grad_sigma)), 1.0 / m
    correction = torch.bmm(sym, mean).mul_(-scale).expand(b, d, m)
    grad_x = torch.baddbmm(correction, sym, x.reshape(b, d, m), alpha=scale)
    if not symmetric:
        give_back(ws, sym)
    return grad_x.view(x.shape)


class _CovariancePool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        sigma, mean = covariance_forward(x)
        ctx.save_for_backward(x, mean)
        return sigma

    @staticmethod
    def backward(ctx: Any, grad_sigma: torch.Tensor) -> torch.Tensor:
        x, mean = ctx.saved_tensors
        with autocast_disabled(x):
            return covariance_backward(grad_sigma, x, mean)


def covariance_pool(x: torch.Tensor) -> torch.Tensor:
    """Sample covariance of a feature map over its spatial positions.

    Args:
        x: (B, d, h, w) features.

    Returns:
        (B, d, d) covariance, centred and divided by M = h * w, in float32 when ``x`` is
        half or bfloat16 (and under autocast), else in ``x``'s dtype.
    """
    check_feature_map(x, "covariance_pool")
    x = to_full_precision(x)
    with autocast_disabled(x):
        if use_custom_backward(x):
            return _CovariancePool.apply(x)
        return covariance_forward(x)[0]
