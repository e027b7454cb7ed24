"""Export a checkpoint of ``fgvc fit`` as a verified bundle (see :mod:`fgvc.deploy.bundle`).

Each format asked for (:data:`fgvc.deploy.formats.FORMATS`; the safetensors weights always)
is written and then loaded back and verified against eager PyTorch
(:mod:`fgvc.deploy.verify`) before anything is published (:mod:`fgvc.deploy.publish`): a
failed export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fgvc.deploy.bundle import CONFIG_FILE, describe
from fgvc.deploy.formats import (
    BUNDLE_FILES,
    DEFAULT_NAMES,
    NAMES,
    WEIGHTS,
    ExportFormat,
    example_input,
    selected,
)
from fgvc.deploy.publish import check_destination, staged_folder
from fgvc.deploy.verify import TOLERANCE, reference_logits, verification_images, verify_format
from fgvc.errors import ExportError, UsageError, one_line
from fgvc.runs import read_fit_checkpoint

logger = logging.getLogger(__name__)

#: Every format name, and those written when none are named (the table's ``default``).
FORMATS = NAMES
DEFAULT_FORMATS = DEFAULT_NAMES


def _write_config(path: Path, config: dict[str, Any]) -> None:
    # inside the staging folder, which is published (renamed into place) as a whole
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _export_one(fmt: ExportFormat, net: Any, example: Any, path: Path) -> dict[str, Any]:
    try:
        return fmt.export(net, example, path)
    except ExportError:
        raise
    except Exception as err:  # the exporter's own error types
        raise ExportError(f"{fmt.name} export failed ({one_line(err)})") from err


@contextlib.contextmanager
def _deprecation_said_once(fmt: ExportFormat) -> Iterator[None]:
    """A deprecated format: one line of ours instead of its library's warning per call."""
    with warnings.catch_warnings():
        if fmt.deprecated:
            logger.warning(
                "warning: %s is deprecated; its successor is %s", fmt.name, fmt.deprecated
            )
            warnings.filterwarnings("ignore", message=".* is deprecated", category=FutureWarning)
        yield


def export_checkpoint(
    ckpt_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = DEFAULT_FORMATS,
    force: bool = False,
    image_size: int | None = None,
    preset: str | None = None,
    verify_files: Sequence[str | os.PathLike] | None = None,
    verify_count: int = 4,
    tolerance: float | None = None,
) -> Path:
    """Export a checkpoint of ``fgvc fit`` as a bundle in ``out_dir``.

    Args:
        ckpt_path: the ``.ckpt`` file (see :func:`fgvc.runs.resolve_checkpoint` for ``best``).
        out_dir: the bundle folder; it must not exist or be empty unless ``force``.
        formats: names from :data:`FORMATS` (``"safetensors"`` is always written).
        force: replace the bundle files of a non-empty ``out_dir`` (other files are kept).
        image_size, preset: override the preprocessing recorded in the checkpoint (needed
            when the checkpoint's DataModule did not record one).
        verify_files: images (files / folders) to verify the formats on; default
            ``verify_count`` synthetic images.
        verify_count: synthetic verification images (the export itself traces a batch of 2).
        tolerance: a stricter |logit difference| bound than the formats' own (at most
            :data:`TOLERANCE`); None: each format's own.

    Returns:
        ``out_dir`` as a Path, holding ``model.json`` and the formats' files.

    Raises:
        UsageError: unknown format, bad override, or ``out_dir`` is in the way.
        CheckpointError: the checkpoint cannot be read or does not fit.
        ExportError: an exporter failed or an exported model disagrees with PyTorch; nothing
            is written then.
    """
    chosen = selected(formats)
    if tolerance is not None and not 0 <= tolerance <= TOLERANCE:
        raise UsageError(f"tolerance must be in [0, {TOLERANCE:g}], got {tolerance}")
    if verify_count < 1:
        raise UsageError(f"verify_count must be >= 1, got {verify_count}")
    out = Path(out_dir).expanduser().absolute()
    check_destination(out, force)
    started = time.perf_counter()
    ckpt = read_fit_checkpoint(ckpt_path)
    prep = ckpt.eval_preprocessing(image_size, preset)
    net = ckpt.build_net()
    config = describe(ckpt.spec, ckpt.class_names, prep, ckpt)
    images, source = verification_images(prep, verify_count, verify_files)
    reference = reference_logits(net, images)
    example = example_input(prep.image_size)

    # model.json goes in last: a reader never sees a new description beside old weights
    with staged_folder(out, force, BUNDLE_FILES, last=CONFIG_FILE) as staging:
        files: dict[str, str] = {}
        config["files"] = files
        for fmt in chosen:
            path = staging / fmt.file
            with _deprecation_said_once(fmt):
                info = _export_one(fmt, net, example, path)
                files[fmt.key] = fmt.file
                if fmt is WEIGHTS:  # its loader rebuilds the network from model.json
                    _write_config(staging / CONFIG_FILE, config)
                verified = verify_format(fmt, path, reference, images, tolerance)
            config[fmt.key] = {"file": fmt.file, **info, "verify": {"images": source, **verified}}
            logger.info(
                "%s matches PyTorch on %s: max |logit difference| %.2e, top-1 agrees on %d%%",
                fmt.name,
                source,
                verified["max_abs_logit_diff"],
                round(100 * verified["top1_agreement"]),
            )
        config["export_seconds"] = round(time.perf_counter() - started, 1)
        _write_config(staging / CONFIG_FILE, config)
    return out
