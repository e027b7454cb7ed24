"""``isqrt``: iSQRT-COV (Li et al., CVPR 2018), the default head."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from fgvc.models.heads.reduction import ReducedHead
from fgvc.models.heads.registry import HeadEntry
from fgvc.ops import ISqrtCov
from fgvc.ops.checks import check_iterations


class CovarianceHead(ReducedHead):
    """iSQRT-COV: [1x1 conv -> BN -> ReLU] -> covariance -> Newton-Schulz square root ->
    upper triangle, d (d + 1) / 2 features (32,896 for d = 256).

    Args:
        in_channels: backbone channels C.
        reduce_dim: d, channels after the 1x1 reduction (None: d = C, no reduction).
        iterations: Newton-Schulz iterations N.
    """

    def __init__(self, in_channels: int, reduce_dim: int | None = 256, iterations: int = 5):
        super().__init__(in_channels, reduce_dim)
        self.pool = ISqrtCov(dim=self.channels, iterations=iterations)

    @property
    def iterations(self) -> int:
        return self.pool.iterations

    @property
    def output_dim(self) -> int:
        return self.pool.output_dim


def triangle(d: int, settings: Mapping[str, Any] | None = None) -> int:
    """d (d + 1) / 2: the upper triangle of a d x d symmetric matrix."""
    return d * (d + 1) // 2


ENTRY = HeadEntry(
    name="isqrt",
    build=lambda c, d, s: CovarianceHead(c, d, s["iterations"]),
    feature_dim=triangle,
    title="covariance, matrix square root by Newton-Schulz iteration (iSQRT-COV)",
    source="Li et al., CVPR 2018",
    defaults=MappingProxyType({"iterations": 5}),
    check=lambda s: check_iterations(s["iterations"]),
    reduce_dim=256,
    abbrev=MappingProxyType({"iterations": "N"}),
)
