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

from fgvc.models.heads import AUTO, head_entry
from fgvc.models.trunks import trunk_entry
from fgvc.ops.checks import check_positive_int

#: Above any fine-grained dataset (iNaturalist 2021: 10,000; ImageNet-21k: 21,841 classes).
MAX_NUM_CLASSES = 100_000
#: The classifier's weights, at most 4 GiB in float32: a hand-edited ``num_classes`` or
#: ``reduce_dim`` in ``model.json`` must not make fgvc allocate tens of gigabytes.
MAX_CLASSIFIER_WEIGHTS = 2**30


@dataclass(frozen=True)
class NetSpec:
    """The architecture of an :class:`~fgvc.models.FGVCNet` (weights aside).

    Attributes:
        arch: a key of :data:`fgvc.models.trunks.TRUNKS` (``resnet18..152``, ``vgg16``,
            ``vgg16_bn``, ``densenet121/161``) or ``timm/<timm model name>``.
        num_classes: classifier outputs.
        representation: a key of :data:`fgvc.models.heads.HEADS` (``isqrt``, ``gap``,
            ``mpncov``, ``bcnn``, ``cbp``).
        reduce_dim: channels after the head's 1x1 reduction; None: no reduction (the head
            pools the trunk's channels); ``"auto"`` when constructing means the head's default
            (256 for ``isqrt`` and ``mpncov``, at most the trunk's channels; None for
            ``bcnn`` and ``cbp``). Always None for
            ``gap``, which has no reduction.
        head: the head's own settings (e.g. ``{"iterations": 5}`` for ``isqrt``,
            ``{"projection_dim": 8192, "seed": 0}`` for ``cbp``); None or missing ones take the
            head's defaults, and the built value holds them all (a read-only mapping).
        last_stride: stride of the trunk's last stage (layer4 for ResNet; what it means
            for each trunk: :attr:`TrunkEntry.last_stride_means`); ``None`` when constructing
            means the representation's default (1 for the second-order heads: 448 px ->
            28 x 28, 2 for ``gap``) where the trunk accepts it, else the trunk's only value;
            the built value always holds the resolved stride.

    Equal specs build networks that take each other's weights: defaults are resolved and
    ``gap`` drops ``reduce_dim``, so ``NetSpec(representation="gap", reduce_dim=64)`` equals
    ``NetSpec(representation="gap")``.

    Raises:
        ValueError: an unknown arch, representation or head setting, or a value out of range.
    """

    arch: str = "resnet50"
    num_classes: int = 1000
    representation: str = "isqrt"
    reduce_dim: int | str | None = AUTO
    head: Mapping[str, Any] | None = None
    last_stride: int | None = None

    def __post_init__(self) -> None:
        trunk = trunk_entry(self.arch)
        check_positive_int("num_classes", self.num_classes)
        if self.num_classes > MAX_NUM_CLASSES:
            raise ValueError(
                f"num_classes must be at most {MAX_NUM_CLASSES}, got {self.num_classes}"
            )
        entry = head_entry(self.representation)
        object.__setattr__(self, "head", entry.settings(self.head))
        reduce_dim = self.reduce_dim
        if not entry.reduces:  # nothing of a reduction exists: normalized so specs compare
            reduce_dim = None
        elif isinstance(reduce_dim, str) and reduce_dim == AUTO:
            reduce_dim = entry.reduce_dim
            if reduce_dim is not None:  # a trunk narrower than the default (ViT-Tiny: 192)
                reduce_dim = min(reduce_dim, trunk.channels)
        if reduce_dim is not None:
            check_positive_int("reduce_dim", reduce_dim)
            channels = trunk.channels
            if reduce_dim > channels:  # the 1x1 convolution reduces the trunk's channels
                raise ValueError(
                    f"reduce_dim must be at most {channels} (the channels of {self.arch}'s "
                    f"output, which it reduces), got {reduce_dim}"
                )
        object.__setattr__(self, "reduce_dim", reduce_dim)
        if self.last_stride is None:
            object.__setattr__(self, "last_stride", trunk.default_last_stride(entry.last_stride))
        trunk.check_last_stride(self.last_stride)
        weights = self.feature_dim * self.num_classes
        if weights > MAX_CLASSIFIER_WEIGHTS:
            raise ValueError(
                f"a classifier of {self.num_classes} classes on {self.feature_dim} features "
                f"would hold {weights:,} weights (at most {MAX_CLASSIFIER_WEIGHTS:,}: 4 GiB in "
                f"float32); use fewer classes or a smaller reduce_dim (or head setting)"
            )

    @property
    def channels(self) -> int:
        """The channels the head pools: ``reduce_dim``, or the trunk's without a reduction."""
        return trunk_entry(self.arch).channels if self.reduce_dim is None else self.reduce_dim

    @property
    def feature_dim(self) -> int:
        """Length of the image vector the head gives the classifier: d(d+1)/2 for the
        covariance heads (the upper triangle), d*d for ``bcnn``, the projection for ``cbp``,
        the trunk's channels for ``gap``."""
        return head_entry(self.representation).feature_dim(self.channels, self.head)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], **overrides: Any) -> NetSpec:
        """The spec held in ``values`` (hyperparameters, ``model.json``'s ``net``); other keys
        are ignored, missing ones take the defaults.

        Written before heads had a settings group, ``values`` may hold ``iterations`` flat
        (``isqrt``'s only setting then); it goes into ``head`` when no ``head`` is given.

        Raises:
            ValueError: a value that is out of range or of the wrong type.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        chosen = {k: v for k, v in values.items() if k in fields}
        merged = {**chosen, **overrides}
        legacy = values.get("iterations")
        if (
            merged.get("head") is None
            and legacy is not None
            and merged.get("representation", cls.representation) == "isqrt"
        ):
            merged["head"] = {"iterations": legacy}
        return cls(**merged)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON/YAML values."""
        return {
            f.name: dict(value) if isinstance(value, Mapping) else value
            for f in dataclasses.fields(self)
            for value in [getattr(self, f.name)]
        }

    def differences(self, other: NetSpec) -> list[str]:
        """``"field=mine (now theirs)"`` for each field that differs from ``other``."""
        return [
            f"{f.name}={getattr(self, f.name)!r} (now {getattr(other, f.name)!r})"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]

    def describe(self) -> str:
        """E.g. ``"resnet50 isqrt d=256 N=5, 200 classes"``."""
        parts = [self.arch, self.representation]
        if self.reduce_dim is not None:
            parts.append(f"d={self.reduce_dim}")
        settings = head_entry(self.representation).describe(self.head)
        if settings:
            parts.append(settings)
        return f"{' '.join(parts)}, {self.num_classes} classes"
