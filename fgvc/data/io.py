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

Before anything is decoded, the image's size is read from its header (JPEG SOF, PNG IHDR,
Pillow's header parse for everything else) and images above a pixel limit are refused
with :class:`ImageTooLargeError`: a few-kB PNG can claim 30000 x 30000 pixels and would
need gigabytes once decoded (a "decompression bomb"). The limit applies to the stored size
(also when a JPEG is decoded at reduced scale); see :func:`max_image_pixels`. The same
header check refuses images more than :data:`MAX_ASPECT_RATIO` times as long as they are
wide (a 1 x 5000 strip): nothing of them survives a center crop, and resizing their short
side to the network's input would make them huge. Both rules live here, in decoding, so
``fgvc data check``, training, validation and ``fgvc predict`` refuse the same files with
the same line.
"""

from __future__ import annotations

import io
import math
import os

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from fgvc.errors import ImageDecodeError, UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

# EXIF orientation is ignored, as Pillow's (torchvision's, the authors') loader ignores it
_KEEP = cv2.IMREAD_IGNORE_ORIENTATION
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)
_REDUCED = {
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


# Pillow's default (Image.MAX_IMAGE_PIXELS): about 89.5 Mpx, e.g. 9459 x 9459
DEFAULT_MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3
MAX_PIXELS_ENV = "FGVC_MAX_IMAGE_PIXELS"
#: Longest side over shortest side: panoramas reach about 10, photos of objects far less.
MAX_ASPECT_RATIO = 20


class ImageTooLargeError(ImageDecodeError):
    """An image's header claims more pixels than the decoding limit (a decompression bomb)."""


def max_image_pixels(max_pixels: int | None = None) -> int | None:
    """The pixel limit in force; None means no limit.

    ``max_pixels`` wins when given (0: no limit); otherwise the environment variable
    ``FGVC_MAX_IMAGE_PIXELS`` (a whole number, ``0`` or ``none``: no limit), read at each
    call so DataLoader workers and other processes obey it; otherwise
    ``DEFAULT_MAX_IMAGE_PIXELS``.

    Raises:
        ValueError: a negative ``max_pixels``.
        UsageError: an unreadable ``FGVC_MAX_IMAGE_PIXELS`` (a ``ValueError`` too).
    """
    return _limit(max_pixels)[0]


def _limit(max_pixels: int | None) -> tuple[int | None, str]:
    """``(limit, how to raise it)``: a hint to format with the image's ``pixels``."""
    if max_pixels is not None:
        if max_pixels < 0:
            raise ValueError(f"max_pixels must be >= 0 (0: no limit), got {max_pixels}")
        return max_pixels or None, "pass max_pixels={pixels} or more (0: no limit)"
    hint = f"set {MAX_PIXELS_ENV}={{pixels}} or more (0 or none: no limit)"
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS, hint
    if raw.lower() == "none":
        return None, hint
    try:
        value = float(raw) if any(c in raw for c in ".eE") else int(raw)
        valid = value >= 0 and value == int(value)
    except (ValueError, OverflowError):  # not a number; inf
        valid = False
    if not valid:
        raise UsageError(  # the caller's setting, not the image: the same for every file
            f"{MAX_PIXELS_ENV}={raw!r} is not a pixel count; set it to a whole number such "
            f"as 200000000, or to 0 or none for no limit"
        )
    return int(value) or None, hint


def _check_pixels(name: str, height: int, width: int, limit: tuple[int | None, str]) -> None:
    """The rules every decoded image obeys, applied to the size its header claims."""
    if max(height, width) > MAX_ASPECT_RATIO * max(1, min(height, width)) or not height * width:
        raise ImageDecodeError(
            f"{name}: {width}x{height} image, its long side more than {MAX_ASPECT_RATIO} times "
            f"its short side (a strip, not a photograph: a center crop keeps nothing of it); "
            f"crop or remove it (fgvc data check lists all such files)"
        )
    pixels = height * width
    if limit[0] is not None and pixels > limit[0]:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} image ({pixels:,} pixels) is above the decoding limit "
            f"of {limit[0]:,} pixels (a guard against decompression bombs); if the image is "
            f"genuine, {limit[1].format(pixels=pixels)}"
        )


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
        if marker < 0xC0:
            # not a marker: libjpeg skips such bytes and reads on, so a size found after a
            # "segment" skipped here need not be the one it decodes - let Pillow parse it
            return None
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


