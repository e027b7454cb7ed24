"""``EvalPreprocessing``: how an image becomes a network input at evaluation, in one value.

The DataModule owns it (its validation and test pipelines are built from it) and saves it
into every checkpoint; an export bundle stores it in ``model.json``; ``fgvc predict`` and
:func:`fgvc.deploy.load` replay it. So an exported model sees exactly the pixels that
validation saw.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fgvc.data.io import decode_rgb, read_rgb
from fgvc.data.resize import describe_resize_crop, resize_crop
from fgvc.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESETS,
    build_transforms,
    decode_min_size,
    eval_resize,
    normalize_images,
)


@dataclass(frozen=True)
class EvalPreprocessing:
    """Decode, resize / crop, normalize - the evaluation pipeline of a run.

    What a dataset does to its own stored files before this (FGVC-Aircraft's copyright
    banner is cropped by :class:`~fgvc.data.FGVCAircraft`) is not part of it: a deployed
    model gets photos without that artifact.

    Attributes:
        image_size: side S of the square network input.
        preset: transform preset (see :func:`fgvc.data.transforms.build_transforms`).
        antialias: antialiased (Pillow-exact) resizing instead of OpenCV bilinear.
        fast_decode: decode JPEGs at 1/2, 1/4 or 1/8 scale where the resize allows.
        mean, std: per-channel normalization of ``pixel / 255``.
        tta: average the logits of the image and its horizontal mirror.

    Raises:
        ValueError: an unknown preset, a size below 8 or a value of the wrong type.
    """

    image_size: int
    preset: str
    antialias: bool = False
    fast_decode: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    tta: bool = False

    def __post_init__(self) -> None:
        size = self.image_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 8:
            raise ValueError(f"image_size must be an integer >= 8, got {size!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        for name in ("antialias", "fast_decode", "tta"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not _is_triple(value) or (name == "std" and min(value) <= 0):
                raise ValueError(f"{name} must be 3 numbers (std > 0), got {value!r}")
            object.__setattr__(self, name, tuple(float(v) for v in value))

    # -- the pipeline ---------------------------------------------------------------------
    def transform(self, normalize: bool = False) -> Any:
        """The albumentations pipeline: RGB ``uint8`` array -> ``(3, S, S)`` tensor
        (``uint8``, or ImageNet-normalized ``float32`` with ``normalize``)."""
        if normalize and (self.mean, self.std) != (IMAGENET_MEAN, IMAGENET_STD):
            raise ValueError("in-pipeline normalization uses the ImageNet statistics")
        return build_transforms(
            self.preset,
            train=False,
            image_size=self.image_size,
            normalize=normalize,
            antialias=self.antialias,
        )

    @property
    def decode_min_size(self) -> tuple[int, int] | None:
        """How large a JPEG must stay when decoded at reduced DCT scale (None: full size)."""
        return decode_min_size(self.preset, False, self.image_size) if self.fast_decode else None

    @functools.cached_property
    def _geometry(self) -> dict[str, Any]:
        # cached_property writes the instance __dict__ directly, which a frozen class allows
        return eval_resize(self.preset, self.image_size)

    def _to_uint8_tensor(self, image: np.ndarray) -> torch.Tensor:
        """The evaluation pipeline's resize and crop, without albumentations (a
        ``predict`` need not import it): the same pixels as :meth:`transform` (tested)."""
        out = resize_crop(image, **self._geometry, antialias=self.antialias)
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))

    def load(self, path: str | os.PathLike) -> torch.Tensor:
        """``(3, S, S)`` ``uint8`` tensor of an image file, as evaluation prepares it.

        Raises:
            ImageDecodeError: the file cannot be read or decoded (the message names it).
        """
        return self.prepare(read_rgb(path, self.decode_min_size)[0])

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        """``(3, S, S)`` ``uint8`` tensor of a decoded ``(H, W, 3)`` RGB ``uint8`` image: the
        resize and crop of :meth:`load` (which decodes a JPEG at reduced scale first where
        ``fast_decode`` allows; an image given already decoded is taken at its full size)."""
        return self._to_uint8_tensor(image)

    def load_bytes(self, data: bytes, name: str = "<bytes>") -> torch.Tensor:
        """:meth:`load` for encoded image bytes (an upload); ``name`` is shown in errors.

        Raises:
            ImageTooLargeError: above the decoding pixel limit (nothing decoded).
            ImageDecodeError: not a readable image.
        """
        image = decode_rgb(data, name, self.decode_min_size)[0]
        return self._to_uint8_tensor(image)

    def batch(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stack ``uint8`` images and normalize: ``(N, 3, S, S)`` ``float32``."""
        return normalize_images(torch.stack(list(images)), self.mean, self.std).contiguous()

    # -- description ----------------------------------------------------------------------
    @property
    def resize(self) -> str:
        """The resize / crop in words."""
        geometry = self._geometry
        return describe_resize_crop(
            geometry.get("size"), geometry.get("shortest_side"), geometry.get("crop")
        )

    @property
    def interpolation(self) -> str:
        return "bilinear, antialiased" if self.antialias else "bilinear (OpenCV)"

    def describe(self) -> str:
        """One line, e.g. ``"448 px, resize short side to 448, center crop 448x448, ..."``."""
        return (
            f"{self.image_size} px, {self.resize}, {self.interpolation}, "
            f"{'reduced-scale JPEG decode, ' if self.fast_decode else ''}"
            f"ImageNet mean/std, flip TTA {'on' if self.tta else 'off'}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields, plus the derived ``resize``/``interpolation``/``layout`` texts for
        people reading ``model.json``; :meth:`from_dict` reads it back."""
        fields = dataclasses.asdict(self)
        fields.update(mean=list(self.mean), std=list(self.std))
        return {
            **fields,
            "resize": self.resize,
            "interpolation": self.interpolation,
            "color": "RGB",
            "layout": "NCHW float32, (pixel / 255 - mean) / std",
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EvalPreprocessing:
        """The inverse of :meth:`to_dict` (derived texts are ignored).

        Raises:
            ValueError: a missing or bad value (the message names it).
        """
        names = [f.name for f in dataclasses.fields(cls)]
        if "image_size" not in values or "preset" not in values:
            raise ValueError("preprocessing needs image_size and preset")
        return cls(**{k: values[k] for k in names if k in values})


def _is_triple(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )
