"""fgvc.ops against independent float64 transcriptions of the paper's equations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fgvc.ops import ISqrtCov, covariance_pool, isqrt_cov, sqrtm_newton_schulz, triu_vec
from fgvc.ops.reference import authors_isqrt_cov, eig_sqrt_cov
from fgvc.ops.triu import triu_position_index


def transcribed_isqrt_cov(x: torch.Tensor, n: int) -> torch.Tensor:
    """The design note's equations, literally, one sample at a time (autograd for grads)."""
    outs = []
    for sample in x:
        feats = sample.reshape(sample.shape[0], -1)
        m = feats.shape[1]
        i_hat = (torch.eye(m, dtype=x.dtype) - torch.ones(m, m, dtype=x.dtype) / m) / m
        sigma = feats @ i_hat @ feats.T
        trace = torch.trace(sigma)
        a = sigma / trace
        eye = torch.eye(a.shape[0], dtype=x.dtype)
        y, z = a, eye
        for _ in range(1, n):
            t = (3 * eye - z @ y) / 2
            y, z = y @ t, t @ z
        y = y @ (3 * eye - z @ y) / 2
        c = torch.sqrt(trace) * y
        d = c.shape[0]
        outs.append(torch.stack([c[i, j] for i in range(d) for j in range(i, d)]))
    return torch.stack(outs)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.fixture
