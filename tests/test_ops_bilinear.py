"""B-CNN pooling against an explicit sum of outer products in float64."""

from __future__ import annotations

import math

import torch

from fgvc.ops.bilinear import bilinear_pool, signed_sqrt


def _features(b: int, d: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, h, w, generator=gen, dtype=torch.float64)


def _explicit(x: torch.Tensor) -> torch.Tensor:
    """(1/M) sum over positions of x x^T, entry by entry; signed sqrt; unit length."""
    b, d, h, w = x.shape
    out = torch.zeros(b, d * d, dtype=torch.float64)
    for n in range(b):
        z = [0.0] * (d * d)
        for i in range(h):
            for j in range(w):
                v = x[n, :, i, j].tolist()
                for p in range(d):
                    for q in range(d):
                        z[p * d + q] += v[p] * v[q] / (h * w)
        z = [math.copysign(math.sqrt(abs(t) + 1e-8), t) if t else 0.0 for t in z]
        norm = math.sqrt(sum(t * t for t in z))
        out[n] = torch.tensor([t / norm for t in z], dtype=torch.float64)
    return out


def test_bilinear_pool_matches_the_outer_product_sum():
    x = _features(2, 5, 3, 2)
    out = bilinear_pool(x)
    torch.testing.assert_close(out, _explicit(x), rtol=1e-12, atol=1e-12)
    assert out.shape == (2, 25)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2, dtype=torch.float64))


def test_gradients():
    x = _features(2, 3, 2, 2, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(bilinear_pool, (x,), eps=1e-6, atol=1e-6)
    assert torch.equal(signed_sqrt(torch.zeros(3)), torch.zeros(3))


def test_autocast_keeps_float32_and_zero_map_is_finite():
    x = _features(2, 4, 3, 3).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bilinear_pool(x.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, bilinear_pool(x.bfloat16().float()))
    zero = torch.zeros(1, 3, 2, 2, requires_grad=True)
    bilinear_pool(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()
