"""Explanations as files: one PNG per image, a contact sheet, and a JSON summary.

    <out>/
        001-<image name>.png   the evaluation crop beside its heat map, with a caption
        002-...
        contact_sheet.png      every heat map in a grid, each captioned with class and p
        explanations.json      per image: file, class, probability, top-1; the unreadable ones

Captions are drawn with Pillow in DejaVu Sans (the system's, or the copy matplotlib ships),
else Pillow's built-in font; characters the font lacks (CJK in DejaVu) show as boxes. The
folder is written whole or not at all (:func:`fgvc.deploy.publish.staged_folder`).
:func:`explain_bundle` is the one call for a run's end: bundle + images -> these files.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from fgvc.data.files import display_path
from fgvc.deploy.explain import TARGET_LAYER, Explainable, Explanation, explain_images
from fgvc.deploy.publish import staged_folder
from fgvc.errors import FgvcError

CONTACT_SHEET = "contact_sheet.png"
SUMMARY = "explanations.json"
_BACKGROUND = (255, 255, 255)
_INK = (0, 0, 0)


@dataclass
class ExplainOutputs:
    """What :func:`write_explanations` wrote.

    Attributes:
        folder: the output folder.
        overlays: one PNG per explanation, in order.
        contact_sheet: the grid of all of them.
        summary: ``explanations.json``.
        explanations: what was drawn (``caption`` is ready for a W&B image panel).
        errors: ``(image, message)`` for each image that could not be read.
    """

    folder: Path
    overlays: list[Path]
    contact_sheet: Path
    summary: Path
    explanations: list[Explanation]
    errors: list[tuple[Path, str]] = field(default_factory=list)


# ------------------------------------------------------------------------------- drawing
@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans (accents, Greek, Cyrillic) from the system or matplotlib's copy, else
    Pillow's own fonts (ASCII only)."""
    if not features.check("freetype2"):
        return ImageFont.load_default()
    spec = importlib.util.find_spec("matplotlib")  # located, not imported
    folders = (spec.submodule_search_locations or []) if spec else []
    bundled = [str(Path(f, "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")) for f in folders]
    for name in ("DejaVuSans.ttf", *bundled):
        with contextlib.suppress(OSError):
            return ImageFont.truetype(name, size)
    return ImageFont.load_default(size=size)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """``text``, cut with an ellipsis to ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _draw_lines(image: Image.Image, lines: Sequence[str], top: int, font: Any) -> None:
    draw = ImageDraw.Draw(image)
    step = _line_height(font)
    for i, line in enumerate(lines):
        try:
            text = _fit(draw, line, font, image.width - 8)
            draw.text((4, top + i * step), text, fill=_INK, font=font)
        except UnicodeEncodeError:  # the bitmap font is Latin-1 only
            text = line.encode("ascii", "backslashreplace").decode("ascii")
            draw.text((4, top + i * step), _fit(draw, text, font, image.width - 8), fill=_INK)


def _line_height(font: Any) -> int:
    left, top, right, bottom = font.getbbox("Hgjy")
    return int(bottom - min(top, 0)) + 4


def captioned(picture: np.ndarray, lines: Sequence[str], font_size: int) -> Image.Image:
    """``picture`` (RGB ``uint8``) above a white strip holding ``lines``."""
    font = _font(font_size)
    strip = _line_height(font) * len(lines) + 6
    h, w = picture.shape[:2]
    canvas = Image.new("RGB", (w, h + strip), _BACKGROUND)
    canvas.paste(Image.fromarray(picture), (0, 0))
    _draw_lines(canvas, lines, h + 3, font)
    return canvas


def _font_size(width: int) -> int:
    return max(10, min(20, width // 18))


def _resized(picture: np.ndarray, side: int) -> np.ndarray:
    """A square picture at ``side`` pixels: averaged down, or enlarged in visible blocks."""
    if picture.shape[0] == side:
        return picture
    smaller = side < picture.shape[0]
    method = cv2.INTER_AREA if smaller else cv2.INTER_NEAREST
    return cv2.resize(picture, (side, side), interpolation=method)


def panel(explanation: Explanation, min_side: int = 192) -> Image.Image:
    """The crop beside its heat map (small crops enlarged to ``min_side``), captioned: one
    image's PNG."""
    side = max(min_side, explanation.crop.shape[0])
    crop, overlay = explanation.crop, explanation.overlay()
    pair = np.concatenate([_resized(crop, side), _resized(overlay, side)], axis=1)
    return captioned(pair, explanation.caption_lines, _font_size(side))


