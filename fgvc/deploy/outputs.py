"""Predictions as text: a table for people, CSV for spreadsheets, JSON for programs.

Whatever a file or class name holds, the output stays well-formed and harmless: names that
are not valid UTF-8 (possible on Linux) are written with ``\\xNN`` escapes, control characters
are escaped, and in the table and CSV a cell starting with ``=``, ``+``, ``-`` or ``@`` gets a
leading ``'`` so that spreadsheets do not run it as a formula.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fgvc.data.files import display_path
from fgvc.deploy.predict import Prediction

OUTPUT_FORMATS = ("table", "csv", "json")
CSV_COLUMNS = ("image", "rank", "class_index", "class_name", "probability")
_FORMULA_START = ("=", "+", "-", "@")


def escape_controls(text: str) -> str:
    """``text`` with control characters (newlines, tabs, escapes, ...) written as escapes."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii") if _is_control(ch) else ch for ch in text
    )


def _is_control(ch: str) -> bool:
    # C0/C1 controls and the Unicode line / paragraph separators: they break rows and lines
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp")


def safe_cell(text: str) -> str:
    """A table / CSV cell: controls escaped, a leading formula character neutralized."""
    text = escape_controls(text)
    return "'" + text if text.startswith(_FORMULA_START) else text


def format_table(predictions: Sequence[Prediction]) -> str:
    """Human-readable: the image, then ``rank  probability  class`` lines."""
    lines = []
    for pred in predictions:
        lines.append(safe_cell(display_path(pred.image)))
        for rank, (_, name, prob) in enumerate(pred.top, 1):
            lines.append(f"  {rank:>2}  {prob:7.4f}  {safe_cell(name)}")
    return "\n".join(lines) + ("\n" if lines else "")


def format_csv(predictions: Sequence[Prediction]) -> str:
    """One row per image and rank (RFC 4180 quoting; names keep commas, quotes, unicode)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for pred in predictions:
        image = safe_cell(display_path(pred.image))
        for rank, (index, name, prob) in enumerate(pred.top, 1):
            writer.writerow([image, rank, index, safe_cell(name), repr(prob)])
    return buffer.getvalue()


def format_json(
    predictions: Sequence[Prediction],
    errors: Sequence[tuple[Path, str]],
    meta: Mapping[str, Any],
) -> str:
    """The predictions, the unreadable images and ``meta`` (model, backend, tta, topk)."""
    document = {
        **meta,
        "predictions": [
            {
                "image": display_path(pred.image),
                "top": [
                    {"rank": rank, "class_index": index, "class_name": name, "probability": prob}
                    for rank, (index, name, prob) in enumerate(pred.top, 1)
                ],
            }
            for pred in predictions
        ],
        "errors": [
            {"image": display_path(path), "error": display_path(message)}
            for path, message in errors
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def format_predictions(
    kind: str,
    predictions: Sequence[Prediction],
    errors: Sequence[tuple[Path, str]],
    meta: Mapping[str, Any],
) -> str:
    """``kind`` is one of :data:`OUTPUT_FORMATS`."""
    if kind == "json":
        return format_json(predictions, errors, meta)
    if kind == "csv":
        return format_csv(predictions)
    return format_table(predictions)
