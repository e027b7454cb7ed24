"""Kept for imports written before :mod:`fgvc.models.trunks`: the ResNet trunk lives there."""

from fgvc.models.trunks.resnet import (
    TRUNK_CHILDREN,
    ResNetTrunk,
    check_last_stride,
    imagenet_weights,
    set_layer_stride,
)

__all__ = [
    "TRUNK_CHILDREN",
    "ResNetTrunk",
    "check_last_stride",
    "imagenet_weights",
    "set_layer_stride",
]