def contact_sheet(
    explanations: Sequence[Explanation], columns: int | None = None, tile: int = 224
) -> Image.Image:
    """Every heat map in a grid (``tile`` pixels a side), each with its caption.

    Raises:
        ValueError: nothing to show.
    """
    if not explanations:
        raise ValueError("no explanation to put on a contact sheet")
    columns = columns or min(8, math.ceil(math.sqrt(len(explanations))))
    lines = max(len(e.caption_lines) for e in explanations)
    tiles = []
    for e in explanations:
        text = e.caption_lines + [""] * (lines - len(e.caption_lines))
        tiles.append(captioned(_resized(e.overlay(), tile), text, _font_size(tile)))
    width = max(t.width for t in tiles)
    height = max(t.height for t in tiles)
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (columns * width, rows * height), _BACKGROUND)
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % columns) * width, (i // columns) * height))
    return sheet


# ------------------------------------------------------------------------------- writing
def overlay_names(explanations: Sequence[Explanation]) -> list[str]:
    """``<position + 1>-<file name: letters, digits and ._- kept>.png`` for each explanation:
    unique, the same for an image whatever else could be read, and safe in any file system
    and URL."""
    digits = max(3, len(str(max((e.position + 1 for e in explanations), default=0))))
    names = []
    for e in explanations:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(display_path(e.image)).stem)[:60]
        names.append(f"{e.position + 1:0{digits}d}-{stem or 'image'}.png")
    if len(set(names)) != len(names):
        raise ValueError("two explanations have the same position")
    return names


def summary_document(
    explanations: Sequence[Explanation],
    files: Sequence[str],
    errors: Sequence[tuple[Path, str]],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """``explanations.json``: ``meta`` (model, method, tta), one entry per image, errors."""
    return {
        **meta,
        "target_layer": explanations[0].target_layer if explanations else TARGET_LAYER,
        "contact_sheet": CONTACT_SHEET,
        "images": [
            {
                "image": display_path(e.image),
                "file": name,
                "class_index": e.class_index,
                "class_name": e.class_name,
                "probability": e.probability,
                "top1_index": e.top1_index,
                "top1_name": e.top1_name,
                "top1_probability": e.top1_probability,
                "caption": e.caption,
            }
            for e, name in zip(explanations, files)
        ],
        "errors": [{"image": display_path(p), "error": display_path(m)} for p, m in errors],
    }


def write_explanations(
    explanations: Sequence[Explanation],
    out: str | os.PathLike,
    force: bool = False,
    errors: Sequence[tuple[Path, str]] = (),
    meta: dict[str, Any] | None = None,
) -> ExplainOutputs:
    """Write the PNGs, the contact sheet and ``explanations.json`` into ``out``, whole or not
    at all.

    Args:
        explanations: from :func:`~fgvc.deploy.explain.explain_images`.
        out: the output folder.
        force: write into a non-empty ``out``, replacing only files of these names.
        errors: the unreadable images, listed in ``explanations.json``.
        meta: more entries for ``explanations.json`` (model, method, tta).

    Raises:
        UsageError: ``out`` is a file, non-empty without ``force``, or not writable.
        ValueError: nothing to write.
    """
    if not explanations:
        raise ValueError("no explanation to write")
    names = overlay_names(explanations)
    out = Path(out).expanduser().absolute()
    with staged_folder(out, force, [*names, CONTACT_SHEET, SUMMARY]) as staging:
        images = [*((panel(e), n) for e, n in zip(explanations, names))]
        images.append((contact_sheet(explanations), CONTACT_SHEET))
        for image, name in images:
            buffer = io.BytesIO()  # encoded here: Pillow reports a failed write without a cause
            image.save(buffer, format="PNG")
            _write(staging / name, buffer.getvalue(), out / name)
        document = summary_document(explanations, names, errors, meta or {})
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        _write(staging / SUMMARY, text.encode("utf-8"), out / SUMMARY)
    return ExplainOutputs(
        out,
        [out / n for n in names],
        out / CONTACT_SHEET,
        out / SUMMARY,
        list(explanations),
        list(errors),
    )


def _write(path: Path, data: bytes, shown: Path) -> None:
    """Write ``data``; an OS error names ``shown``, the file the user asked for."""
    try:
        path.write_bytes(data)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(shown)) from err


def explain_bundle(
    bundle: str | os.PathLike | Explainable,
    images: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    method: str = "gradcam",
    target: int | str | Sequence[int | str | None] | None = None,
    force: bool = False,
    device: str = "auto",
) -> ExplainOutputs:
    """Heat maps of ``images`` from an export bundle, written into ``out``: what ``fit`` ends
    with (e.g. ``<run>/explain``; log ``outputs.contact_sheet`` and each of
    ``outputs.overlays`` with ``outputs.explanations[i].caption`` to W&B).

    Args:
        bundle: an export folder (or a loaded :class:`~fgvc.deploy.bundle.Bundle`).
        images: image files (e.g. fixed validation images and the most-confused ones).
        out: the output folder (must be empty or missing unless ``force``).
        method, target: see :func:`~fgvc.deploy.explain.explain_images`.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.

    Unreadable images are left out (``outputs.errors``).

    Raises:
        UsageError: a bad bundle, method, class or output folder.
        FgvcError: none of the images could be read.
    """
    from fgvc.deploy.bundle import load
    from fgvc.deploy.predict import _device

    model = load(bundle) if isinstance(bundle, (str, os.PathLike)) else bundle
    model.net.to(_device(device))
    source = getattr(model, "source", bundle)
    explanations, errors = explain_images(model, images, method, target, progress=False)
    if not explanations:
        raise FgvcError(f"none of the {len(images)} images could be read; nothing written")
    meta = {"model": display_path(source), "method": method, "tta": model.preprocessing.tta}
    return write_explanations(explanations, out, force, errors, meta)
