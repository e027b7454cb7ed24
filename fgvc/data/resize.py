"""Resize, then center-crop: torchvision's ``Resize`` + ``CenterCrop`` as one pure function.

Evaluation (:class:`fgvc.data.preprocessing.EvalPreprocessing`) calls it directly, training
through the albumentations step :class:`fgvc.data.resize_crop.ResizeCrop`; so ``fgvc
predict`` starts without importing albumentations, and both see the same pixels.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def resized_shape(
    height: int, width: int, size: tuple[int, int] | None, shortest_side: int | None
) -> tuple[int, int]:
    """``(height, width)`` after the resize: ``size``, or the short side to ``shortest_side``
    with the long side truncated, as torchvision does."""
    if size is not None:
        return size
    if shortest_side is None:
        raise ValueError("a resize needs size or shortest_side")
    if height <= width:
        return shortest_side, int(shortest_side * width / height)
    return int(shortest_side * height / width), shortest_side


def resize_crop(
    img: np.ndarray,
    size: tuple[int, int] | None = None,
    shortest_side: int | None = None,
    crop: tuple[int, int] | None = None,
    antialias: bool = False,
) -> np.ndarray:
    """Resize ``img`` (``(H, W, C)``) to ``size`` or by ``shortest_side``, then keep the
    center ``crop`` (offsets rounded as torchvision rounds them).

    Bilinear (default): only the source region that the crop keeps is resized, straight to
    the crop size, with OpenCV - about a quarter less work than resizing the whole image,
    and equal to it up to a sub-pixel shift. ``antialias=True``: torch's antialiased
    bilinear kernel (Pillow's ``BILINEAR`` filter, which the authors' pipeline uses) on the
    whole image, then the crop - the authors' pixels to within rounding, but slower.
    """
    height, width = img.shape[:2]
    out_h, out_w = resized_shape(height, width, size, shortest_side)
    crop_h, crop_w = crop or (out_h, out_w)
    if crop_h > out_h or crop_w > out_w:
        raise ValueError(f"crop {crop} is larger than the resized image {out_h}x{out_w}")
    top, left = int(round((out_h - crop_h) / 2.0)), int(round((out_w - crop_w) / 2.0))
    if antialias:
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


def describe_resize_crop(
    size: tuple[int, int] | None, shortest_side: int | None, crop: tuple[int, int] | None
) -> str:
    """In words, e.g. ``"resize short side to 512, center crop 448x448"``."""
    text = (
        f"resize to {size[0]}x{size[1]}"
        if size is not None
        else (f"resize short side to {shortest_side}")
    )
    return text + (f", center crop {crop[0]}x{crop[1]}" if crop else "")
