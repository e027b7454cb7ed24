"""The 1x1 reduction shared by the heads: conv (no bias) -> BatchNorm -> ReLU, optional."""

from __future__ import annotations

import torch
from torch import nn


class ReducedHead(nn.Module):
    """Base of the heads: ``pool(reduce(x))``, ``reduce`` being the optional reduction.

    With ``reduce_dim`` the trunk's C channels go through a 1x1 conv to ``reduce_dim``,
    BatchNorm and ReLU (the authors' ``layer_reduce`` / ``layer_reduce_bn``, whose weights load
    into ``conv`` / ``bn``: the attribute names are the state-dict keys); with None the head
    pools the C channels as they are. Subclasses set ``pool`` and ``output_dim``.

    Attributes:
        in_channels: C, the trunk's channels.
        reduce_dim: channels after the reduction, or None.
        channels: the channels that are pooled.
    """

    pool: nn.Module

    def __init__(self, in_channels: int, reduce_dim: int | None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.reduce_dim = reduce_dim
        self.conv: nn.Conv2d | None = None
        self.bn: nn.BatchNorm2d | None = None
        self.relu: nn.ReLU | None = None
        if reduce_dim is not None:
            self.conv = nn.Conv2d(in_channels, reduce_dim, kernel_size=1, stride=1, bias=False)
            self.bn = nn.BatchNorm2d(reduce_dim)
            self.relu = nn.ReLU(inplace=True)
            self.reset_parameters()

    @property
    def channels(self) -> int:
        return self.in_channels if self.reduce_dim is None else self.reduce_dim

    def reset_parameters(self) -> None:
        """The authors' init: He-normal (fan_out) conv, BN scale 1 and shift 0."""
        if self.conv is None:
            return
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.bn.reset_running_stats()

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return x
        return self.relu(self.bn(self.conv(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.reduce(x))