def png_header(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` from a PNG's IHDR chunk (always the first), or None if not a PNG."""
    if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 24:
        return None
    return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")


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


def pil_to_rgb(image: Image.Image) -> np.ndarray:
    """A Pillow image as an ``(H, W, 3)`` RGB ``uint8`` array, as files Pillow decodes
    become (16-bit samples scaled to 8 bits, alpha dropped)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image).astype(np.int64)
        if image.mode == "I" and array.max(initial=0) <= 255:
            return _to_rgb_uint8(np.clip(array, 0, 255).astype(np.uint8))
        return _to_rgb_uint8(np.clip(array, 0, 65535).astype(np.uint16))
    return np.ascontiguousarray(np.asarray(image.convert("RGB")))


def image_to_rgb(image: Image.Image | np.ndarray, name: str = "<image>") -> np.ndarray:
    """An image already in memory as a decoded file would be: a Pillow image, or an
    ``(H, W)`` / ``(H, W, 3)`` / ``(H, W, 4)`` ``uint8`` (or ``uint16``) RGB(A) array ->
    ``(H, W, 3)`` RGB ``uint8``, held to the same shape rule as files (the pixel limit
    guards decoding, so it does not apply).

    Raises:
        ImageDecodeError: another type, dtype or shape, or a strip (the message names
            ``name`` and says what to give).
    """
    if isinstance(image, Image.Image):
        array = pil_to_rgb(image)
    else:
        array = np.asarray(image) if isinstance(image, np.ndarray) else None
        shape = None if array is None else array.shape
        if array is None or not (array.ndim == 2 or (array.ndim == 3 and shape[2] in (3, 4))):
            what = type(image).__name__ if array is None else f"array of shape {shape}"
            raise ImageDecodeError(
                f"{name}: {what} is not an image; give an (H, W, 3) RGB uint8 array, a PIL "
                f"image or a file"
            )
        if array.dtype not in (np.uint8, np.uint16):
            raise ImageDecodeError(
                f"{name}: {array.dtype} pixels; give uint8 RGB (0-255), e.g. "
                f"(x * 255).round().astype(np.uint8) for floats in [0, 1]"
            )
        array = _to_rgb_uint8(array)
    _check_pixels(name, array.shape[0], array.shape[1], (None, ""))
    return array


def _decode_pil(data: bytes, name: str, limit: tuple[int | None, str]) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_pixels(name, image.height, image.width, limit)  # open() read the header only
            image.load()
            return pil_to_rgb(image)
    # Pillow's own guard (PIL.Image.MAX_IMAGE_PIXELS) is no OSError, and its warning is
    # raised when warnings are errors: both become our error instead of a crash
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLargeError(
            f"{name}: Pillow refuses to decode it ({err}); if the image is genuine, raise "
            f"PIL.Image.MAX_IMAGE_PIXELS as well"
        ) from err


def _decode_cv2(data: bytes, flags: int) -> np.ndarray | None:
    buffer = np.frombuffer(data, dtype=np.uint8)
    if flags == cv2.IMREAD_COLOR and _IMREAD_RGB is not None:
        return cv2.imdecode(buffer, _IMREAD_RGB | _KEEP)
    image = cv2.imdecode(buffer, flags | _KEEP)
    if image is None:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_rgb(
    data: bytes,
    name: str = "<bytes>",
    min_size: tuple[int, int] | None = None,
    max_pixels: int | None = None,
) -> tuple[np.ndarray, int]:
    """Decode encoded image bytes to RGB ``uint8``; returns ``(image, reduction factor)``.

    The factor is 1 unless a JPEG was decoded at reduced scale because ``min_size``
    (``(min_height, min_width)``) allowed it; the image is then about ``1 / factor`` the
    size of the stored one. ``max_pixels``: see :func:`max_image_pixels`.

    Raises:
        ImageTooLargeError: the header claims more pixels than the limit (nothing decoded).
        ImageDecodeError: the bytes are not a readable image (message names ``name``).
    """
    if not data:
        raise ImageDecodeError(f"{name}: empty file; replace it with a valid image")
    limit = _limit(max_pixels)
    header = jpeg_header(data)
    size = header[:2] if header is not None else png_header(data)
    if size is not None:
        _check_pixels(name, *size, limit)
    try:
        if header is not None and header[2] in (1, 3) and _ends_with_eoi(data):
            factor = reduction_factor(header[0], header[1], min_size)
            flags = _REDUCED[factor] if factor > 1 else cv2.IMREAD_COLOR
            image = _decode_cv2(data, flags)
            if image is not None:
                return image, factor
        elif data[:8] == _PNG_SIGNATURE:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            if image is not None:
                if image.ndim == 3:
                    code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
                    image = cv2.cvtColor(image, code)
                return _to_rgb_uint8(image), 1
        return _decode_pil(data, name, limit), 1
    except ImageDecodeError:
        raise
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, cv2.error) as err:
        raise ImageDecodeError(
            f"{name}: cannot decode image ({err}); the file is corrupt or not an image - "
            f"replace it (fgvc data check lists all such files)"
        ) from err


def read_rgb(
    path: str | os.PathLike,
    min_size: tuple[int, int] | None = None,
    max_pixels: int | None = None,
) -> tuple[np.ndarray, int]:
    """Read and decode ``path``; returns ``(RGB uint8 image, reduction factor)``.

    See :func:`decode_rgb` for ``min_size`` and ``max_pixels``.

    Raises:
        ImageTooLargeError: above the pixel limit (nothing decoded; see
            :func:`max_image_pixels`).
        ImageDecodeError: missing, unreadable or undecodable file (the message names it).
    """
    # a name that is not valid UTF-8 is shown escaped: printing it must not crash
    name = os.fsencode(path).decode("utf-8", "backslashreplace")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ImageDecodeError(
            f"{name}: cannot read image ({err.strerror or err}); check the dataset root"
        ) from err
    return decode_rgb(data, name, min_size, max_pixels)


def load_rgb(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Decode ``path`` at full size to an ``(H, W, 3)`` RGB ``uint8`` array.

    Raises:
        ImageTooLargeError: above the pixel limit (see :func:`max_image_pixels`).
        ImageDecodeError: missing, unreadable or undecodable file (the message names it).
    """
    return read_rgb(path, max_pixels=max_pixels)[0]
