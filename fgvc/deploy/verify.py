"""Verifying an exported model against eager PyTorch before it is published.

The exported file and the eager network run the same images at two batch sizes other than
the export one; top-1 must agree on every image and the largest logit difference must be at
most :data:`TOLERANCE`, or :class:`~fgvc.errors.ExportError` is raised.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fgvc.data.files import collect_images
from fgvc.data.preprocessing import EvalPreprocessing
from fgvc.data.transforms import normalize_images
from fgvc.deploy.exporters import load_torchscript, onnx_logits, onnx_session
from fgvc.errors import ExportError, UsageError, one_line

#: Largest |logit difference| accepted between an exported model and eager PyTorch.
TOLERANCE = 1e-3


def verification_images(
    preprocessing: EvalPreprocessing,
    count: int = 4,
    files: Sequence[str | os.PathLike] | None = None,
) -> tuple[torch.Tensor, str]:
    """Normalized (N, 3, S, S) images to verify an export on, and where they came from.

    ``files`` (image files or folders): decoded and preprocessed as ``fgvc predict`` does.
    Otherwise ``count`` deterministic synthetic images: smooth random colour fields with
    fine noise, in the pixel range and statistics of photos after normalization.

    Raises:
        UsageError: ``files`` names no image, or a path that does not exist.
    """
    if files:
        paths, missing = collect_images(files)
        if missing or not paths:
            bad = "; ".join(message for _, message in missing) or "no image files"
            raise UsageError(f"--verify-images: {bad}")
        batch = preprocessing.batch([preprocessing.load(p) for p in paths])
        return batch, f"{len(paths)} image files"
    import cv2

    size = preprocessing.image_size
    rng = np.random.default_rng(0)
    pixels = []
    for _ in range(count):
        coarse = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
        smooth = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
        noise = rng.normal(0.0, 12.0, size=smooth.shape)
        pixels.append(np.clip(smooth + noise, 0, 255).astype(np.uint8))
    batch = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)
    mean, std = preprocessing.mean, preprocessing.std
    return normalize_images(batch, mean, std).contiguous(), f"{count} synthetic images"


def reference_logits(net: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Eager PyTorch logits (float64) that exported models are compared with."""
    with torch.inference_mode():
        return net(images).double().numpy()


def compare_logits(
    reference: np.ndarray, candidate: np.ndarray, what: str, tolerance: float = TOLERANCE
) -> float:
    """Max |logit difference|; raises ExportError unless top-1 agrees and it is <= tolerance."""
    if candidate.shape != reference.shape:
        raise ExportError(f"{what}: output shape {candidate.shape}, expected {reference.shape}")
    diff = float(np.abs(candidate.astype(np.float64) - reference).max())
    disagree = int((candidate.argmax(1) != reference.argmax(1)).sum())
    if disagree or not diff <= tolerance:
        raise ExportError(
            f"{what} disagrees with PyTorch: max |logit difference| {diff:.3g} (tolerance "
            f"{tolerance:g}), top-1 differs on {disagree} of {len(reference)} images"
        )
    return diff


def verify_runner(
    reference: np.ndarray,
    run: Callable[[torch.Tensor], np.ndarray],
    images: torch.Tensor,
    what: str,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Compare ``run(batch)`` with the eager ``reference`` on the whole batch and on batch 1.

    Returns:
        What ``model.json`` records: batch sizes, the max |logit difference|, the tolerance.
    """
    batches = [images, images[:1]] if len(images) > 1 else [images]
    worst = 0.0
    for batch in batches:
        try:
            out = np.asarray(run(batch))
        except Exception as err:  # the runtime's own error types
            raise ExportError(f"{what} failed to run ({one_line(err)})") from err
        worst = max(worst, compare_logits(reference[: len(batch)], out, what, tolerance))
    return {
        "batch_sizes": [len(b) for b in batches],
        "max_abs_logit_diff": worst,
        "top1_identical": True,
        "tolerance": tolerance,
    }


def verify_onnx(
    reference: np.ndarray,
    path: str | os.PathLike,
    images: torch.Tensor,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """ONNX Runtime on ``images`` against the eager logits ``reference``."""
    try:
        session = onnx_session(path)
    except Exception as err:  # ONNX Runtime's own error types
        raise ExportError(f"ONNX Runtime cannot load {Path(path).name} ({one_line(err)})") from err
    return verify_runner(
        reference,
        lambda batch: onnx_logits(session, batch.numpy()),
        images,
        f"ONNX model {Path(path).name}",
        tolerance,
    )


def verify_torchscript(
    reference: np.ndarray,
    path: str | os.PathLike,
    images: torch.Tensor,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """The saved TorchScript module against the eager logits ``reference``."""
    try:
        scripted = load_torchscript(path)
    except Exception as err:
        raise ExportError(f"cannot load {Path(path).name} ({one_line(err)})") from err

    def run(batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return scripted(batch).numpy()

    return verify_runner(reference, run, images, f"TorchScript model {Path(path).name}", tolerance)
