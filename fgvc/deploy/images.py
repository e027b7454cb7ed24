"""The images :meth:`Classifier.predict <fgvc.deploy.classifier.Classifier.predict>` takes
(listed in :mod:`fgvc.deploy.classifier`), each made into the ``(3, S, S)`` ``uint8`` crop
of the recorded evaluation preprocessing, or into the one-line error that names it: its
path, or ``image <i>`` for its position.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fgvc.data.files import collect_images
from fgvc.data.io import image_to_rgb
from fgvc.data.preprocessing import EvalPreprocessing
from fgvc.deploy.predict import load_or_reason
from fgvc.errors import FgvcError, ImageDecodeError, UsageError, one_line

#: One image, as :meth:`Classifier.predict <fgvc.deploy.classifier.Classifier.predict>`
#: takes it.
ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


class NotTaken(str):
    """A path a folder walk did not take (a folder link, an unreadable folder), with why
    (:attr:`reason`): an unreadable image to :func:`prepare_image`."""

    reason: str

    def __new__(cls, path: Path, reason: str) -> NotTaken:
        self = super().__new__(cls, os.fspath(path))
        self.reason = reason
        return self


def as_image_list(images: Any) -> list[Any]:
    """One image or several as a list of single images (see the module doc); a folder
    stands for the image files under it, sorted, as in ``fgvc predict``.

    Raises:
        UsageError: ``images`` is empty or not images.
    """
    if isinstance(images, (str, os.PathLike, Image.Image)):
        images = [images]
    elif isinstance(images, (np.ndarray, torch.Tensor)):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, Iterable) and not isinstance(images, (bytes, dict)):
        items: list[Any] = []
        for item in images:
            if isinstance(item, (str, os.PathLike)) and Path(item).expanduser().is_dir():
                found, not_taken = collect_images([item])
                items += found + [NotTaken(path, reason) for path, reason in not_taken]
            else:
                items.append(item)
        if items:
            return items
        raise UsageError("no image given (an empty list, or folders without images)")
    raise UsageError(
        f"a {type(images).__name__} is not an image; give file paths, PIL images, uint8 "
        f"arrays (H, W, 3) or tensors (3, H, W), or a list of them"
    )


def image_name(image: Any, index: int) -> str:
    """How an image is named in results and errors: its path, else ``image <index>``."""
    return os.fsdecode(image) if isinstance(image, (str, os.PathLike)) else f"image {index}"


def _tensor_to_array(image: torch.Tensor, name: str) -> Any:
    if image.is_floating_point():
        raise ImageDecodeError(
            f"{name}: a {str(image.dtype).replace('torch.', '')} tensor; predict takes uint8 "
            f"pixels (C, H, W) - give (x * 255).round().byte() for pixels in [0, 1], or pass "
            f"network-ready (normalized) batches to Classifier.logits"
        )
    if image.ndim == 3 and image.shape[0] in (1, 3, 4):
        image = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)
    elif image.ndim != 2:
        raise ImageDecodeError(
            f"{name}: a tensor of shape {tuple(image.shape)} is not an image; give (3, H, W)"
        )
    return image.detach().cpu().numpy()


def prepare_image(
    prep: EvalPreprocessing, image: ImageLike, index: int
) -> torch.Tensor | FgvcError:
    """The ``(3, S, S)`` uint8 crop of one image (``index``: its position, which names an
    image given in memory), or the error that says why not (returned, not raised: the
    caller raises it or keeps it as that image's result)."""
    if isinstance(image, NotTaken):
        return ImageDecodeError(image.reason)
    if isinstance(image, (str, os.PathLike)):
        loaded = load_or_reason(prep, Path(image))
        return loaded if isinstance(loaded, torch.Tensor) else ImageDecodeError(loaded)
    name = image_name(image, index)
    try:
        if isinstance(image, torch.Tensor):
            image = _tensor_to_array(image, name)
        return prep.prepare(image_to_rgb(image, name))
    except FgvcError as err:
        return err
    except (ValueError, RuntimeError, OSError) as err:  # e.g. cv2 on a degenerate image
        return ImageDecodeError(f"{name}: {one_line(err)}")
