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

Resize and center crop run as one step (:class:`~fgvc.data.resize_crop.ResizeCrop`): by
default OpenCV bilinear on just the region the crop keeps (fast; about one grey level from
the authors' Pillow output on photos), or with ``antialias=True`` torch's antialiased
bilinear kernel, which matches Pillow's (the authors' torchvision ``Resize``) to within
rounding. albumentations is imported when a pipeline is first built.

With ``normalize=False`` the pipeline ends in a ``uint8`` CHW tensor: batches are four times
smaller, and :func:`normalize_images` (or the DataModules' ``on_after_batch_transfer``)
normalizes them on the device. Test-time flip augmentation is :func:`hflip_tta`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from fgvc.data.datasets import presets
from fgvc.data.presets import Preset

if TYPE_CHECKING:
    import albumentations as A

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the preset names: each dataset's and ``generic``
PRESETS: tuple[str, ...] = tuple(presets())


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
    # albumentations (half a second to import) only where a pipeline is built, as
    # ResizeCrop's module imports it (without the update check)
    from fgvc.data.resize_crop import A, ResizeCrop, ToTensorV2

    square = (image_size, image_size)
    steps: list[A.BasicTransform] = []
    if train and numbers.random_resized_crop:
        steps.append(A.RandomResizedCrop(size=square, scale=(0.08, 1.0)))
    else:
        steps.append(ResizeCrop(**eval_resize(preset, image_size), antialias=antialias))
    if train:
        steps.append(A.HorizontalFlip(p=0.5))
    if normalize:
        steps.append(A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD, max_pixel_value=255.0))
    steps.append(ToTensorV2())
    return A.Compose(steps, seed=seed)


def eval_resize(preset: str, image_size: int) -> dict[str, Any]:
    """The deterministic resize and center crop of ``preset`` as arguments of
    :func:`fgvc.data.resize.resize_crop` (``size`` or ``shortest_side``, and ``crop``)."""
    numbers = _check(preset, image_size)
    square, side = (image_size, image_size), numbers.side(image_size)
    if numbers.resize == "short_side":
        return {"shortest_side": side, "crop": square}
    if side == image_size:  # a square resize to S: nothing to crop
        return {"size": square}
    return {"size": (side, side), "crop": square}


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


def __getattr__(name: str) -> Any:
    if name == "ResizeCrop":  # where it was defined before; imports albumentations
        from fgvc.data.resize_crop import ResizeCrop

        return ResizeCrop
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
