"""One stored sample back to pixels: the shard's JPEG bytes decoded as the dataset decodes
its file (reduced-scale JPEG decoding where the resize allows, the dataset's own bottom crop)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fgvc.data.io import decode_rgb


def decode_sample(
    item: Mapping[str, Any], min_size: tuple[int, int] | None = None, crop_bottom: int = 0
) -> np.ndarray:
    """The RGB ``uint8`` image of a stored sample (``image`` bytes, ``id``).

    ``crop_bottom`` rows (at full scale) are removed at the bottom after decoding, as
    :class:`~fgvc.data.FGVCAircraft` removes its banner; ``min_size`` is kept after the crop.

    Raises:
        ImageDecodeError: the bytes are not a readable image (the message names the sample).
        ValueError: too few rows for the crop.
    """
    name = f"shard sample {item['id']}"
    if crop_bottom and min_size is not None:
        min_size = (min_size[0] + crop_bottom, min_size[1])
    image, factor = decode_rgb(bytes(item["image"]), name, min_size)
    if crop_bottom:
        rows = math.ceil(crop_bottom / factor)
        if image.shape[0] <= rows:
            raise ValueError(f"{name}: {image.shape[0]} rows, too few to crop {crop_bottom}")
        image = image[:-rows]
    return image
