"""VGG-16 trunks from torchvision: ``features`` up to conv5_3 + ReLU.

``last_stride`` 1 drops the last max-pool (pool5), as the authors' MPN-COV VGG-D does:
conv5_3's map at total stride 16, 512 channels (448 px -> 28 x 28). ``last_stride`` 2 keeps
it: torchvision's ``features`` whole, stride 32. Max-pools have no parameters, so the keys
(``features.<index>.*``, torchvision's) are the same either way.
"""

from __future__ import annotations

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
_VGGS: dict[str, str] = {
    "vgg16": "VGG16_Weights",
    "vgg16_bn": "VGG16_BN_Weights",
}


class VGGTrunk(Trunk):
    """torchvision's VGG ``features`` without (last_stride 1) or with (2) the last max-pool.

    Attributes:
        features: torchvision's layers, same indices (so its weights load as they are).
    """

    cam_layer = "features"

    def __init__(self, arch: str, last_stride: int = 1) -> None:
        super().__init__()
        if last_stride not in (1, 2) or isinstance(last_stride, bool):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
        features = torchvision_builder(arch, _VGGS[arch])[0](weights=None).features
        if last_stride == 1:
            assert isinstance(features[-1], nn.MaxPool2d)
            features = features[:-1]
        self.features = features
        self.arch = arch
        self.out_channels = 512
        self.last_stride = last_stride
        self.stride = 16 * last_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, last_stride={self.last_stride}"


def _features(net: nn.Module) -> dict:
    return {k: v for k, v in net.state_dict().items() if k.startswith("features.")}


def _entry(arch: str) -> TrunkEntry:
    tv = partial(torchvision_builder, arch, _VGGS[arch])  # imports torchvision when called
    return TrunkEntry(
        name=arch,
        family="torchvision VGG",
        channels=512,
        strides={2: 32, 1: 16},
        build=partial(VGGTrunk, arch),
        weights=lambda choice: describe_torchvision(torchvision_member(tv()[1], choice)),
        load_imagenet=lambda trunk, choice, progress: load_torchvision(
            trunk, *tv(), choice, progress, _features
        ),
        last_stride_means="1 drops the last max-pool (conv5_3 at stride 16, the authors' "
        "VGG-D), 2 keeps it (stride 32)",
    )


ENTRIES = tuple(_entry(arch) for arch in _VGGS)
