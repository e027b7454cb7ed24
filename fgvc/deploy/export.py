"""Export a checkpoint of ``fgvc fit`` as a verified bundle (see :mod:`fgvc.deploy.bundle`).

The weights are always written (safetensors); ONNX and TorchScript on request, each verified
against eager PyTorch (:mod:`fgvc.deploy.verify`) before anything is published
(:mod:`fgvc.deploy.publish`): a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from fgvc.deploy.bundle import (
    BUNDLE_FILES,
    CONFIG_FILE,
    ONNX_FILE,
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
    describe,
    save_weights,
)
from fgvc.deploy.exporters import export_onnx, export_torchscript
from fgvc.deploy.publish import check_destination, staged_folder
from fgvc.deploy.verify import (
    TOLERANCE,
    reference_logits,
    verification_images,
    verify_onnx,
    verify_torchscript,
)
from fgvc.errors import UsageError
from fgvc.runs import read_fit_checkpoint

logger = logging.getLogger(__name__)

FORMATS = ("safetensors", "onnx", "torchscript")
DEFAULT_FORMATS = ("safetensors", "onnx")


def export_checkpoint(
    ckpt_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = DEFAULT_FORMATS,
    force: bool = False,
    image_size: int | None = None,
    preset: str | None = None,
    verify_files: Sequence[str | os.PathLike] | None = None,
    verify_count: int = 4,
    tolerance: float = TOLERANCE,
) -> Path:
    """Export a checkpoint of ``fgvc fit`` as a bundle in ``out_dir``.

    Args:
        ckpt_path: the ``.ckpt`` file (see :func:`fgvc.runs.resolve_checkpoint` for ``best``).
        out_dir: the bundle folder; it must not exist or be empty unless ``force``.
        formats: any of ``"safetensors"`` (always written), ``"onnx"``, ``"torchscript"``.
        force: replace the bundle files of a non-empty ``out_dir`` (other files are kept).
        image_size, preset: override the preprocessing recorded in the checkpoint (needed
            when the checkpoint's DataModule did not record one).
        verify_files: images (files / folders) to verify ONNX / TorchScript on; default
            ``verify_count`` synthetic images.
        verify_count: synthetic verification images (the export itself traces a batch of 2).
        tolerance: largest accepted |logit difference| (at most :data:`TOLERANCE`).

    Returns:
        ``out_dir`` as a Path, holding ``model.json``, ``model.safetensors`` and the formats.

    Raises:
        UsageError: unknown format, bad override, or ``out_dir`` is in the way.
        CheckpointError: the checkpoint cannot be read or does not fit.
        ExportError: an exporter failed or an exported model disagrees with PyTorch; nothing
            is written then.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UsageError(f"unknown format(s) {', '.join(unknown)}; choose from {FORMATS}")
    if not 0 <= tolerance <= TOLERANCE:
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

    # model.json goes in last: a reader never sees a new description beside old weights
    with staged_folder(out, force, BUNDLE_FILES, last=CONFIG_FILE) as staging:
        save_weights(net, staging / WEIGHTS_FILE)
        files = {"weights": WEIGHTS_FILE}
        if "onnx" in formats or "torchscript" in formats:
            images, source = verification_images(prep, verify_count, verify_files)
            reference = reference_logits(net, images)
        if "onnx" in formats:
            info = export_onnx(net, staging / ONNX_FILE, prep.image_size)
            verified = verify_onnx(reference, staging / ONNX_FILE, images, tolerance)
            config["onnx"] = {"file": ONNX_FILE, **info, "verify": {"images": source, **verified}}
            files["onnx"] = ONNX_FILE
            logger.info(
                "ONNX (%s) matches PyTorch on %s: max |logit difference| %.2e, top-1 identical",
                info["exporter"],
                source,
                verified["max_abs_logit_diff"],
            )
        if "torchscript" in formats:
            export_torchscript(net, staging / TORCHSCRIPT_FILE, prep.image_size)
            verified = verify_torchscript(reference, staging / TORCHSCRIPT_FILE, images, tolerance)
            config["torchscript"] = {
                "file": TORCHSCRIPT_FILE,
                "verify": {"images": source, **verified},
            }
            files["torchscript"] = TORCHSCRIPT_FILE
        config["files"] = files
        config["export_seconds"] = round(time.perf_counter() - started, 1)
        (staging / CONFIG_FILE).write_text(
            json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    return out
