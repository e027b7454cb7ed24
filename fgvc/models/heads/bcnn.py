"""``bcnn``: bilinear pooling (B-CNN, Lin et al., ICCV 2015)."""

from __future__ import annotations

import torch
from torch import nn

from fgvc.models.heads.reduction import ReducedHead
from fgvc.models.heads.registry import HeadEntry
from fgvc.ops.bilinear import bilinear_pool


class BilinearPool(nn.Module):
    """Module form of :func:`fgvc.ops.bilinear.bilinear_pool`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bilinear_pool(x)


class BilinearHead(ReducedHead):
    """[1x1 conv -> BN -> ReLU] -> X X^T / M -> signed square root -> L2: d * d features.

    Args:
        in_channels: backbone channels C.
        reduce_dim: d after an optional 1x1 reduction (None, the authors' B-CNN: d = C).
    """

    def __init__(self, in_channels: int, reduce_dim: int | None = None) -> None:
        super().__init__(in_channels, reduce_dim)
        self.pool = BilinearPool()

    @property
    def output_dim(self) -> int:
        return self.channels**2


ENTRY = HeadEntry(
    name="bcnn",
    build=lambda c, d, s: BilinearHead(c, d),
    feature_dim=lambda c, s: c * c,
    title="bilinear pooling, signed square root, L2 (B-CNN)",
    source="Lin et al., ICCV 2015",
)
