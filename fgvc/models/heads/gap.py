"""``gap``: global average pooling, the first-order baseline."""

from __future__ import annotations

import torch
from torch import nn

from fgvc.models.heads.registry import HeadEntry


class AvgPoolHead(nn.Module):
    """Global average pooling + flatten (torchvision's ResNet head without its fc)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.in_channels = in_channels

    @property
    def output_dim(self) -> int:
        return self.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(x), 1)


ENTRY = HeadEntry(
    name="gap",
    build=lambda c, d, s: AvgPoolHead(c),
    feature_dim=lambda c, s: c,
    title="global average pooling (first order)",
    source="He et al., CVPR 2016 (ResNet)",
    reduces=False,
    last_stride=2,  # torchvision's ResNet exactly
)