def feats64() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(3, 12, 5, 7, generator=gen, dtype=torch.float64).relu()


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_matches_transcription_forward_and_grad(feats64, n):
    x1 = feats64.clone().requires_grad_()
    x2 = feats64.clone().requires_grad_()
    ours, ref = isqrt_cov(x1, n), transcribed_isqrt_cov(x2, n)
    assert ours.shape == (3, 12 * 13 // 2)
    assert rel(ours, ref) < 1e-10
    weight = torch.randn(
        ours.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    (g1,) = torch.autograd.grad((ours * weight).sum(), x1)
    (g2,) = torch.autograd.grad((ref * weight).sum(), x2)
    assert rel(g1, g2) < 1e-10


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_matches_papers_hand_derived_backward(feats64, n):
    """The paper's formulation (X I_hat X^T, its backward equations) to 1e-6 relative."""
    x1 = feats64.clone().requires_grad_()
    x2 = feats64.clone().requires_grad_()
    ours, theirs = isqrt_cov(x1, n), authors_isqrt_cov(x2, n)
    assert rel(ours, theirs) < 1e-6
    weight = torch.randn(
        ours.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    (g1,) = torch.autograd.grad(ours, x1, weight)
    (g2,) = torch.autograd.grad(theirs, x2, weight)
    assert rel(g1, g2) < 1e-6


def test_converges_to_eigendecomposition_root():
    gen = torch.Generator().manual_seed(4)
    # well-spread spectrum: many more positions than channels
    x = torch.randn(2, 16, 12, 12, generator=gen, dtype=torch.float64)
    exact = eig_sqrt_cov(x)
    errors = [rel(isqrt_cov(x, n), exact) for n in (1, 2, 3, 5, 8, 12)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-8
    assert errors[0] > 1e-2  # one iteration is far from the root: the test can tell


@pytest.mark.parametrize("n", [1, 2, 5])
def test_gradcheck(n):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 5, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: isqrt_cov(t, n), (x,))
    base = torch.randn(2, 5, 5, generator=gen, dtype=torch.float64)
    base = (base @ base.mT + torch.eye(5)).requires_grad_()
    # sqrtm's gradient is the one for a symmetric argument: check it through one
    assert torch.autograd.gradcheck(lambda c: sqrtm_newton_schulz((c + c.mT) / 2, n), (base,))
    assert torch.autograd.gradcheck(covariance_pool, (x,))


def transcribed_sqrtm(cov: torch.Tensor, n: int) -> torch.Tensor:
    """Pre-normalization, coupled iteration, post-compensation as plain ops (autograd)."""
    trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]
    a = cov / trace
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype)
    y, z = a, eye
    for _ in range(n):
        t = (3 * eye - z @ y) / 2
        y, z = y @ t, t @ z
    return trace.sqrt() * y


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_sqrtm_gradient_is_symmetric_part_of_elementwise_gradient(n):
    """For a symmetric input and any upstream gradient (not symmetric here), the backward
    gives sym(dL/dSigma) of plain autograd through the iteration; the layer's input is a
    covariance, so that is all its gradient needs."""
    gen = torch.Generator().manual_seed(11)
    base = torch.randn(3, 7, 20, generator=gen, dtype=torch.float64)
    cov = base @ base.mT / 20
    upstream = torch.randn(3, 7, 7, generator=gen, dtype=torch.float64)
    c1, c2 = cov.clone().requires_grad_(), cov.clone().requires_grad_()
    ours, ref = sqrtm_newton_schulz(c1, n), transcribed_sqrtm(c2, n)
    assert rel(ours, ref) < 1e-12
    (g1,) = torch.autograd.grad(ours, c1, upstream)
    (g2,) = torch.autograd.grad(ref, c2, upstream)
    assert rel(g2, g2.mT) > 1e-3  # the elementwise gradient really is not symmetric
    assert rel(g1, (g2 + g2.mT) / 2) < 1e-10


def test_covariance_matches_numpy(feats64):
    cov = covariance_pool(feats64)
    for i, sample in enumerate(feats64):
        expected = np.cov(sample.reshape(12, -1).numpy(), bias=True)
        np.testing.assert_allclose(cov[i].numpy(), expected, rtol=1e-12, atol=1e-14)


def test_sqrtm_squares_back_to_input():
    gen = torch.Generator().manual_seed(6)
    base = torch.randn(2, 6, 40, generator=gen, dtype=torch.float64)
    cov = base @ base.mT / 40
    root = sqrtm_newton_schulz(cov, iterations=15)
    torch.testing.assert_close(root @ root, cov, rtol=1e-8, atol=1e-10)


def test_triu_order_is_row_major_upper_triangle():
    d = 5
    mat = torch.arange(2 * d * d, dtype=torch.float32).reshape(2, d, d)
    expected = [[float(mat[b, i, j]) for i in range(d) for j in range(i, d)] for b in range(2)]
    assert triu_vec(mat).tolist() == expected
    with pytest.raises(ValueError, match=r"\(B, d, d\)"):
        triu_vec(torch.zeros(2, 3, 4))


def test_triu_position_index_mirrors_the_triangle():
    d = 6
    gen = torch.Generator().manual_seed(12)
    base = torch.randn(2, d, d, generator=gen)
    sym = base + base.mT
    vec = triu_vec(sym)
    index = triu_position_index(d)
    torch.testing.assert_close(vec[:, index].view(2, d, d), sym, rtol=0, atol=0)


def test_float32_agrees_with_float64(feats64):
    out32 = isqrt_cov(feats64.float())
    assert out32.dtype == torch.float32
    assert rel(out32.double(), isqrt_cov(feats64)) < 1e-5


def test_grad_and_no_grad_paths_agree(feats64):
    x = feats64.float()
    with torch.no_grad():
        plain = isqrt_cov(x)
    tracked = isqrt_cov(x.clone().requires_grad_())
    torch.testing.assert_close(tracked.detach(), plain, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cpu_runs_in_float32(dtype):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 16, 6, 6, generator=gen, requires_grad=True)
    weight = torch.randn(32, 16, 1, 1, generator=gen, requires_grad=True)
    with torch.autocast("cpu", dtype=dtype):
        feats = torch.nn.functional.conv2d(x, weight).relu()
        assert feats.dtype == dtype  # autocast is really on
        out = isqrt_cov(feats)
        loss = out.square().mean()
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    loss.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(weight.grad).all()
    # and it is the float32 computation of the (low-precision) features
    torch.testing.assert_close(out, isqrt_cov(feats.detach().float()), rtol=1e-5, atol=1e-6)


def test_half_input_without_autocast_gives_float32():
    x = torch.rand(2, 8, 4, 4).half()
    assert isqrt_cov(x).dtype == torch.float32
    assert sqrtm_newton_schulz(covariance_pool(x)).dtype == torch.float32


def test_zero_feature_map_is_finite():
    x = torch.zeros(2, 8, 4, 4, requires_grad=True)
    out = isqrt_cov(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    cov = torch.zeros(2, 8, 8, requires_grad=True)
    sqrtm_newton_schulz(cov).sum().backward()
    assert torch.isfinite(cov.grad).all()


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\(B, d, h, w\)"):
        isqrt_cov(torch.zeros(2, 8, 16))
    with pytest.raises(ValueError, match=r"\(B, d, h, w\)"):
        covariance_pool(torch.zeros(8, 16))
    with pytest.raises(ValueError, match=r"\(B, d, d\)"):
        sqrtm_newton_schulz(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="iterations"):
        isqrt_cov(torch.zeros(1, 4, 2, 2), iterations=0)
    with pytest.raises(ValueError, match="iterations"):
        ISqrtCov(dim=4, iterations=1.5)
    layer = ISqrtCov(dim=8)
    with pytest.raises(ValueError, match=r"ISqrtCov\(dim=8\) got 16 channels"):
        layer(torch.zeros(1, 16, 2, 2))


def test_module_wraps_function_and_keeps_state_dict_clean():
    layer = ISqrtCov(dim=8, iterations=3)
    assert layer.output_dim == 36
    assert "triu_index" not in layer.state_dict()
    x = torch.rand(2, 8, 4, 4)
    torch.testing.assert_close(layer(x), isqrt_cov(x, 3))
    assert "iterations=3" in repr(layer)
    free = ISqrtCov()
    torch.testing.assert_close(free(x), isqrt_cov(x))


def test_retained_graph_backward_twice_with_reuse_in_between():
    """Pooled buffers saved for the backward are not handed out while the graph lives."""
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(2, 8, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    out = isqrt_cov(x)
    (g1,) = torch.autograd.grad(out.sum(), x, retain_graph=True)
    for _ in range(3):  # other forwards (with and without grad) that want buffers
        isqrt_cov(torch.randn(2, 8, 4, 4, generator=gen, dtype=torch.float64).requires_grad_())
        with torch.no_grad():
            isqrt_cov(torch.randn(2, 8, 4, 4, generator=gen, dtype=torch.float64))
    (g2,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)


def test_buffers_pooled_in_inference_mode_stay_there():
    """Lightning validates under inference_mode and then trains on the same shapes."""
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(2, 8, 5, 5, generator=gen, dtype=torch.float64)
    with torch.inference_mode():
        expected = isqrt_cov(x)
    with torch.no_grad():
        torch.testing.assert_close(isqrt_cov(x), expected, rtol=0, atol=0)
    xr = x.clone().requires_grad_()
    out = isqrt_cov(xr)
    out.sum().backward()
    torch.testing.assert_close(out.detach(), expected, rtol=0, atol=0)
    assert xr.grad is not None and torch.isfinite(xr.grad).all()
    with torch.inference_mode():  # and back
        torch.testing.assert_close(isqrt_cov(x), expected, rtol=0, atol=0)


def test_workspace_is_reused_not_grown():
    from fgvc.ops._workspace import WORKSPACE

    x = torch.rand(3, 16, 5, 5, requires_grad=True)
    for _ in range(2):
        isqrt_cov(x).sum().backward()
    held = WORKSPACE._bytes
    assert held > 0
    for _ in range(5):
        isqrt_cov(x).sum().backward()
        with torch.no_grad():
            isqrt_cov(x)
    assert WORKSPACE._bytes == held


def test_workspace_give_back_is_reentrant():
    """A Lease collected while give_back holds the lock gives its buffers back on the same
    thread; with a plain lock that deadlocked."""
    import threading

    from fgvc.ops._workspace import Workspace

    ws = Workspace(max_bytes=1 << 20)
    inner = [torch.empty(4)]

    def tensors():
        yield torch.empty(8)
        ws.give_back(inner)  # what a Lease's __del__ does when the GC runs mid-call
        yield torch.empty(16)

    worker = threading.Thread(target=ws.give_back, args=(tensors(),), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "give_back deadlocked"
    assert sorted(key[0] for key in ws._free) == [(4,), (8,), (16,)]


def test_errors_name_the_function_and_the_shape():
    cases = [
        (lambda: covariance_pool(torch.zeros(2, 4, 0, 3)), "covariance_pool got an empty spatial"),
        (
            lambda: isqrt_cov(torch.zeros(2, 4, 3, 0)),
            r"isqrt_cov got an empty spatial map \(2, 4, 3, 0\)",
        ),
        (lambda: isqrt_cov(torch.zeros(2, 8, 16)), r"isqrt_cov expects a feature map"),
        (
            lambda: sqrtm_newton_schulz(torch.zeros(2, 3, 4)),
            r"sqrtm_newton_schulz expects \(B, d, d\)",
        ),
        (
            lambda: triu_vec(torch.zeros(3, 4)),
            r"triu_vec expects \(B, d, d\) matrices, got \(3, 4\)",
        ),
        (
            lambda: isqrt_cov(torch.zeros(1, 4, 2, 2), 0),
            "^iterations must be an integer >= 1, got 0$",
        ),
        (
            lambda: triu_vec(torch.zeros(2, 4, 4), torch.arange(9)),
            r"^triu_vec: index has 9 entries but d=4 needs 10$",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_a_single_location_is_a_valid_feature_map():
    x = torch.rand(2, 4, 1, 1, requires_grad=True)
    assert torch.equal(covariance_pool(x), torch.zeros(2, 4, 4))  # one sample: no spread
    out = isqrt_cov(x)
    out.sum().backward()
    assert out.shape == (2, 10) and torch.isfinite(out).all() and torch.isfinite(x.grad).all()


def test_sqrtm_runs_five_iterations_by_default():
    cov = covariance_pool(torch.rand(2, 6, 4, 4, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(sqrtm_newton_schulz(cov), sqrtm_newton_schulz(cov, 5))
    assert not torch.equal(sqrtm_newton_schulz(cov), sqrtm_newton_schulz(cov, 6))


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated")
def test_custom_backward_only_when_differentiating_outside_tracers():
    from fgvc.ops._precision import tracing, use_custom_backward

    x = torch.zeros(3, requires_grad=True)
    assert use_custom_backward(x) and not tracing()
    assert not use_custom_backward(torch.zeros(3))
    with torch.no_grad():
        assert not use_custom_backward(x)
    seen = []

    def probe(t):
        seen.append((tracing(), use_custom_backward(t)))
        return t * 2

    torch.jit.trace(probe, torch.zeros(3, requires_grad=True), check_trace=False)
    assert seen == [(True, False)]


def test_workspace_reuses_returned_buffers_within_its_cap():
    from fgvc.ops._workspace import Workspace

    ws = Workspace(max_bytes=1000)
    like = torch.zeros(1, dtype=torch.float64)
    a = ws.take((10,), like)  # 80 bytes
    assert (a.shape, a.dtype, ws._bytes) == ((10,), torch.float64, 0)
    ws.give_back([None, a, torch.zeros(4, 5, dtype=torch.float64).t()])  # skips non-contiguous
    assert ws._bytes == 80
    assert ws.take((10,), like) is a and ws._bytes == 0  # the very buffer comes back
    fresh = ws.take((10,), like)
    assert fresh is not a
    c = ws.take((20,), like)  # 160 bytes
    ws.give_back([a, c])
    assert ws._bytes == 240
    assert ws.take((20,), like) is c and ws._bytes == 80
    ws.give_back([c, torch.empty(95, dtype=torch.float64)])  # 80 + 160 + 760 = 1000: kept
    assert ws._bytes == 1000
    ws.give_back([fresh])  # over the cap: the pool starts over with just this one
    assert ws._bytes == 80
    assert ws.take((10,), like) is fresh and ws.take((10,), like) is not a
