"""``build_model``: a torchvision ResNet trunk, a representation head and a classifier."""

from __future__ import annotations

import os

from fgvc.models.backbone import ResNetTrunk, check_arch, check_last_stride
from fgvc.models.heads import REPRESENTATIONS, AvgPoolHead, CovarianceHead
from fgvc.models.net import FGVCNet
from fgvc.models.pretrained import check_source, load_pretrained
from fgvc.ops.checks import check_iterations, check_positive_int


def build_model(
    arch: str = "resnet50",
    num_classes: int = 1000,
    representation: str = "isqrt",
    reduce_dim: int = 256,
    iterations: int = 5,
    pretrained: str | os.PathLike | None = None,
    last_stride: int | None = None,
    progress: bool = True,
) -> FGVCNet:
    """Build an iSQRT-COV (or average-pooling) ResNet classifier.

    Args:
        arch: one of :data:`fgvc.models.ARCHS` (torchvision ResNets, built with weights=None).
        num_classes: classifier outputs.
        representation: ``"isqrt"`` (1x1 conv to ``reduce_dim`` -> BN -> ReLU -> iSQRT-COV,
            d (d + 1) / 2 features) or ``"gap"`` (global average pooling, 512/2048 features).
        reduce_dim: d for ``"isqrt"`` (256 in the paper); unused by ``"gap"``.
        iterations: Newton-Schulz iterations for ``"isqrt"`` (5 in the paper).
        pretrained: None (fresh: torchvision's init for the backbone, the authors' for the
            head, nn.Linear's default for the classifier), ``"imagenet"``,
            ``"isqrt-imagenet"`` or a checkpoint path; see :mod:`fgvc.models.pretrained`.
        last_stride: stride of layer4, 1 or 2; default 1 for ``"isqrt"`` (the authors' choice:
            448 px -> 28 x 28 map, more samples for the covariance), 2 for ``"gap"``.
        progress: show download progress bars.

    Raises:
        ValueError: an invalid argument, or a checkpoint that does not fit.
    """
    check_arch(arch)
    if representation not in REPRESENTATIONS:
        raise ValueError(
            f"unknown representation {representation!r}; choose one of {', '.join(REPRESENTATIONS)}"
        )
    check_positive_int("num_classes", num_classes)
    check_positive_int("reduce_dim", reduce_dim)
    check_iterations(iterations)
    if last_stride is None:
        last_stride = 1 if representation == "isqrt" else 2
    check_last_stride(last_stride)
    if pretrained is not None:
        check_source(
            pretrained, arch, representation, reduce_dim if representation == "isqrt" else None
        )

    backbone = ResNetTrunk(arch, last_stride)
    if representation == "isqrt":
        head = CovarianceHead(backbone.out_channels, reduce_dim, iterations)
    else:
        head = AvgPoolHead(backbone.out_channels)
    model = FGVCNet(backbone, head, num_classes, arch, representation)
    if pretrained is not None:
        load_pretrained(model, pretrained, progress=progress)
    return model
