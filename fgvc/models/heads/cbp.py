"""``cbp``: compact bilinear pooling by Tensor Sketch (Gao et al., CVPR 2016)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from fgvc.models.heads.reduction import ReducedHead
from fgvc.models.heads.registry import HeadEntry
from fgvc.ops.checks import check_positive_int
from fgvc.ops.sketch import compact_bilinear_pool, sketch_hashes

#: Above any projection in the CBP paper (8192 default, up to ~16k): a hand-edited value must
#: not allocate gigabytes of sketches.
MAX_PROJECTION_DIM = 2**17


class TensorSketch(nn.Module):
    """Module form of :func:`fgvc.ops.sketch.compact_bilinear_pool`.

    The hashes and signs are persistent buffers: saved with the weights, so a loaded model
    computes the same function whatever generator made them.
    """

    h1: torch.Tensor
    s1: torch.Tensor
    h2: torch.Tensor
    s2: torch.Tensor

    def __init__(self, dim: int, projection_dim: int = 8192, seed: int = 0) -> None:
        super().__init__()
        self.dim = dim
        self.projection_dim = projection_dim
        self.seed = seed
        for name, value in zip(("h1", "s1", "h2", "s2"), sketch_hashes(dim, projection_dim, seed)):
            self.register_buffer(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return compact_bilinear_pool(x, self.h1, self.s1, self.h2, self.s2, self.projection_dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, projection_dim={self.projection_dim}, seed={self.seed}"


class CompactBilinearHead(ReducedHead):
    """[1x1 conv -> BN -> ReLU] -> Tensor Sketch -> signed square root -> L2: D features.

    Args:
        in_channels: backbone channels C.
        reduce_dim: channels after an optional 1x1 reduction (None, the authors': C).
        projection_dim: D.
        seed: seeds the sketches' hashes and signs.
    """

    def __init__(
        self,
        in_channels: int,
        reduce_dim: int | None = None,
        projection_dim: int = 8192,
        seed: int = 0,
    ) -> None:
        super().__init__(in_channels, reduce_dim)
        self.pool = TensorSketch(self.channels, projection_dim, seed)

    @property
    def output_dim(self) -> int:
        return self.pool.projection_dim


def _check(settings: Mapping[str, Any]) -> None:
    check_positive_int("projection_dim", settings["projection_dim"])
    if settings["projection_dim"] > MAX_PROJECTION_DIM:
        raise ValueError(
            f"projection_dim must be at most {MAX_PROJECTION_DIM}, got {settings['projection_dim']}"
        )
    seed = settings["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")


ENTRY = HeadEntry(
    name="cbp",
    build=lambda c, d, s: CompactBilinearHead(c, d, s["projection_dim"], s["seed"]),
    feature_dim=lambda c, s: s["projection_dim"],
    title="compact bilinear pooling by Tensor Sketch and FFT, signed square root, L2",
    source="Gao et al., CVPR 2016",
    defaults=MappingProxyType({"projection_dim": 8192, "seed": 0}),
    check=_check,
    abbrev=MappingProxyType({"projection_dim": "D"}),
)
