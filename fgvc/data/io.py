"""Image decoding to RGB ``uint8`` arrays, whatever the file holds.

Fast path: OpenCV (libjpeg-turbo, libpng) decodes JPEGs with one or three components and
PNGs, optionally at 1/2, 1/4 or 1/8 scale through libjpeg's DCT scaling when the caller
says how large the image must stay (``min_size``). Everything else - CMYK / YCCK JPEGs,
JPEGs that do not end in an EOI marker (truncated files), formats OpenCV cannot read -
goes through Pillow, which fails loudly on truncation instead of returning grey rows.

Whatever the source (grayscale, CMYK, palette, alpha, 16 bit), the result is a C-contiguous
``(H, W, 3)`` RGB ``uint8`` array; alpha is dropped (not composited) as Pillow's
``convert("RGB")`` does, 16-bit samples are scaled to 8 bits (``>> 8``), and EXIF
orientation tags are ignored - pixels come out as stored, as with Pillow's (torchvision's)
default loader.
"""

from __future__ import annotations

import io
import math
import os

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from fgvc.errors import ImageDecodeError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

# EXIF orientation is ignored, as Pillow's (torchvision's, the authors') loader ignores it
_KEEP = cv2.IMREAD_IGNORE_ORIENTATION
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)
_REDUCED = {
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """``(height, width, components)`` from a JPEG's SOF segment, or None if not a JPEG."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF_MARKERS:
            if pos + 10 > end:
                return None
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return height, width, data[pos + 9]
        if marker == 0xDA:  # start of scan before any SOF: broken
            return None
        pos += 2 + length
    return None


def _ends_with_eoi(data: bytes) -> bool:
    return data[-64:].rstrip(b"\x00\r\n\t ").endswith(b"\xff\xd9")


def reduction_factor(height: int, width: int, min_size: tuple[int, int] | None) -> int:
    """Largest DCT scale denominator (1, 2, 4, 8) keeping the image at least ``min_size``.

    ``min_size`` is ``(min_height, min_width)``; libjpeg rounds scaled sizes up.
    """
    if min_size is None:
        return 1
    min_h, min_w = min_size
    for factor in (8, 4, 2):
        if math.ceil(height / factor) >= min_h and math.ceil(width / factor) >= min_w:
            return factor
    return 1


def _to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(f"unsupported sample type {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def _decode_pil(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            array = np.asarray(image).astype(np.int64)
            if image.mode == "I" and array.max(initial=0) <= 255:
                return _to_rgb_uint8(np.clip(array, 0, 255).astype(np.uint8))
            return _to_rgb_uint8(np.clip(array, 0, 65535).astype(np.uint16))
        return np.ascontiguousarray(np.asarray(image.convert("RGB")))


def _decode_cv2(data: bytes, flags: int) -> np.ndarray | None:
    buffer = np.frombuffer(data, dtype=np.uint8)
    if flags == cv2.IMREAD_COLOR and _IMREAD_RGB is not None:
        return cv2.imdecode(buffer, _IMREAD_RGB | _KEEP)
    image = cv2.imdecode(buffer, flags | _KEEP)
    if image is None:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_rgb(
    data: bytes, name: str = "<bytes>", min_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, int]:
    """Decode encoded image bytes to RGB ``uint8``; returns ``(image, reduction factor)``.

    The factor is 1 unless a JPEG was decoded at reduced scale because ``min_size``
    (``(min_height, min_width)``) allowed it; the image is then about ``1 / factor`` the
    size of the stored one.

    Raises:
        ImageDecodeError: the bytes are not a readable image (message names ``name``).
    """
    if not data:
        raise ImageDecodeError(f"{name}: empty file; replace it with a valid image")
    header = jpeg_header(data)
    try:
        if header is not None and header[2] in (1, 3) and _ends_with_eoi(data):
            factor = reduction_factor(header[0], header[1], min_size)
            flags = _REDUCED[factor] if factor > 1 else cv2.IMREAD_COLOR
            image = _decode_cv2(data, flags)
            if image is not None:
                return image, factor
        elif data[:8] == b"\x89PNG\r\n\x1a\n":
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            if image is not None:
                if image.ndim == 3:
                    code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
                    image = cv2.cvtColor(image, code)
                return _to_rgb_uint8(image), 1
        return _decode_pil(data), 1
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, cv2.error) as err:
        raise ImageDecodeError(
            f"{name}: cannot decode image ({err}); the file is corrupt or not an image - "
            f"replace it (fgvc data check lists all such files)"
        ) from err


def read_rgb(
    path: str | os.PathLike, min_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, int]:
    """Read and decode ``path``; returns ``(RGB uint8 image, reduction factor)``.

    See :func:`decode_rgb` for ``min_size``.

    Raises:
        ImageDecodeError: missing, unreadable or undecodable file (the message names it).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ImageDecodeError(
            f"{path}: cannot read image ({err.strerror or err}); check the dataset root"
        ) from err
    return decode_rgb(data, os.fspath(path), min_size)


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode ``path`` at full size to an ``(H, W, 3)`` RGB ``uint8`` array.

    Raises:
        ImageDecodeError: missing, unreadable or undecodable file (the message names it).
    """
    return read_rgb(path)[0]
