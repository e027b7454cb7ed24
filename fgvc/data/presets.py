"""Preprocessing presets as numbers: how an image is resized and cropped to ``S x S``.

A dataset's descriptor (:class:`fgvc.data.descriptor.DatasetSpec`) holds its preset; the
preset's name is the dataset's name (``cub``, ``aircraft``...), plus ``generic`` for image
folders. :func:`fgvc.data.transforms.build_transforms` builds the pipeline from these numbers::

    name      resize                         ratio      train crop
    cub       short side to ratio x S        1          center S, hflip
    aircraft  both sides to ratio x S        512/448    center S, hflip
    cars      both sides to ratio x S        1          (none: the resize is S x S), hflip
    generic   short side to ratio x S        8/7        random-resized S (scale 0.08-1), hflip
              (rounded up; crop fraction 0.875)

Evaluation always resizes and takes the center ``S x S`` crop without flipping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Preset:
    """The resize and crop of one preset.

    Attributes:
        resize: ``"short_side"`` (the shorter side to ``ratio * S``, aspect kept) or
            ``"square"`` (both sides to ``ratio * S``).
        ratio: resize target over the crop side ``S`` (exact: a fraction).
        random_resized_crop: training uses a random-resized crop of ``S`` instead of the
            evaluation resize + center crop (a scale-augmenting preset).
        round_up: the resize side is ``ceil(ratio * S)`` instead of rounded to nearest
            (torchvision's ``resize = S / crop_fraction`` convention).
    """

    resize: str
    ratio: Fraction = Fraction(1)
    random_resized_crop: bool = False
    round_up: bool = False

    def __post_init__(self) -> None:
        if self.resize not in ("short_side", "square"):
            raise ValueError(f"resize must be 'short_side' or 'square', got {self.resize!r}")
        if not isinstance(self.ratio, Fraction) or self.ratio < 1:
            raise ValueError(f"ratio must be a Fraction >= 1, got {self.ratio!r}")

    def side(self, image_size: int) -> int:
        """The side the deterministic resize scales to before the ``image_size`` crop."""
        exact = self.ratio * image_size
        return math.ceil(exact) if self.round_up else round(exact)


#: image folders: timm/torchvision ImageNet-style evaluation (crop fraction 0.875)
GENERIC = Preset("short_side", Fraction(8, 7), random_resized_crop=True, round_up=True)
