"""DenseNet trunks from torchvision: ``features`` (through the final norm5) and its ReLU.

``last_stride`` 2 is torchvision's network (total stride 32); 1 makes the last transition's
2x2 average pool a 1x1 one, so denseblock4 runs at stride 16, as layer4 at stride 1 does in
the iSQRT-COV ResNets. Pools have no parameters: keys are torchvision's either way.
"""

from __future__ import annotations

import re
from functools import partial

import torch
from torch import nn

from fgvc.models.trunks.registry import Trunk, TrunkEntry
from fgvc.models.trunks.weights import (
    describe_torchvision,
    load_torchvision,
    torchvision_builder,
    torchvision_member,
)

#: torchvision's ImageNet weights enum of each architecture (torchvision: imported on use).
_DENSENETS: dict[str, str] = {
    "densenet121": "DenseNet121_Weights",
    "densenet161": "DenseNet161_Weights",
}
_CHANNELS = {"densenet121": 1024, "densenet161": 2208}

# torchvision's published DenseNet files predate dots being banned in module names: they
# hold ``denselayerN.norm.1.weight`` where the module is ``norm1`` now.
_OLD_KEY = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.")


class DenseNetTrunk(Trunk):
    """``relu(features(x))``: torchvision's DenseNet before its global pool and classifier."""

    cam_layer = "relu"

    def __init__(self, arch: str, last_stride: int = 2) -> None:
        super().__init__()
        if last_stride not in (1, 2) or isinstance(last_stride, bool):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
        self.features = torchvision_builder(arch, _DENSENETS[arch])[0](weights=None).features
        self.relu = nn.ReLU()  # torchvision applies it functionally; a module for Grad-CAM
        if last_stride == 1:
            pool = self.features.transition3.pool
            pool.kernel_size, pool.stride = 1, 1
        self.arch = arch
        self.out_channels = _CHANNELS[arch]
        self.last_stride = last_stride
        self.stride = 16 * last_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.features(x))

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, last_stride={self.last_stride}"


def fix_old_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``denselayerN.norm.1.weight`` -> ``denselayerN.norm1.weight`` (and conv/relu, 1/2)."""
    return {_OLD_KEY.sub(r"\1\2.", key): value for key, value in state.items()}


def _features(net: nn.Module) -> dict:
    return {k: v for k, v in net.state_dict().items() if k.startswith("features.")}


def _entry(arch: str) -> TrunkEntry:
    tv = partial(torchvision_builder, arch, _DENSENETS[arch])  # imports torchvision when called
    return TrunkEntry(
        name=arch,
        family="torchvision DenseNet",
        channels=_CHANNELS[arch],
        strides={2: 32, 1: 16},
        build=partial(DenseNetTrunk, arch),
        weights=lambda choice: describe_torchvision(torchvision_member(tv()[1], choice)),
        load_imagenet=lambda trunk, choice, progress: load_torchvision(
            trunk, *tv(), choice, progress, _features, fix_old_keys
        ),
        last_stride_means="1 removes transition3's pooling (denseblock4 at stride 16), 2 is "
        "torchvision's stride 32",
    )


ENTRIES = tuple(_entry(arch) for arch in _DENSENETS)
