"""Bilinear pooling (B-CNN, Lin et al., ICCV 2015): (B, d, h, w) -> (B, d * d).

G = X X^T / M                      (no centring, unlike the covariance)
z = sign(G) sqrt(|G| + eps)        (signed square root, elementwise)
out = z / ||z||_2                  (over the d * d entries)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fgvc.ops._precision import autocast_disabled, to_full_precision
from fgvc.ops.checks import check_feature_map

#: Inside the signed square root (the authors' B-CNN value): its slope at 0 stays finite.
SIGNED_SQRT_EPS = 1e-8
#: Floor of the L2 norm: an all-zero map gives zeros, not NaN.
NORM_EPS = 1e-12


def signed_sqrt(x: torch.Tensor, eps: float = SIGNED_SQRT_EPS) -> torch.Tensor:
    """sign(x) sqrt(|x| + eps), elementwise (0 at 0)."""
    return torch.sign(x) * torch.sqrt(x.abs() + eps)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Rows of a (B, n) batch scaled to unit Euclidean length."""
    return F.normalize(x, p=2.0, dim=1, eps=NORM_EPS)


def bilinear_pool(x: torch.Tensor) -> torch.Tensor:
    """B-CNN pooling of a feature map.

    Args:
        x: (B, d, h, w) features.

    Returns:
        (B, d * d) unit vectors, row-major G; float32 for half/bfloat16 input and under
        autocast (float64 stays float64).
    """
    check_feature_map(x, "bilinear_pool")
    x = to_full_precision(x)
    b, d, h, w = x.shape
    with autocast_disabled(x):
        feats = x.reshape(b, d, h * w)
        gram = torch.bmm(feats, feats.transpose(1, 2)) / (h * w)
        return l2_normalize(signed_sqrt(gram).reshape(b, d * d))
