"""``build_model``: a torchvision ResNet trunk, a representation head and a classifier."""

from __future__ import annotations

import os

from fgvc.models.backbone import ResNetTrunk
from fgvc.models.heads import AvgPoolHead, CovarianceHead
from fgvc.models.net import FGVCNet
from fgvc.models.pretrained import check_source, load_pretrained
from fgvc.models.spec import NetSpec


def build_model(
    arch: str | NetSpec = NetSpec.arch,
    num_classes: int | None = None,
    representation: str | None = None,
    reduce_dim: int | None = None,
    iterations: int | None = None,
    pretrained: str | os.PathLike | None = None,
    last_stride: int | None = None,
    progress: bool = True,
) -> FGVCNet:
    """Build an iSQRT-COV (or average-pooling) ResNet classifier.

    ``build_model(spec)`` takes a :class:`~fgvc.models.spec.NetSpec`; the keyword form
    ``build_model("resnet50", num_classes=200, ...)`` builds one from the fields given (the
    others take :class:`NetSpec`'s defaults).

    Args:
        arch: a :class:`NetSpec`, or one of :data:`fgvc.models.ARCHS`.
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
        TypeError: a spec together with separate spec fields.
    """
    fields = {
        "num_classes": num_classes,
        "representation": representation,
        "reduce_dim": reduce_dim,
        "iterations": iterations,
        "last_stride": last_stride,
    }
    if isinstance(arch, NetSpec):
        given = [name for name, value in fields.items() if value is not None]
        if given:
            raise TypeError(f"build_model(spec) takes no separate {', '.join(given)}")
        spec = arch
    else:
        spec = NetSpec(arch=arch, **{k: v for k, v in fields.items() if v is not None})
    if pretrained is not None:
        check_source(pretrained, spec)

    backbone = ResNetTrunk(spec.arch, spec.last_stride)
    if spec.representation == "isqrt":
        head = CovarianceHead(backbone.out_channels, spec.reduce_dim, spec.iterations)
    else:
        head = AvgPoolHead(backbone.out_channels)
    model = FGVCNet(backbone, head, spec)
    if pretrained is not None:
        load_pretrained(model, pretrained, progress=progress)
    return model
