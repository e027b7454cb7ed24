"""``build_model``: a trunk, a representation head and a classifier."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from fgvc.models.heads import AUTO, head_entry
from fgvc.models.net import FGVCNet
from fgvc.models.pretrained import PretrainedFile, check_source, load_pretrained
from fgvc.models.spec import NetSpec
from fgvc.models.trunks import trunk_entry


def build_model(
    arch: str | NetSpec = NetSpec.arch,
    num_classes: int | None = None,
    representation: str | None = None,
    reduce_dim: int | str | None = AUTO,
    head: Mapping[str, Any] | None = None,
    pretrained: str | os.PathLike | PretrainedFile | None = None,
    last_stride: int | None = None,
    progress: bool = True,
) -> FGVCNet:
    """Build a classifier: a trunk from :data:`fgvc.models.TRUNKS` (or ``timm/<name>``) and a
    representation head from :data:`fgvc.models.HEADS`.

    ``build_model(spec)`` takes a :class:`~fgvc.models.spec.NetSpec`; the keyword form
    ``build_model("resnet50", num_classes=200, ...)`` builds one from the fields given (the
    others take :class:`NetSpec`'s defaults).

    Args:
        arch: a :class:`NetSpec`, one of :data:`fgvc.models.ARCHS` or ``timm/<name>``.
        num_classes: classifier outputs.
        representation: ``"isqrt"`` (default: 1x1 conv to ``reduce_dim`` -> BN -> ReLU ->
            iSQRT-COV, d (d + 1) / 2 features), ``"gap"``, ``"mpncov"``, ``"bcnn"`` or
            ``"cbp"`` (see :data:`fgvc.models.HEADS`).
        reduce_dim: channels after the head's 1x1 reduction; None: no reduction; ``"auto"``:
            the head's default (256 for iSQRT-COV and MPN-COV, none for B-CNN and CBP).
        head: the head's settings, e.g. ``{"iterations": 5}`` (Newton-Schulz iterations of
            ``"isqrt"``) or ``{"projection_dim": 8192, "seed": 0}`` (``"cbp"``).
        pretrained: None (fresh: the library's init for the backbone, the authors' for the
            head, nn.Linear's default for the classifier), ``"imagenet"`` (the trunk's
            default ImageNet weights), ``"imagenet:<weights name or file>"``,
            ``"isqrt-imagenet"``, a checkpoint path or a :class:`PretrainedFile` (a file of
            fgvc's runs with its recorded network: ``fgvc fit`` resolves run and export
            folders to one); see :mod:`fgvc.models.pretrained`.
        last_stride: stride of the trunk's last stage (layer4 for ResNet), 1 or 2; default 1
            for the second-order heads (the authors' choice: 448 px -> 28 x 28 map, more
            samples), 2 for ``"gap"``, where the trunk accepts it.
        progress: show download progress bars.

    Raises:
        ValueError: an invalid argument, or a checkpoint that does not fit.
        TypeError: a spec together with separate spec fields.
    """
    fields = {
        "num_classes": num_classes,
        "representation": representation,
        "head": head,
        "last_stride": last_stride,
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    if not (isinstance(reduce_dim, str) and reduce_dim == AUTO):
        fields["reduce_dim"] = reduce_dim
    if isinstance(arch, NetSpec):
        if fields:
            raise TypeError(f"build_model(spec) takes no separate {', '.join(fields)}")
        spec = arch
    else:
        spec = NetSpec(arch=arch, **fields)
    if pretrained is not None:
        check_source(pretrained, spec)

    backbone = trunk_entry(spec.arch).build(spec.last_stride)
    head_module = head_entry(spec.representation).build(
        backbone.out_channels, spec.reduce_dim, spec.head
    )
    model = FGVCNet(backbone, head_module, spec)
    if pretrained is not None:
        load_pretrained(model, pretrained, progress=progress)
    return model
