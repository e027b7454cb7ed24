"""Any timm CNN as a trunk, through ``features_only``: its last stage's map.

Channels and total stride come from timm's ``feature_info``. ``last_stride`` 2 is the model
as published; 1 asks timm for ``output_stride`` half the stride, which timm implements by
dilating the last stage (stride 1, dilation 2: the map doubles, the receptive field stays),
for the models that support it (ResNet/ResNeSt, ConvNeXt, EfficientNet, RegNet, ...).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from fgvc.models.trunks.registry import TrunkEntry
from fgvc.models.trunks.timm_hub import TimmTrunk, describe_timm, load_timm


class TimmCNNTrunk(TimmTrunk):
    """``timm.create_model(name, features_only=True, out_indices=(-1,))``'s last map.

    Attributes:
        model: timm's feature extractor (its keys: ``model.<timm's feature names>``).
        out: an identity on the output map, the layer Grad-CAM hooks.
    """

    def __init__(self, name: str, last_stride: int, reduction: int, channels: int) -> None:
        super().__init__(
            name, last_stride, reduction if last_stride == 2 else reduction // 2, channels
        )

    def timm_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"features_only": True, "out_indices": (-1,)}
        if self.last_stride == 1:
            kwargs["output_stride"] = self.stride
        return kwargs

    def create_timm(self, name: str, **extra: Any) -> nn.Module:
        """The timm model this trunk wraps (``extra``: e.g. ``pretrained=True``)."""
        import timm

        try:
            return timm.create_model(name, **self.timm_kwargs(), **extra)
        except TypeError as err:  # a model without output_stride
            raise ValueError(
                f"timm's {name} cannot run its last stage at stride 1 ({err}); use last_stride: 2"
            ) from err

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.model(x)[-1])

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, last_stride={self.last_stride}"


@functools.lru_cache(maxsize=64)
def feature_shape(name: str) -> tuple[int, int]:
    """``(channels, reduction)`` of the last feature map, from ``feature_info`` (the model
    built on the meta device: no memory, no init; on the CPU for models that need values)."""
    import timm

    kwargs = {"features_only": True, "out_indices": (-1,)}
    try:
        with torch.device("meta"):
            model = timm.create_model(name, **kwargs)
    except (RuntimeError, NotImplementedError):
        model = timm.create_model(name, **kwargs)
    info = model.feature_info
    return int(info.channels()[-1]), int(info.reduction()[-1])


def entry(name: str) -> TrunkEntry:
    channels, reduction = feature_shape(name)
    return TrunkEntry(
        name=f"timm/{name}",
        family="timm CNN (features_only)",
        channels=channels,
        strides={2: reduction, 1: reduction // 2},
        build=lambda last_stride: TimmCNNTrunk(name, last_stride, reduction, channels),
        weights=lambda choice: describe_timm(name, choice),
        load_imagenet=load_timm,
        last_stride_means=f"2: timm's stride {reduction}; 1: the last stage dilated "
        f"(output_stride {reduction // 2})",
    )
