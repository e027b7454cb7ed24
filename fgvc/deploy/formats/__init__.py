"""Export formats: one :class:`ExportFormat` record each, in one table, :data:`FORMATS`, that
``fgvc export`` (writing and verifying), ``fgvc predict`` (``--backend``) and the CLI choices
loop over. A new format is a module here with its record, a line in :data:`FORMATS`, and
its round-trip test (``tests/test_deploy_formats.py``).

Each record says its file, runtime, tolerance and whether it is written by default; the
README's format table (checked against this one by the tests) says what each is for.
"""

from __future__ import annotations

from collections.abc import Iterable

from fgvc.deploy.bundle import CONFIG_FILE
from fgvc.deploy.formats import onnx_fp32, onnx_int8, pt2, torchscript, weights
from fgvc.deploy.formats.base import EXPORT_BATCH, ExportFormat, LogitsFn, example_input
from fgvc.errors import UsageError

#: Every format, in the order they are exported (``onnx`` before ``onnx-int8``, which
#: quantizes it).
FORMATS: tuple[ExportFormat, ...] = (
    weights.FORMAT,
    onnx_fp32.FORMAT,
    pt2.FORMAT,
    onnx_int8.FORMAT,
    torchscript.FORMAT,
)
WEIGHTS = weights.FORMAT
NAMES: tuple[str, ...] = tuple(f.name for f in FORMATS)
DEFAULT_NAMES: tuple[str, ...] = tuple(f.name for f in FORMATS if f.default)
#: Every file a bundle may hold; ``--force`` replaces these and keeps anything else.
BUNDLE_FILES: tuple[str, ...] = (CONFIG_FILE, *(f.file for f in FORMATS))

__all__ = [
    "BUNDLE_FILES",
    "DEFAULT_NAMES",
    "EXPORT_BATCH",
    "FORMATS",
    "NAMES",
    "WEIGHTS",
    "ExportFormat",
    "LogitsFn",
    "by_backend",
    "by_name",
    "example_input",
    "selected",
]


def by_name(name: str) -> ExportFormat:
    """The format called ``name``.

    Raises:
        UsageError: no such format (the message lists the known ones).
    """
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise UsageError(f"unknown export format {name!r}; known formats: {', '.join(NAMES)}")


def by_backend(backend: str) -> ExportFormat:
    """The format that ``fgvc predict --backend`` calls ``backend`` (``torch``: the weights)."""
    for fmt in FORMATS:
        if fmt.backend == backend:
            return fmt
    known = ", ".join(f.backend for f in FORMATS)
    raise UsageError(f"unknown backend {backend!r}; choose auto or one of {known}")


def selected(names: Iterable[str]) -> list[ExportFormat]:
    """The formats called ``names`` plus the weights (always written), in table order.

    Raises:
        UsageError: an unknown name (one line, listing the known ones).
    """
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise UsageError(
            f"unknown export format{plural} {', '.join(map(repr, unknown))}; "
            f"known formats: {', '.join(NAMES)}"
        )
    wanted = set(names) | {WEIGHTS.name}
    return [f for f in FORMATS if f.name in wanted]
