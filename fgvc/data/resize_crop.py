"""``ResizeCrop``: torchvision's ``Resize`` + ``CenterCrop`` as one albumentations step.

Its own module because it is an albumentations transform: importing albumentations takes
about half a second, which users of :mod:`fgvc.data.transforms` that build no pipeline
(``fgvc predict --help``, ``fgvc export --help``) do without. :mod:`fgvc.data.transforms`
builds the pipelines from it and the albumentations imported here.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI request at import

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

from fgvc.data.resize import describe_resize_crop, resize_crop  # noqa: E402

__all__ = ["A", "ResizeCrop", "ToTensorV2"]


class ResizeCrop(A.ImageOnlyTransform):
    """Resize, then center-crop: torchvision's ``Resize`` + ``CenterCrop`` in one step.

    The resize goes to ``size=(height, width)``, or scales the short side to
    ``shortest_side`` (long side truncated, as torchvision does); ``crop=(height, width)``
    then keeps the center (offsets rounded as torchvision rounds them).

    The pixels are :func:`fgvc.data.resize.resize_crop`'s (which evaluation also calls
    without albumentations).
    """

    def __init__(
        self,
        size: tuple[int, int] | None = None,
        shortest_side: int | None = None,
        crop: tuple[int, int] | None = None,
        antialias: bool = False,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        if (size is None) == (shortest_side is None):
            raise ValueError("ResizeCrop needs exactly one of size and shortest_side")
        self.size = size
        self.shortest_side = shortest_side
        self.crop = crop
        self.antialias = antialias

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return resize_crop(img, self.size, self.shortest_side, self.crop, self.antialias)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size", "shortest_side", "crop", "antialias")

    def describe(self) -> str:
        """In words, e.g. ``"resize short side to 512, center crop 448x448"``."""
        return describe_resize_crop(self.size, self.shortest_side, self.crop)
