"""Verifying an exported model against eager PyTorch before it is published.

The exported file, loaded by its format's own loader (as ``fgvc predict`` loads it), and the
eager network run the same images at two batch sizes other than the export one; top-1 must
agree (on every image, or the format's ``min_top1`` share) and the largest logit difference
must be within the format's tolerance, or :class:`~fgvc.errors.ExportError` is raised.
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
from fgvc.deploy.formats import ExportFormat
from fgvc.errors import ExportError, UsageError, one_line

#: Largest |logit difference| any format may be allowed (ONNX's; others are stricter).
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
    reference: np.ndarray,
    candidate: np.ndarray,
    what: str,
    tolerance: float | None = TOLERANCE,
    min_top1: float = 1.0,
) -> tuple[float, int]:
    """Max |logit difference| and the number of images whose top-1 agrees.

    Raises:
        ExportError: the shapes differ, the difference exceeds ``tolerance`` (None: no
            bound), or top-1 agrees on fewer than ``min_top1`` of the images.
    """
    if candidate.shape != reference.shape:
        raise ExportError(f"{what}: output shape {candidate.shape}, expected {reference.shape}")
    diff = float(np.abs(candidate.astype(np.float64) - reference).max())
    agree = int((candidate.argmax(1) == reference.argmax(1)).sum())
    disagree = len(reference) - agree
    too_far = tolerance is not None and not diff <= tolerance
    if too_far or agree < min_top1 * len(reference) or not np.isfinite(diff):
        bound = "no bound" if tolerance is None else f"tolerance {tolerance:g}"
        least = "" if min_top1 >= 1 else f" (at most {1 - min_top1:.0%} may)"
        raise ExportError(
            f"{what} disagrees with PyTorch: max |logit difference| {diff:.3g} ({bound}), "
            f"top-1 differs on {disagree} of {len(reference)} images{least}"
        )
    return diff, agree


def verify_runner(
    reference: np.ndarray,
    run: Callable[[torch.Tensor], np.ndarray],
    images: torch.Tensor,
    what: str,
    tolerance: float | None = TOLERANCE,
    min_top1: float = 1.0,
) -> dict[str, Any]:
    """Compare ``run(batch)`` with the eager ``reference`` on the whole batch and on batch 1
    (both other than the export's batch size, which a traced model could have fixed).

    Returns:
        What ``model.json`` records: batch sizes, the max |logit difference|, the tolerance,
        top-1 agreement.
    """
    batches = [images, images[:1]] if len(images) > 1 else [images]
    outputs = []
    for batch in batches:
        try:
            outputs.append(np.asarray(run(batch)))
        except Exception as err:  # the runtime's own error types
            raise ExportError(f"{what} failed to run ({one_line(err)})") from err
    # judged over all compared images at once: min_top1 < 1 allows a few changed decisions
    reference = np.concatenate([reference[: len(b)] for b in batches])
    diff, agree = compare_logits(reference, np.concatenate(outputs), what, tolerance, min_top1)
    return {
        "batch_sizes": [len(b) for b in batches],
        "max_abs_logit_diff": diff,
        "top1_agreement": agree / len(reference),
        "top1_identical": agree == len(reference),
        "tolerance": tolerance,
        "min_top1_agreement": min_top1,
    }


def verify_format(
    fmt: ExportFormat,
    path: str | os.PathLike,
    reference: np.ndarray,
    images: torch.Tensor,
    tolerance: float | None = None,
) -> dict[str, Any]:
    """The file ``path`` of format ``fmt``, loaded as ``fgvc predict`` would, against the
    eager logits ``reference`` of ``images``, within the format's own tolerance (or
    ``tolerance`` where that is stricter).

    Raises:
        ExportError: it cannot be loaded or run, or it disagrees.
    """
    path = Path(path)
    what = f"{fmt.name} model {path.name}"
    try:
        run = fmt.load(path, "cpu")
    except Exception as err:  # the runtime's own error types
        raise ExportError(f"{what}: {fmt.runtime} cannot load it ({one_line(err)})") from err
    limit = fmt.tolerance
    if tolerance is not None and limit is not None:
        limit = min(limit, tolerance)
    return verify_runner(
        reference, lambda batch: run(batch).numpy(), images, what, limit, fmt.min_top1
    )
