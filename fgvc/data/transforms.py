"""Albumentations pipelines reproducing the authors' preprocessing, and device-side helpers.

Presets are numbers (:class:`fgvc.data.presets.Preset`), one per dataset under the dataset's
name plus ``generic`` (``S = image_size``, 448 in the papers; ImageNet mean/std)::

    preset        train                                          eval
    cub           resize short side S, center crop S, hflip      resize short side S, center crop S
    aircraft      resize to R x R (R = 512 S / 448), center      same, no flip
                  crop S, hflip
    cars          resize to S x S, hflip                         resize to S x S
    generic       random-resized crop S (scale 0.08-1), hflip    resize short side S / 0.875,
                                                                 center crop S
    (the others: their dataset's module in :mod:`fgvc.data.datasets`)

Resize and center crop run as one step (:class:`ResizeCrop`): by default OpenCV bilinear on
just the region the crop keeps (fast; about one grey level from the authors' Pillow output
on photos), or with ``antialias=True`` torch's antialiased bilinear kernel, which matches
Pillow's (the authors' torchvision ``Resize``) to within rounding.

With ``normalize=False`` the pipeline ends in a ``uint8`` CHW tensor: batches are four times
smaller, and :func:`normalize_images` (or the DataModules' ``on_after_batch_transfer``)
normalizes them on the device. Test-time flip augmentation is :func:`hflip_tta`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI request at import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

from fgvc.data.datasets import presets  # noqa: E402
from fgvc.data.presets import Preset  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the preset names: each dataset's and ``generic``
PRESETS: tuple[str, ...] = tuple(presets())


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


def _check(preset: str, image_size: int) -> Preset:
    if preset not in PRESETS:
        raise ValueError(f"unknown transform preset {preset!r}; choose one of {PRESETS}")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}")
    return presets()[preset]


def build_transforms(
    preset: str,
    train: bool,
    image_size: int = 448,
    normalize: bool = True,
    antialias: bool = False,
    seed: int | None = None,
) -> A.Compose:
    """The albumentations pipeline of ``preset`` for training or evaluation.

    Input: an ``(H, W, 3)`` RGB ``uint8`` array (``pipeline(image=array)["image"]``; the
    ``fgvc`` datasets call it that way). Output: a ``(3, S, S)`` tensor, ``float32`` and
    ImageNet-normalized, or ``uint8`` with ``normalize=False`` (see :func:`normalize_images`).

    Args:
        preset: a name in :data:`PRESETS` (a dataset's, or ``"generic"``).
        train: add the random parts (horizontal flip; random-resized crop for ``generic``).
        image_size: side ``S`` of the square output.
        normalize: end with ImageNet normalization (``float32``) instead of ``uint8``.
        antialias: resize with an antialiased kernel matching Pillow (slower).
        seed: seed of the pipeline's own random state (``None``: random).
    """
    numbers = _check(preset, image_size)
    square = (image_size, image_size)
    side = numbers.side(image_size)
    steps: list[A.BasicTransform] = []
    if train and numbers.random_resized_crop:
        steps.append(A.RandomResizedCrop(size=square, scale=(0.08, 1.0)))
    elif numbers.resize == "short_side":
        steps.append(ResizeCrop(shortest_side=side, crop=square, antialias=antialias))
    elif side == image_size:  # a square resize to S: nothing to crop
        steps.append(ResizeCrop(size=square, antialias=antialias))
    else:
        steps.append(ResizeCrop(size=(side, side), crop=square, antialias=antialias))
    if train:
        steps.append(A.HorizontalFlip(p=0.5))
    if normalize:
        steps.append(A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD, max_pixel_value=255.0))
    steps.append(ToTensorV2())
    return A.Compose(steps, seed=seed)


def decode_min_size(preset: str, train: bool, image_size: int = 448) -> tuple[int, int] | None:
    """How large ``(height, width)`` a decoded image must stay for ``preset``.

    Lets datasets decode JPEGs at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling) when the
    pipeline's resize target is at most that fraction of the stored image; ``None`` where
    the pipeline may crop a small region and enlarge it (random-resized crops in training).
    """
    numbers = _check(preset, image_size)
    if train and numbers.random_resized_crop:
        return None
    side = numbers.side(image_size)
    return side, side


def resize_side(preset: str, image_size: int) -> int:
    """The side ``preset``'s deterministic resize scales to before its ``image_size`` crop
    (the short side or both sides, as the preset says)."""
    return _check(preset, image_size).side(image_size)


def normalize_images(
    images: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """``uint8`` ``(B, 3, H, W)`` (or ``(3, H, W)``) images to normalized ``float32``.

    Floating-point input is returned unchanged: it is taken to be normalized already
    (``build_transforms(..., normalize=True)``).
    """
    if images.is_floating_point():
        return images
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize_images expects uint8 or float images, got {images.dtype}")
    mean_t, std_t = _scaled_stats(tuple(mean), tuple(std), images.device, images.dim())
    return images.float().sub_(mean_t).div_(std_t)


@functools.lru_cache(maxsize=16)
def _scaled_stats(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    # Built once per device: a fresh host-to-GPU copy every batch would wait on the stream.
    shape = (3, 1, 1) if dim == 3 else (1, 3, 1, 1)
    mean_t = torch.tensor(mean, device=device, dtype=torch.float32).view(shape) * 255
    std_t = torch.tensor(std, device=device, dtype=torch.float32).view(shape) * 255
    return mean_t, std_t


def hflip_tta(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits averaged over ``images`` and their horizontal mirrors (the papers' evaluation).

    ``logits``: ``forward(images)`` when the caller already has it (one forward saved).
    """
    if logits is None:
        logits = forward(images)
    return (logits + forward(torch.flip(images, dims=[-1]))) / 2
