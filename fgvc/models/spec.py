"""``NetSpec``: everything that decides a network's architecture, in one frozen value.

:func:`fgvc.models.build_model` takes it, :attr:`FGVCNet.spec <fgvc.models.FGVCNet.spec>`
gives it back, checkpoints (the LightningModule's hyperparameters) and export bundles
(``model.json``'s ``net``) store it, and compatibility checks compare two of them. Its field
defaults are the library's defaults; nothing else restates them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fgvc.models.backbone import check_arch, check_last_stride, trunk_channels
from fgvc.models.heads import REPRESENTATIONS
from fgvc.ops.checks import check_iterations, check_positive_int

#: Above any fine-grained dataset (iNaturalist 2021: 10,000; ImageNet-21k: 21,841 classes).
MAX_NUM_CLASSES = 100_000
#: The classifier's weights, at most 4 GiB in float32: a hand-edited ``num_classes`` or
#: ``reduce_dim`` in ``model.json`` must not make fgvc allocate tens of gigabytes.
MAX_CLASSIFIER_WEIGHTS = 2**30


@dataclass(frozen=True)
class NetSpec:
    """The architecture of an :class:`~fgvc.models.FGVCNet` (weights aside).

    Attributes:
        arch: torchvision ResNet (``resnet18/34/50/101/152``).
        num_classes: classifier outputs.
        representation: ``"isqrt"`` (iSQRT-COV) or ``"gap"`` (global average pooling).
        reduce_dim: d, channels before the covariance (``isqrt`` only; None for ``gap``).
        iterations: Newton-Schulz iterations (``isqrt`` only; None for ``gap``).
        last_stride: stride of layer4; ``None`` when constructing means the
            representation's default (1 for ``isqrt``: 448 px -> 28 x 28, 2 for ``gap``),
            and the built value always holds the resolved stride.

    Equal specs build networks that take each other's weights; ``gap`` specs ignore the
    ``isqrt``-only fields, so ``NetSpec(representation="gap", reduce_dim=64)`` equals
    ``NetSpec(representation="gap")``.

    Raises:
        ValueError: an unknown arch or representation, or a value out of range.
    """

    arch: str = "resnet50"
    num_classes: int = 1000
    representation: str = "isqrt"
    reduce_dim: int | None = 256
    iterations: int | None = 5
    last_stride: int | None = None

    def __post_init__(self) -> None:
        check_arch(self.arch)
        check_positive_int("num_classes", self.num_classes)
        if self.num_classes > MAX_NUM_CLASSES:
            raise ValueError(
                f"num_classes must be at most {MAX_NUM_CLASSES}, got {self.num_classes}"
            )
        if self.representation not in REPRESENTATIONS:
            raise ValueError(
                f"unknown representation {self.representation!r}; choose one of "
                f"{', '.join(REPRESENTATIONS)}"
            )
        if self.representation == "isqrt":
            check_positive_int("reduce_dim", self.reduce_dim)
            channels = trunk_channels(self.arch)
            if self.reduce_dim > channels:  # the 1x1 convolution reduces layer4's channels
                raise ValueError(
                    f"reduce_dim must be at most {channels} (the channels of {self.arch}'s "
                    f"layer4, which it reduces), got {self.reduce_dim}"
                )
            check_iterations(self.iterations)
        else:  # nothing of the covariance head exists: normalized so that specs compare
            object.__setattr__(self, "reduce_dim", None)
            object.__setattr__(self, "iterations", None)
        if self.last_stride is None:
            object.__setattr__(self, "last_stride", 1 if self.representation == "isqrt" else 2)
        check_last_stride(self.last_stride)
        weights = self.feature_dim * self.num_classes
        if weights > MAX_CLASSIFIER_WEIGHTS:
            raise ValueError(
                f"a classifier of {self.num_classes} classes on {self.feature_dim} features "
                f"would hold {weights:,} weights (at most {MAX_CLASSIFIER_WEIGHTS:,}: 4 GiB in "
                f"float32); use fewer classes or a smaller reduce_dim"
            )

    @property
    def feature_dim(self) -> int:
        """Length of the image vector the head gives the classifier: d(d+1)/2 for iSQRT-COV
        (the covariance's upper triangle), layer4's channels for GAP."""
        if self.representation == "isqrt":
            return self.reduce_dim * (self.reduce_dim + 1) // 2
        return trunk_channels(self.arch)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], **overrides: Any) -> NetSpec:
        """The spec held in ``values`` (hyperparameters, ``model.json``'s ``net``); other keys
        are ignored, missing ones take the defaults.

        Raises:
            ValueError: a value that is out of range or of the wrong type.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        chosen = {k: v for k, v in values.items() if k in fields}
        return cls(**{**chosen, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON/YAML values."""
        return dataclasses.asdict(self)

    def differences(self, other: NetSpec) -> list[str]:
        """``"field=mine (now theirs)"`` for each field that differs from ``other``."""
        return [
            f"{f.name}={getattr(self, f.name)!r} (now {getattr(other, f.name)!r})"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]

    def describe(self) -> str:
        """E.g. ``"resnet50 isqrt d=256 N=5, 200 classes"``."""
        head = (
            f"isqrt d={self.reduce_dim} N={self.iterations}"
            if self.representation == "isqrt"
            else self.representation
        )
        return f"{self.arch} {head}, {self.num_classes} classes"
