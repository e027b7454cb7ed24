"""Trunks: images (B, 3, H, W) -> feature map (B, C, H/s, W/s) for a head to pool.

``TRUNKS`` is the table of torchvision trunks; ``timm/<name>`` reaches any timm model (CNNs
through ``features_only``, ViT-family transformers through their patch tokens). A trunk is
its module here (the module and its :class:`TrunkEntry` s ``ENTRIES``), one line below and
its test.
"""

from __future__ import annotations

import functools

from fgvc.models.trunks import densenet, resnet, vgg
from fgvc.models.trunks.densenet import DenseNetTrunk
from fgvc.models.trunks.registry import Trunk, TrunkEntry, TrunkWeights
from fgvc.models.trunks.resnet import ResNetTrunk
from fgvc.models.trunks.timm_cnn import TimmCNNTrunk
from fgvc.models.trunks.timm_hub import PREFIX as TIMM_PREFIX
from fgvc.models.trunks.timm_vit import TimmTokenTrunk
from fgvc.models.trunks.weights import parse_imagenet

#: ``model.arch`` -> its entry for the torchvision trunks; the first is the default.
TRUNKS: dict[str, TrunkEntry] = {
    entry.name: entry for entry in (*resnet.ENTRIES, *vgg.ENTRIES, *densenet.ENTRIES)
}

#: torchvision names accepted for ``arch`` (``timm/<name>`` is accepted besides).
ARCHS: tuple[str, ...] = tuple(TRUNKS)


def trunk_entry(arch: str) -> TrunkEntry:
    """The entry of ``arch``: a key of :data:`TRUNKS` or ``timm/<timm model name>``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if isinstance(arch, str) and arch in TRUNKS:
        return TRUNKS[arch]
    if isinstance(arch, str) and arch.startswith(TIMM_PREFIX):
        return _timm_entry(arch)
    raise ValueError(
        f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)} or timm/<a timm model name>"
    )


@functools.lru_cache(maxsize=64)
def _timm_entry(arch: str) -> TrunkEntry:
    from fgvc.models.trunks import timm_cnn, timm_vit
    from fgvc.models.trunks.timm_hub import timm_name

    name = timm_name(arch)
    return timm_vit.entry(name) if timm_vit.is_token_model(name) else timm_cnn.entry(name)


__all__ = [
    "ARCHS",
    "TRUNKS",
    "DenseNetTrunk",
    "ResNetTrunk",
    "TimmCNNTrunk",
    "TimmTokenTrunk",
    "Trunk",
    "TrunkEntry",
    "TrunkWeights",
    "parse_imagenet",
    "trunk_entry",
]
