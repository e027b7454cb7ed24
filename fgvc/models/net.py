"""The network: backbone -> representation head -> linear classifier."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from fgvc.models.spec import NetSpec


class FGVCNet(nn.Module):
    """``classifier(head(backbone(x)))``; build it with :func:`fgvc.models.build_model`.

    State-dict keys are ``backbone.<torchvision name>``, ``head.*`` and ``classifier.*``.

    Attributes:
        backbone: a trunk of :data:`fgvc.models.trunks.TRUNKS` (or ``timm/<name>``): images
            to the feature map the head pools.
        head: one of :data:`fgvc.models.heads.HEADS`' modules (``output_dim`` features).
        classifier: ``nn.Linear(feature_dim, num_classes)``.
        spec: the :class:`~fgvc.models.spec.NetSpec` it was built from (with the current
            ``num_classes``).
        feature_dim: length of the image vector the head gives the classifier.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, spec: NetSpec) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.feature_dim: int = head.output_dim
        # nn.Linear's default init (uniform, +-1/sqrt(feature_dim)), as the authors' fc.
        self.classifier = nn.Linear(self.feature_dim, spec.num_classes)
        self._spec = spec
        #: where the starting weights came from (:class:`fgvc.models.authors.WeightsRecord`,
        #: set by :func:`fgvc.models.pretrained.load_pretrained`), for the run's record
        self.pretrained_record: Any = None

    @property
    def spec(self) -> NetSpec:
        return dataclasses.replace(self._spec, num_classes=self.num_classes)

    @property
    def arch(self) -> str:
        return self._spec.arch

    @property
    def representation(self) -> str:
        return self._spec.representation

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image vectors (B, feature_dim) before the classifier (float32 from the
        second-order heads, whose pooling always runs in full precision)."""
        # a network cast to half / bfloat16 / float64 takes its input in the same type
        return self.head(self.backbone(x.to(self.classifier.weight.dtype)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.forward_features(x)
        return self.classifier(features.to(self.classifier.weight.dtype))

    def reset_classifier(self, num_classes: int | None = None) -> None:
        """Fresh classifier weights, optionally for a different number of classes."""
        if num_classes is not None and num_classes != self.num_classes:
            weight = self.classifier.weight
            self.classifier = nn.Linear(
                self.feature_dim, num_classes, device=weight.device, dtype=weight.dtype
            )
        else:
            self.classifier.reset_parameters()

    def extra_repr(self) -> str:
        return f"spec={self.spec.describe()!r}, feature_dim={self.feature_dim}"
