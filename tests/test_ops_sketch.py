"""Compact bilinear pooling against count sketches and a circular convolution written out
by their definitions (no FFT), in float64."""

from __future__ import annotations

import math

import pytest
import torch

from fgvc.ops.sketch import compact_bilinear_pool, count_sketch, sketch_hashes


def _features(b: int, d: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, h, w, generator=gen, dtype=torch.float64)


def _sketch(v: list[float], h: list[int], s: list[float], n: int) -> list[float]:
    out = [0.0] * n
    for i, value in enumerate(v):
        out[h[i]] += s[i] * value
    return out


def _circular_convolution(a: list[float], b: list[float]) -> list[float]:
    n = len(a)
    return [sum(a[i] * b[(k - i) % n] for i in range(n)) for k in range(n)]


def _explicit(x: torch.Tensor, hashes: tuple, n: int) -> torch.Tensor:
    h1, s1, h2, s2 = (t.tolist() for t in hashes)
    b, d, hh, ww = x.shape
    out = []
    for image in range(b):
        y = [0.0] * n
        for i in range(hh):
            for j in range(ww):
                v = x[image, :, i, j].tolist()
                conv = _circular_convolution(_sketch(v, h1, s1, n), _sketch(v, h2, s2, n))
                y = [p + q for p, q in zip(y, conv)]
        z = [math.copysign(math.sqrt(abs(t) + 1e-8), t) if t else 0.0 for t in y]
        norm = math.sqrt(sum(t * t for t in z))
        out.append([t / norm for t in z])
    return torch.tensor(out, dtype=torch.float64)


def test_hashes_are_seeded_in_range_and_signs():
    h1, s1, h2, s2 = sketch_hashes(50, 7, seed=3)
    assert all(t.shape == (50,) for t in (h1, s1, h2, s2))
    assert h1.dtype == torch.int64 and 0 <= int(h1.min()) and int(h1.max()) < 7
    assert set(s1.tolist()) | set(s2.tolist()) == {-1.0, 1.0}
    assert not torch.equal(h1, h2)
    assert all(torch.equal(a, b) for a, b in zip(sketch_hashes(50, 7, 3), (h1, s1, h2, s2)))
    assert not torch.equal(sketch_hashes(50, 7, 4)[0], h1)


def test_count_sketch_is_its_definition():
    h, s, _, _ = sketch_hashes(6, 4, seed=0)
    v = torch.randn(6, dtype=torch.float64)
    expected = _sketch(v.tolist(), h.tolist(), s.tolist(), 4)
    torch.testing.assert_close(count_sketch(v, h, s, 4), torch.tensor(expected).double())


def _all_bins_reached(hashes: tuple, n: int) -> bool:
    """Every output bin receives some pair (i, j): none is 0 by construction, where rounding
    (1e-17 from the FFT) meets the signed root's jump at 0."""
    h1, _, h2, _ = hashes
    return len({(a + b) % n for a in h1.tolist() for b in h2.tolist()}) == n


@pytest.mark.parametrize("n", [8, 11])  # odd lengths too
def test_compact_bilinear_pool_is_the_sum_of_circular_convolutions(n):
    x = _features(2, 8, 3, 2)
    hashes = sketch_hashes(8, n, seed=1)
    assert _all_bins_reached(hashes, n)
    out = compact_bilinear_pool(x, *hashes, n)
    torch.testing.assert_close(out, _explicit(x, hashes, n), rtol=1e-10, atol=1e-12)


def test_sketch_inner_products_estimate_the_bilinear_kernel():
    """E[<TS(x), TS(y)>] = <x, y>^2 over the hashes (Pham and Pagh): averaged over seeds."""
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(2, 20, 1, 1, generator=gen, dtype=torch.float64)
    n, trials, total = 16, 400, 0.0
    for seed in range(trials):
        h1, s1, h2, s2 = sketch_hashes(20, n, seed)
        tx, ty = (
            torch.fft.irfft(
                torch.fft.rfft(count_sketch(v.flatten(), h1, s1, n))
                * torch.fft.rfft(count_sketch(v.flatten(), h2, s2, n)),
                n=n,
            )
            for v in (x, y)
        )
        total += float(tx @ ty)
    kernel = float(x.flatten() @ y.flatten()) ** 2
    spread = float(x.flatten().norm() * y.flatten().norm()) ** 2
    assert abs(total / trials - kernel) < 0.25 * spread


def test_gradients_and_autocast():
    x = _features(2, 4, 2, 2, seed=2).requires_grad_()
    hashes = sketch_hashes(4, 8, seed=1)
    assert _all_bins_reached(hashes, 8)
    assert torch.autograd.gradcheck(
        lambda t: compact_bilinear_pool(t, *hashes, 8), (x,), eps=1e-6, atol=1e-6
    )
    xf = x.detach().float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = compact_bilinear_pool(xf.bfloat16(), *hashes, 8)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, compact_bilinear_pool(xf.bfloat16().float(), *hashes, 8))
    with pytest.raises(ValueError, match="hashes for"):
        compact_bilinear_pool(torch.zeros(1, 5, 2, 2), *hashes, 8)
