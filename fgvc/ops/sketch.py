"""Compact bilinear pooling by Tensor Sketch (Gao et al., CVPR 2016): (B, d, h, w) -> (B, D).

A count sketch psi(v)[k] = sum of s(i) v_i over the i with h(i) = k (hashes h in [0, D),
signs s in {-1, +1}) projects a d-vector to D. The circular convolution of two independent
sketches of v is a sketch of the outer product v v^T (Pham and Pagh, 2013), so summing it over
the M positions approximates bilinear pooling in D dimensions without forming d x d:

    y = sum_m  psi_1(x_m) (*) psi_2(x_m)      (*): circular convolution, by FFT
    out = l2_normalize(sign(y) sqrt(|y| + eps))

The convolution theorem lets the sum over positions happen in the frequency domain, before a
single inverse FFT per image.
"""

from __future__ import annotations

import torch

from fgvc.ops._precision import autocast_disabled, to_full_precision
from fgvc.ops.bilinear import l2_normalize, signed_sqrt
from fgvc.ops.checks import check_feature_map


def sketch_hashes(
    in_dim: int, out_dim: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(h1, s1, h2, s2) for two independent count sketches R^in_dim -> R^out_dim.

    ``h`` are int64 in [0, out_dim), ``s`` float32 in {-1, +1}, drawn from a generator
    seeded with ``seed`` (deterministic on every device).
    """
    gen = torch.Generator().manual_seed(seed)
    h1 = torch.randint(out_dim, (in_dim,), generator=gen)
    h2 = torch.randint(out_dim, (in_dim,), generator=gen)
    s1 = torch.randint(2, (in_dim,), generator=gen).float().mul_(2).sub_(1)
    s2 = torch.randint(2, (in_dim,), generator=gen).float().mul_(2).sub_(1)
    return h1, s1, h2, s2


def count_sketch(x: torch.Tensor, h: torch.Tensor, s: torch.Tensor, out_dim: int) -> torch.Tensor:
    """(..., d) -> (..., out_dim): entry k sums s(i) x_i over the i with h(i) = k."""
    out = x.new_zeros((*x.shape[:-1], out_dim))
    return out.index_add(-1, h, x * s.to(x.dtype))


def compact_bilinear_pool(
    x: torch.Tensor,
    h1: torch.Tensor,
    s1: torch.Tensor,
    h2: torch.Tensor,
    s2: torch.Tensor,
    out_dim: int,
) -> torch.Tensor:
    """Tensor Sketch pooling of a feature map, then signed square root and L2 norm.

    Args:
        x: (B, d, h, w) features.
        h1, s1, h2, s2: the two sketches' hashes and signs (:func:`sketch_hashes`), (d,).
        out_dim: D, the projection's length.

    Returns:
        (B, D) unit vectors; float32 for half/bfloat16 input and under autocast (the FFT
        runs in float32), float64 for float64 input.
    """
    check_feature_map(x, "compact_bilinear_pool")
    if h1.shape != (x.shape[1],) or h2.shape != h1.shape:
        raise ValueError(
            f"compact_bilinear_pool: hashes for {tuple(h1.shape)} channels, "
            f"the map has {x.shape[1]}"
        )
    x = to_full_precision(x)
    b, d, hh, ww = x.shape
    with autocast_disabled(x):
        feats = x.reshape(b, d, hh * ww).transpose(1, 2)  # (B, M, d)
        f1 = torch.fft.rfft(count_sketch(feats, h1, s1, out_dim), dim=-1)
        f2 = torch.fft.rfft(count_sketch(feats, h2, s2, out_dim), dim=-1)
        y = torch.fft.irfft((f1 * f2).sum(dim=1), n=out_dim, dim=-1)
        return l2_normalize(signed_sqrt(y))
