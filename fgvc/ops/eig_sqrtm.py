"""Matrix square root by eigendecomposition: MPN-COV (Li et al., ICCV 2017).

iSQRT-COV's predecessor and its accuracy and speed baseline. Same pre- and post-steps as
:func:`fgvc.ops.sqrtm.sqrtm_newton_schulz` so that the two differ only in how the root of
A = Sigma / tr(Sigma) is taken::

    A = U diag(lambda) U^T          (torch.linalg.eigh)
    C = sqrt(tr Sigma) U diag(sqrt(max(lambda, 0))) U^T

Backward. For a symmetric upstream gradient G, the derivative of the square root at A is
(Daleckii-Krein) U (K o (U^T G U)) U^T with K_ij = (s_i - s_j) / (lambda_i - lambda_j) =
1 / (s_i + s_j), s = sqrt(lambda). That form has no eigenvalue difference in a denominator,
so repeated eigenvalues (rank-deficient covariances: fewer positions than channels) are
harmless, where autograd through ``eigh`` gives NaN. Only s_i + s_j near 0 remains: it is
floored at sqrt(eps) of the dtype, the size below which an eigenvalue of a unit-trace matrix
is rounding noise. (A pair that is exactly null does not reach the input: the covariance's
gradient is multiplied by the centred features, which lie in its range.)

Exporters: ONNX has no eigendecomposition. Under ONNX export the root is taken by coupled
Newton-Schulz run to convergence (:data:`EXPORT_ITERATIONS`) on A + :data:`EXPORT_RIDGE` I:
the iteration diverges on the slightly negative eigenvalues that rounding gives a singular
covariance in float32, and the ridge lifts them. The exported root then differs from eigh's by
about sqrt(ridge) = 3e-4 (times sqrt(tr Sigma)) along null directions, the size of float32's
own noise there, and by ridge / (2 sqrt(lambda)) elsewhere; ``fgvc export`` verifies the logits.
"""

from __future__ import annotations

from typing import Any

import torch

from fgvc.ops._precision import autocast_disabled, to_full_precision
from fgvc.ops.checks import check_feature_map, check_square_batch
from fgvc.ops.covariance import covariance_pool
from fgvc.ops.sqrtm import TRACE_EPS, newton_schulz_forward
from fgvc.ops.triu import triu_vec

#: Newton-Schulz steps standing in for eigh in exported graphs: an eigenvalue lambda of the
#: unit-trace A needs about log(1/lambda) / log(2.25) steps to enter the quadratic phase,
#: then ~5: 30 converge every eigenvalue down to the ridge.
EXPORT_ITERATIONS = 30
#: Added to the unit-trace A's eigenvalues in exported graphs (above float32's rounding).
EXPORT_RIDGE = 1e-7


def exporting() -> bool:
    """Under an ONNX exporter (the TorchScript one, or torch.export for the dynamo one)."""
    return bool(torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting())


def _root_floor(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps ** 0.5


class _EigSqrtm(torch.autograd.Function):
    """Square root of symmetric PSD matrices with the 1 / (s_i + s_j) backward."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor) -> torch.Tensor:
        lam, u = torch.linalg.eigh(a)
        s = lam.clamp_min(0.0).sqrt()  # rounding makes tiny eigenvalues slightly negative
        ctx.save_for_backward(u, s)
        return (u * s[:, None, :]) @ u.mT

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        u, s = ctx.saved_tensors
        with autocast_disabled(u):
            sym = 0.5 * (grad + grad.mT)
            k = (s[:, :, None] + s[:, None, :]).clamp_min(_root_floor(s.dtype)).reciprocal()
            return u @ (k * (u.mT @ sym @ u)) @ u.mT


def sqrtm_eig(cov: torch.Tensor) -> torch.Tensor:
    """Square root of PSD matrices by eigendecomposition, trace-normalized and compensated.

    Args:
        cov: (B, d, d) symmetric positive semi-definite matrices (covariances).

    Returns:
        (B, d, d) ``sqrt(tr Sigma) * (Sigma / tr Sigma)^(1/2)`` in float32 for half/bfloat16
        input or under autocast (float64 stays float64); negative rounding-noise eigenvalues
        count as 0. The gradient is with respect to a symmetric ``cov``.
    """
    check_square_batch(cov, "sqrtm_eig")
    cov = to_full_precision(cov)
    with autocast_disabled(cov):
        trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(TRACE_EPS)[:, None, None]
        a = cov / trace
        if exporting():
            return sqrtm_export_form(a) * trace.sqrt()
        return _EigSqrtm.apply(a) * trace.sqrt()


def sqrtm_export_form(a: torch.Tensor) -> torch.Tensor:
    """What exported graphs compute for the root of a unit-trace PSD ``a`` (module doc)."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return newton_schulz_forward(a + EXPORT_RIDGE * eye, EXPORT_ITERATIONS)[0]


def mpn_cov(x: torch.Tensor, triu_index: torch.Tensor | None = None) -> torch.Tensor:
    """MPN-COV pooling of a feature map: covariance -> :func:`sqrtm_eig` -> upper triangle.

    Args:
        x: (B, d, h, w) features.
        triu_index: optional precomputed ``triu_flat_index(d)``.

    Returns:
        (B, d (d + 1) / 2), float32 whatever autocast says (float64 for float64 input), in
        iSQRT-COV's order, so the two heads' classifiers are laid out alike.
    """
    check_feature_map(x, "mpn_cov")
    x = to_full_precision(x)
    with autocast_disabled(x):
        return triu_vec(sqrtm_eig(covariance_pool(x)), triu_index)
