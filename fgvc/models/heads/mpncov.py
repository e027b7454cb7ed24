"""``mpncov``: MPN-COV (Li et al., ICCV 2017), iSQRT-COV's predecessor and baseline."""

from __future__ import annotations

import torch
from torch import nn

from fgvc.models.heads.isqrt import triangle
from fgvc.models.heads.reduction import ReducedHead
from fgvc.models.heads.registry import HeadEntry
from fgvc.ops.eig_sqrtm import mpn_cov
from fgvc.ops.triu import triu_flat_index


class MPNCov(nn.Module):
    """Module form of :func:`fgvc.ops.eig_sqrtm.mpn_cov` for ``dim`` channels."""

    triu_index: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("triu_index", triu_flat_index(dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mpn_cov(x, self.triu_index)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class MPNCovHead(ReducedHead):
    """[1x1 conv -> BN -> ReLU] -> covariance -> square root by eigendecomposition -> upper
    triangle: iSQRT-COV with ``eigh`` in place of the iteration (same pre- and post-steps).

    Args:
        in_channels: backbone channels C.
        reduce_dim: d, channels after the 1x1 reduction (None: d = C).
    """

    def __init__(self, in_channels: int, reduce_dim: int | None = 256) -> None:
        super().__init__(in_channels, reduce_dim)
        self.pool = MPNCov(self.channels)

    @property
    def output_dim(self) -> int:
        return triangle(self.channels)


ENTRY = HeadEntry(
    name="mpncov",
    build=lambda c, d, s: MPNCovHead(c, d),
    feature_dim=triangle,
    title="covariance, matrix square root by eigendecomposition (MPN-COV)",
    source="Li et al., ICCV 2017",
    reduce_dim=256,
)
