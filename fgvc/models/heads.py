"""Representation heads: feature map (B, C, h, w) -> image vector (B, output_dim)."""

from __future__ import annotations

import torch
from torch import nn

from fgvc.ops import ISqrtCov

#: Names accepted for ``representation`` by :func:`fgvc.models.build_model`.
REPRESENTATIONS = ("isqrt", "gap")


class CovarianceHead(nn.Module):
    """iSQRT-COV: 1x1 conv (no bias) -> BatchNorm -> ReLU -> matrix square root pooling.

    The authors' ResNet head: the reduction to ``reduce_dim`` channels keeps the covariance
    at d (d + 1) / 2 features (32,896 for d = 256) and the BN/ReLU pair matches their
    ``layer_reduce`` / ``layer_reduce_bn`` layers, whose weights load into ``conv`` / ``bn``.

    Args:
        in_channels: backbone channels C.
        reduce_dim: d, channels after the 1x1 reduction.
        iterations: Newton-Schulz iterations N.
    """

    def __init__(self, in_channels: int, reduce_dim: int = 256, iterations: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, reduce_dim, kernel_size=1, stride=1, bias=False)
        self.bn = nn.BatchNorm2d(reduce_dim)
        self.relu = nn.ReLU(inplace=True)
        self.pool = ISqrtCov(dim=reduce_dim, iterations=iterations)
        self.reset_parameters()

    @property
    def reduce_dim(self) -> int:
        return self.pool.dim

    @property
    def iterations(self) -> int:
        return self.pool.iterations

    def reset_parameters(self) -> None:
        """The authors' init: He-normal (fan_out) conv, BN scale 1 and shift 0."""
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.bn.reset_running_stats()

    @property
    def output_dim(self) -> int:
        return self.pool.output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


class AvgPoolHead(nn.Module):
    """Global average pooling + flatten: the first-order baseline (torchvision's ResNet)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.in_channels = in_channels

    @property
    def output_dim(self) -> int:
        return self.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(x), 1)
