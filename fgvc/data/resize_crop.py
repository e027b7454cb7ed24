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
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

__all__ = ["A", "ResizeCrop", "ToTensorV2"]


class ResizeCrop(A.ImageOnlyTransform):
    """Resize, then center-crop: torchvision's ``Resize`` + ``CenterCrop`` in one step.

    The resize goes to ``size=(height, width)``, or scales the short side to
    ``shortest_side`` (long side truncated, as torchvision does); ``crop=(height, width)``
    then keeps the center (offsets rounded as torchvision rounds them).

    Bilinear (default): only the source region that the crop keeps is resized, straight to
    the crop size, with OpenCV - about a quarter less work than resizing the whole image,
    and equal to it up to a sub-pixel shift. ``antialias=True``: torch's antialiased
    bilinear kernel (Pillow's ``BILINEAR`` filter, which the authors' pipeline uses) on the
    whole image, then the crop - the authors' pixels to within rounding, but slower.
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

    def _resized_shape(self, height: int, width: int) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        side = self.shortest_side
        if height <= width:
            return side, int(side * width / height)
        return int(side * height / width), side

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        height, width = img.shape[:2]
        out_h, out_w = self._resized_shape(height, width)
        crop_h, crop_w = self.crop or (out_h, out_w)
        if crop_h > out_h or crop_w > out_w:
            raise ValueError(f"crop {self.crop} is larger than the resized image {out_h}x{out_w}")
        top, left = int(round((out_h - crop_h) / 2.0)), int(round((out_w - crop_w) / 2.0))
        if self.antialias:
            tensor = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
            if (out_h, out_w) != (height, width):
                tensor = F.interpolate(tensor, size=(out_h, out_w), mode="bilinear", antialias=True)
            out = tensor[0, :, top : top + crop_h, left : left + crop_w].permute(1, 2, 0)
            return np.ascontiguousarray(out.numpy())
        scale_y, scale_x = height / out_h, width / out_w
        y0, y1 = round(top * scale_y), round((top + crop_h) * scale_y)
        x0, x1 = round(left * scale_x), round((left + crop_w) * scale_x)
        # a crop under a source pixel wide (a 1-pixel-high image) keeps the pixel it lies in
        y0, x0 = min(y0, height - 1), min(x0, width - 1)
        y1, x1 = max(y1, y0 + 1), max(x1, x0 + 1)
        region = img[y0:y1, x0:x1]
        if region.shape[:2] == (crop_h, crop_w):
            return np.ascontiguousarray(region)
        return cv2.resize(region, (crop_w, crop_h), interpolation=cv2.INTER_LINEAR)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size", "shortest_side", "crop", "antialias")

    def describe(self) -> str:
        """In words, e.g. ``"resize short side to 512, center crop 448x448"``."""
        if self.size is not None:
            text = f"resize to {self.size[0]}x{self.size[1]}"
        else:
            text = f"resize short side to {self.shortest_side}"
        return text + (f", center crop {self.crop[0]}x{self.crop[1]}" if self.crop else "")
