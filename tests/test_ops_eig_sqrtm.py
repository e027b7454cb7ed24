"""MPN-COV's square root by eigendecomposition against numpy/scipy in float64."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from fgvc.ops.eig_sqrtm import mpn_cov, sqrtm_eig, sqrtm_export_form


def _features(b: int, d: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, h, w, generator=gen, dtype=torch.float64).relu()


def _numpy_mpn_cov(x: np.ndarray) -> np.ndarray:
    """Covariance of each map, scipy's principal square root, upper triangle row by row."""
    b, d = x.shape[:2]
    rows, cols = np.triu_indices(d)
    out = []
    for feats in x.reshape(b, d, -1):
        centred = feats - feats.mean(axis=1, keepdims=True)
        sigma = centred @ centred.T / feats.shape[1]
        out.append(np.real(scipy.linalg.sqrtm(sigma))[rows, cols])
    return np.stack(out)


def test_mpn_cov_is_the_covariance_square_root():
    x = _features(3, 6, 5, 4)
    got = mpn_cov(x).numpy()
    np.testing.assert_allclose(got, _numpy_mpn_cov(x.numpy()), rtol=1e-9, atol=1e-11)


def test_square_of_the_root_is_the_matrix_and_negative_noise_counts_as_zero():
    gen = torch.Generator().manual_seed(1)
    u, _ = torch.linalg.qr(torch.randn(2, 5, 5, generator=gen, dtype=torch.float64))
    lam = torch.tensor([[4.0, 1.0, 0.25, 0.0, -1e-17]] * 2, dtype=torch.float64)
    cov = u @ torch.diag_embed(lam) @ u.mT
    root = sqrtm_eig(cov)
    expected = u @ torch.diag_embed(lam.clamp_min(0).sqrt()) @ u.mT
    # the exact zero comes out of eigh as +-1e-16: its root, 1e-8, is the error
    torch.testing.assert_close(root, expected, rtol=1e-10, atol=1e-7)
    torch.testing.assert_close(root @ root, u @ torch.diag_embed(lam.clamp_min(0)) @ u.mT)


def test_gradient_is_the_square_roots_derivative():
    x = _features(2, 4, 3, 3, seed=2).requires_grad_()
    assert torch.autograd.gradcheck(mpn_cov, (x,), eps=1e-6, atol=1e-6)


def test_repeated_eigenvalues_give_finite_gradients():
    """Fewer positions than channels: a rank-deficient covariance with repeated zero
    eigenvalues, where autograd through eigh divides by zero."""
    x = _features(2, 8, 2, 1, seed=3).requires_grad_()  # M = 2 < d = 8
    mpn_cov(x).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_autocast_runs_the_root_in_float32():
    x = _features(2, 6, 4, 4).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mpn_cov(x.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, mpn_cov(x.bfloat16().float()))


def test_zero_map_gives_zeros_not_nan():
    x = torch.zeros(1, 4, 3, 3, requires_grad=True)
    out = mpn_cov(x)
    out.sum().backward()
    assert torch.equal(out, torch.zeros_like(out)) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("d, m", [(8, 4), (16, 36)])  # singular and regular
def test_export_form_is_the_root_in_float32(d, m):
    """ONNX has no eigh: exported graphs use Newton-Schulz to convergence on A + ridge."""
    feats = torch.randn(d, m, generator=torch.Generator().manual_seed(d)).relu()
    cov = torch.cov(feats, correction=0)
    a = (cov / cov.trace())[None]
    exact = torch.from_numpy(np.real(scipy.linalg.sqrtm(a[0].double().numpy())))[None]
    torch.testing.assert_close(sqrtm_export_form(a).double(), exact, rtol=0, atol=1e-3)
    torch.testing.assert_close(sqrtm_eig(a).double(), exact, rtol=0, atol=1e-3)
