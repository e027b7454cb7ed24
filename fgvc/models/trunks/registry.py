"""What a trunk is to the rest of fgvc: a :class:`TrunkEntry` in the table ``TRUNKS``.

A trunk maps images (B, 3, H, W) to a feature map (B, C, H/s, W/s) that a head pools. Its
entry says what it gives (channels, stride for each last stride), builds it, and loads and
describes its ImageNet weights. The built module answers what training and Grad-CAM need
(:class:`Trunk`): the layer Grad-CAM uses, where its cells sit, which parameters get no weight
decay and how it freezes. NetSpec, the factory, the optimizer, the LightningModule and
Grad-CAM ask these, so a new trunk needs its module, one line in the table and its test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import nn

from fgvc.models.trunks.geometry import measure_cell_centres
from fgvc.models.trunks.norms import no_decay_parameter_names, set_norms_training


@dataclass(frozen=True)
class TrunkWeights:
    """One set of ImageNet weights and the input preprocessing they were trained with (as
    torchvision's weight enums and timm's ``pretrained_cfg`` record it).

    Attributes:
        name: torchvision's enum name (``IMAGENET1K_V1``) or timm's ``model.tag``.
        mean, std: per-channel normalization of ``pixel / 255``.
        resize: the shorter side before the evaluation crop.
        crop: the evaluation crop (the training resolution).
        interpolation: ``bilinear`` or ``bicubic``.
        top1: ImageNet-1k top-1 accuracy where the library records it (None otherwise).
    """

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: int
    crop: int
    interpolation: str
    top1: float | None = None


@dataclass(frozen=True)
class TrunkEntry:
    """One trunk (a ``model.arch`` value): how to build it and what it gives.

    Attributes:
        name: the ``model.arch`` value (``resnet50``, ``vgg16_bn``, ``timm/convnext_atto``).
        family: where it comes from, in a few words.
        channels: C, the channels of its output map.
        strides: ``{last_stride: total stride}`` for each last stride it accepts; the first
            key is its default where a head's default is not among them.
        build: ``last_stride -> Trunk`` with freshly initialized (library default) weights.
        weights: ``choice -> TrunkWeights``; ``None`` is the default set (``imagenet``).
        load_imagenet: ``(trunk, choice, progress)``: load ImageNet weights into a built
            trunk in place; ``choice`` is None (default), a weight name or a file path.
        last_stride_means: what ``last_stride`` changes, for messages and the README.
    """

    name: str
    family: str
    channels: int
    strides: Mapping[int, int]
    build: Callable[[int], nn.Module]
    weights: Callable[[str | None], TrunkWeights]
    load_imagenet: Callable[[nn.Module, str | None, bool], None]
    last_stride_means: str = "stride of the last stage"

    def default_last_stride(self, preferred: int) -> int:
        """``preferred`` (the head's default) if this trunk accepts it, else its own default."""
        return preferred if preferred in self.strides else next(iter(self.strides))

    def check_last_stride(self, last_stride: object) -> None:
        """Raises ValueError unless ``last_stride`` is one this trunk accepts."""
        if isinstance(last_stride, bool) or last_stride not in self.strides:
            accepted = " or ".join(map(str, sorted(self.strides)))
            raise ValueError(
                f"last_stride must be {accepted} for {self.name} ({self.last_stride_means}), "
                f"got {last_stride!r}"
            )

    def stride(self, last_stride: int) -> int:
        """The total stride of the output map with ``last_stride``."""
        self.check_last_stride(last_stride)
        return self.strides[last_stride]


class Trunk(nn.Module):
    """What every trunk module answers besides ``forward``: mix it into the family's module.

    Subclasses set ``arch``, ``out_channels``, ``last_stride``, ``stride`` and ``cam_layer``
    (the name of the submodule whose output is the map Grad-CAM weighs: the trunk's last).
    """

    arch: str
    out_channels: int
    last_stride: int
    stride: int
    cam_layer: str

    def cell_centres(self, size: tuple[int, int]) -> tuple[int, float]:
        """``(stride, offset)``: output cell ``j`` is centred on input pixel
        ``offset + stride * j`` for an input of ``size`` (see :mod:`.geometry`)."""
        return measure_cell_centres(self, size)

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters that get no weight decay: every norm layer's and every
        bias (and any the library's model lists, e.g. timm's position embeddings)."""
        return no_decay_parameter_names(self)

    def set_frozen(self, frozen: bool, training: bool = True) -> None:
        """Norm layers in eval while frozen (their statistics stay put), else ``training``."""
        set_norms_training(self, training and not frozen)

    def probe_size(self) -> int:
        """An input side every stride of this trunk divides (for measurements)."""
        return 8 * self.stride
