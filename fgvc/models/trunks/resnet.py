"""ResNet trunks (stem to layer4) taken from torchvision, with a settable last stride.

``last_stride`` is layer4's stride: 2 as in torchvision (total stride 32), or 1 as the
iSQRT-COV paper does (total 16: 448 px -> 28 x 28). Weights: ``IMAGENET1K_V1`` by default
(every ResNet has it), ``imagenet:IMAGENET1K_V2`` for torchvision's later recipe (ResNet-50
and up; 80.9% top-1 for ResNet-50).
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import TYPE_CHECKING

from torch import nn

from fgvc.models.trunks.registry import Trunk, TrunkEntry
from fgvc.models.trunks.weights import (
    describe_torchvision,
    load_torchvision,
    torchvision_builder,
    torchvision_member,
)

if TYPE_CHECKING:
    import torchvision.models as tvm

#: torchvision's ImageNet weights enum of each supported architecture (torchvision itself is
#: imported when a trunk is built: see :func:`~fgvc.models.trunks.weights.torchvision_models`).
_RESNETS: dict[str, str] = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
    "resnet152": "ResNet152_Weights",
}

#: The trunk's children, in torchvision's names (so torchvision/authors' keys map 1:1).
TRUNK_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def imagenet_weights(arch: str) -> tvm.WeightsEnum:
    """torchvision's default ImageNet weights for ``arch``: IMAGENET1K_V1."""
    return torchvision_member(torchvision_builder(arch, _RESNETS[arch])[1], None)


class ResNetTrunk(nn.Sequential, Trunk):
    """conv1 .. layer4 of a torchvision ResNet: (B, 3, H, W) -> (B, C, H/s, W/s).

    Attributes:
        arch: torchvision architecture name.
        out_channels: C, 512 for resnet18/34 and 2048 for the bottleneck ResNets.
        last_stride: stride of layer4 (1 or 2); the total stride ``s`` is 16 or 32.
    """

    cam_layer = "layer4"

    def __init__(self, arch: str, last_stride: int = 2) -> None:
        if arch not in _RESNETS:
            raise ValueError(f"unknown ResNet {arch!r}; choose one of {', '.join(_RESNETS)}")
        check_last_stride(last_stride)
        builder = torchvision_builder(arch, _RESNETS[arch])[0]
        net = builder(weights=None)  # torchvision's own initialization
        super().__init__(OrderedDict((name, getattr(net, name)) for name in TRUNK_CHILDREN))
        self.arch = arch
        self.out_channels: int = net.fc.in_features
        self.last_stride = last_stride
        self.stride = 16 * last_stride
        set_layer_stride(self.layer4, last_stride)

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, last_stride={self.last_stride}"


def check_last_stride(last_stride: int) -> None:
    if isinstance(last_stride, bool) or last_stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")


def set_layer_stride(layer: nn.Sequential, stride: int) -> None:
    """Set the stride of a ResNet stage (its first block), in place.

    Only the strided convolutions change (BasicBlock.conv1 or Bottleneck.conv2, as in
    torchvision, and the shortcut's 1x1 conv), so parameter shapes and keys stay the same
    and weights trained with either stride load unchanged.
    """
    from torchvision.models.resnet import BasicBlock, Bottleneck

    block = layer[0]
    if isinstance(block, Bottleneck):
        block.conv2.stride = (stride, stride)
    elif isinstance(block, BasicBlock):
        block.conv1.stride = (stride, stride)
    else:
        raise TypeError(f"expected a torchvision BasicBlock/Bottleneck, got {type(block)}")
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)
    # torchvision also records the stride on the block; keep it consistent for readers.
    block.stride = stride


def _trunk_part(net: nn.Module) -> dict:
    return {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}


def _entry(arch: str) -> TrunkEntry:
    tv = partial(torchvision_builder, arch, _RESNETS[arch])  # imports torchvision when called
    return TrunkEntry(
        name=arch,
        family="torchvision ResNet",
        channels=512 if arch in ("resnet18", "resnet34") else 2048,
        strides={2: 32, 1: 16},
        build=partial(ResNetTrunk, arch),
        weights=lambda choice: describe_torchvision(torchvision_member(tv()[1], choice)),
        load_imagenet=lambda trunk, choice, progress: load_torchvision(
            trunk, *tv(), choice, progress, _trunk_part
        ),
        last_stride_means="layer4's stride: 1 gives total stride 16, 2 torchvision's 32",
    )


ENTRIES = tuple(_entry(arch) for arch in _RESNETS)
