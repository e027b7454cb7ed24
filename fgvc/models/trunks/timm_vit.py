"""timm ViT-family trunks (ViT, DeiT, Swin, ...): covariance over the patch tokens.

As SoT and DropCov do, the head pools the last block's tokens (after timm's final norm):
``forward_features`` gives (B, N, C) tokens, from which the class / distillation / register
tokens (timm's ``num_prefix_tokens``) are dropped and the rest laid out as the (B, C, h, w)
patch grid; Swin gives its map as NHWC, permuted to NCHW. Models are built with
``dynamic_img_size`` so any image size works (its side a multiple of the patch size; timm
resamples the position embedding to the grid).

``last_stride``: a ViT has no strided last stage (its tokens are at the patch stride, 1 is
its only value); Swin's last stage follows a 2x2 patch merging (2, its only value).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from fgvc.models.trunks.registry import TrunkEntry
from fgvc.models.trunks.timm_hub import TimmTrunk, describe_timm, load_timm


class TimmTokenTrunk(TimmTrunk):
    """A timm transformer's final tokens as a (B, C, h, w) map.

    Attributes:
        model: timm's model without its classifier (keys ``model.<timm's names>``).
        out: an identity on the map, the layer Grad-CAM hooks.
    """

    def create_timm(self, name: str, **extra: Any) -> nn.Module:
        """The timm model this trunk wraps (``extra``: e.g. ``pretrained=True``)."""
        return _create(name, **extra)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(x)
        if tokens.dim() == 4:  # Swin: (B, h, w, C)
            return self.out(tokens.permute(0, 3, 1, 2))
        h, w = self.model.patch_embed.dynamic_feat_size(tuple(x.shape[-2:]))
        tokens = tokens[:, self.model.num_prefix_tokens :]
        grid = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[-1], h, w)
        return self.out(grid)

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}"


def _create(name: str, **extra: Any) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, num_classes=0, dynamic_img_size=True, **extra)
    except TypeError:  # a model without dynamic_img_size: its own fixed size
        return timm.create_model(name, num_classes=0, **extra)


def is_token_model(name: str) -> bool:
    """Whether timm's ``name`` is a patch-token transformer (it has a ``patch_embed``)."""
    return _shape(name)[2]


@functools.lru_cache(maxsize=64)
def _shape(name: str) -> tuple[int, int, bool, bool]:
    """``(channels, reduction, has patch_embed, is Swin-like)`` from the meta-device model."""
    try:
        with torch.device("meta"):
            model = _create(name)
    except (RuntimeError, NotImplementedError):
        model = _create(name)
    tokens = hasattr(model, "patch_embed")
    info = getattr(model, "feature_info", None)
    reduction = int(info[-1]["reduction"]) if info else 0
    nhwc = tokens and not hasattr(model, "num_prefix_tokens")
    return int(model.num_features), reduction, tokens, nhwc


def entry(name: str) -> TrunkEntry:
    channels, reduction, _, nhwc = _shape(name)
    last_stride = 2 if nhwc else 1
    return TrunkEntry(
        name=f"timm/{name}",
        family="timm transformer (patch tokens)",
        channels=channels,
        strides={last_stride: reduction},
        build=lambda ls: TimmTokenTrunk(name, ls, reduction, channels),
        weights=lambda choice: describe_timm(name, choice),
        load_imagenet=load_timm,
        last_stride_means="Swin's last patch merging, fixed"
        if nhwc
        else "none: tokens at the patch stride",
    )
