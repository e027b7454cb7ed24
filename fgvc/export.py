"""Export a trained checkpoint as a self-describing bundle, and load it back.

``fgvc export --ckpt <path|run folder|best> --out DIR [--formats safetensors onnx torchscript]``
writes into ``DIR``:

* ``model.safetensors``: the network's weights only (``backbone.*``, ``head.*``,
  ``classifier.*``); always written.
* ``model.json``: everything needed to rebuild and feed the network: arch, representation,
  reduce_dim, iterations, last_stride, num_classes, class names, preprocessing (image size,
  resize policy, mean, std, flip TTA), the checkpoint's monitored metric, epoch and step, and
  the fgvc / torch versions.
* ``model.onnx`` (default on): input ``images`` (N, 3, S, S) float32, output ``logits``
  (N, num_classes), dynamic batch. torch's ``torch.export``-based exporter is tried first; if
  it fails, the legacy TorchScript-based one (the iSQRT-COV layer turns into plain tensor code
  under any tracer, its triangle indices a buffer). Either way the file
  is checked before the bundle is published: ONNX Runtime and eager PyTorch run the same
  images (synthetic, or ``--check-images``) at two batch sizes other than the export one;
  top-1 must agree on every image and the largest logit difference must be at most
  :data:`ONNX_TOLERANCE`, or the export fails.
* ``model.torchscript.pt`` (``--formats ... torchscript``): a traced module, checked the same
  way.

The bundle is assembled in a temporary folder next to ``DIR`` and renamed into place only when
everything passed, so a failed export leaves nothing behind. An existing non-empty ``DIR`` is
never touched without ``--force``; with it, the bundle's files are replaced and any other file
in ``DIR`` is kept.

``--ckpt best`` (the default) takes the best checkpoint of the most recent run under ``runs/``
(or of ``--run DIR``); a run folder works in place of ``best`` too. Checkpoints are read with
``torch.load(weights_only=True)``: tensors and containers only, never code.

:func:`load` rebuilds the network from ``model.json`` + ``model.safetensors`` (eval mode, class
names in ``.class_names``). :func:`export_checkpoint` is the library entry point, used by
``fgvc fit`` for its best checkpoint.

Exit codes of ``fgvc export``: 0 exported, 1 the export or its check failed, 2 usage errors
(bad arguments, no such checkpoint, an existing output folder without ``--force``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import fgvc
from fgvc.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESETS,
    build_transforms,
    normalize_images,
)
from fgvc.models import CheckpointError, FGVCNet, build_model, load_state_dict_checked
from fgvc.models.pretrained import extract_state_dict, read_checkpoint

logger = logging.getLogger(__name__)

CONFIG_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.torchscript.pt"
#: Every file a bundle may hold; ``--force`` replaces these and keeps anything else.
BUNDLE_FILES = (CONFIG_FILE, WEIGHTS_FILE, ONNX_FILE, TORCHSCRIPT_FILE)
FORMATS = ("safetensors", "onnx", "torchscript")
DEFAULT_FORMATS = ("safetensors", "onnx")
BUNDLE_FORMAT = "fgvc-export"
BUNDLE_VERSION = 1

#: Largest |logit difference| accepted between an exported model and eager PyTorch.
ONNX_TOLERANCE = 1e-3
ONNX_INPUT = "images"
ONNX_OUTPUT = "logits"
#: Batch size of the example input the exporters trace with (the checks use others).
EXPORT_BATCH = 2
LEGACY_OPSET = 17
DEFAULT_IMAGE_SIZE = 448
DEFAULT_PRESET = "generic"
DEFAULT_RUNS_ROOT = "runs"
MONITOR = "val/top1"


class ExportError(RuntimeError):
    """An export failed: an exporter raised, or the exported model disagrees with PyTorch."""


class UsageError(ValueError):
    """A request that cannot be carried out as given (reported with exit code 2)."""


# ----------------------------------------------------------------- checkpoint discovery
def _checkpoint_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.ckpt") if p.is_file())


def _checkpoint_dir(run: Path) -> Path:
    """``run/checkpoints`` when it exists (a run folder), else ``run`` itself."""
    sub = run / "checkpoints"
    return sub if sub.is_dir() else run


def find_latest_run(runs_root: str | os.PathLike = DEFAULT_RUNS_ROOT) -> Path:
    """The run folder (``<root>/<name>/version_<n>``) whose newest checkpoint is the newest.

    Raises:
        UsageError: no checkpoint anywhere under ``runs_root``.
    """
    root = Path(runs_root).expanduser()
    newest: tuple[float, Path] | None = None
    if root.is_dir():
        for ckpt in root.rglob("*.ckpt"):
            if not ckpt.is_file():
                continue
            run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
            mtime = ckpt.stat().st_mtime
            if newest is None or mtime > newest[0]:
                newest = (mtime, run)
    if newest is None:
        raise UsageError(
            f"no checkpoint found under {root}/; train first (fgvc fit) or pass "
            f"--ckpt PATH / --run DIR"
        )
    return newest[1]


def _model_checkpoint_state(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ModelCheckpoint callback state saved in a Lightning checkpoint (``val/top1`` first)."""
    callbacks = checkpoint.get("callbacks")
    if not isinstance(callbacks, Mapping):
        return None
    states = [
        s
        for k, s in callbacks.items()
        if isinstance(k, str) and k.startswith("ModelCheckpoint") and isinstance(s, Mapping)
    ]
    states.sort(key=lambda s: (s.get("monitor") != MONITOR, s.get("monitor") is None))
    return dict(states[0]) if states else None


def best_checkpoint_in_run(run: str | os.PathLike) -> Path:
    """The best checkpoint of a run folder (or of its ``checkpoints/`` folder).

    The newest checkpoint's ModelCheckpoint state names the best one (``last.ckpt`` is saved
    after it in the same epoch); if that does not resolve, a single ``best-*.ckpt`` is taken.

    Raises:
        UsageError: no checkpoint, or several candidates and nothing to choose between them.
    """
    run = Path(run).expanduser()
    folder = _checkpoint_dir(run)
    files = _checkpoint_files(folder)
    if not files:
        raise UsageError(f"no .ckpt file in {folder}")
    newest = max(files, key=lambda p: p.stat().st_mtime)
    try:
        state = _model_checkpoint_state(read_checkpoint(newest, mmap=True))
    except (CheckpointError, OSError, RuntimeError) as err:
        logger.warning("could not read %s to find the best checkpoint: %s", newest, err)
        state = None
    pointer = state.get("best_model_path") if state else None
    if pointer:
        # by name: the run folder may have moved since training
        candidate = folder / Path(str(pointer)).name
        if candidate.is_file():
            return candidate
    best = [p for p in files if p.name.startswith("best")]
    if len(best) == 1:
        return best[0]
    if not best and len(files) == 1:
        return files[0]
    listing = ", ".join(p.name for p in (best or files))
    raise UsageError(
        f"cannot tell the best checkpoint in {folder} ({listing}); pass --ckpt <file>.ckpt"
    )


def resolve_checkpoint(
    spec: str | os.PathLike = "best",
    run: str | os.PathLike | None = None,
    runs_root: str | os.PathLike = DEFAULT_RUNS_ROOT,
) -> Path:
    """A checkpoint file from ``spec``: a ``.ckpt`` path, a run folder, or ``"best"``.

    ``"best"``: the best checkpoint of ``run``, or of the most recent run under ``runs_root``.
    A folder without checkpoints of its own (``runs/``, ``runs/<name>``) means its most
    recent run.

    Raises:
        UsageError: nothing found (the message says where it looked).
    """
    if str(spec) == "best":
        folder = Path(run).expanduser() if run is not None else find_latest_run(runs_root)
        if not folder.is_dir():
            raise UsageError(f"run folder not found: {folder}")
        return best_checkpoint_in_run(folder)
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if not _checkpoint_files(_checkpoint_dir(path)):  # a folder of runs, like runs/
            return best_checkpoint_in_run(find_latest_run(path))
        return best_checkpoint_in_run(path)
    raise UsageError(f"checkpoint not found: {path} (pass a .ckpt file, a run folder or 'best')")


# ------------------------------------------------------------- checkpoint -> model + config
def _float(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else None
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return float(value)
    return None


def _datamodule_default_preset(class_path: Any) -> str:
    """The preset a DataModule uses when ``preset`` is None (fgvc's own DataModules only)."""
    if isinstance(class_path, str) and class_path.startswith("fgvc.data."):
        import importlib

        from fgvc.data.datamodule import FGVCDataModule

        module_name, _, name = class_path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), name, None)
        except ImportError:
            cls = None
        if isinstance(cls, type) and issubclass(cls, FGVCDataModule):
            return cls.default_preset
    return DEFAULT_PRESET


def resize_policy(preset: str, image_size: int) -> str:
    """Human-readable resize / crop of the eval pipeline of ``preset``, read off the
    pipeline :func:`~fgvc.data.transforms.build_transforms` builds."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    resize = build_transforms(preset, False, image_size, normalize=False).transforms[0]
    return resize.describe()


def preprocessing_config(
    datamodule_hparams: Mapping[str, Any] | None,
    tta: bool,
    image_size: int | None = None,
    preset: str | None = None,
) -> dict[str, Any]:
    """The ``preprocessing`` entry of ``model.json``.

    From the DataModule's saved hyperparameters (``image_size``, ``preset`` - None meaning the
    DataModule's own default -, ``antialias``, ``fast_decode``); ``image_size`` / ``preset``
    override them; 448 px and the ``generic`` preset when neither says (with a warning).
    """
    dm = dict(datamodule_hparams or {})
    source = "checkpoint datamodule hyperparameters" if dm else "defaults"
    size = image_size if image_size is not None else dm.get("image_size")
    chosen = preset if preset is not None else dm.get("preset")
    if chosen is None and dm:
        chosen = _datamodule_default_preset(dm.get("_class_path"))
    if size is None or chosen is None:
        logger.warning(
            "the checkpoint does not record its preprocessing; assuming %s px, preset %s "
            "(pass --image-size / --preset to say otherwise)",
            size or DEFAULT_IMAGE_SIZE,
            chosen or DEFAULT_PRESET,
        )
    size = int(size or DEFAULT_IMAGE_SIZE)
    chosen = str(chosen or DEFAULT_PRESET)
    if chosen not in PRESETS:
        raise UsageError(f"unknown preset {chosen!r}; choose one of {', '.join(PRESETS)}")
    if size < 8:
        raise UsageError(f"image size must be >= 8, got {size}")
    if image_size is not None or preset is not None:
        source += " with command-line overrides"
    antialias = bool(dm.get("antialias", False))
    fast_decode = bool(dm.get("fast_decode", True))  # FGVCDataModule's default
    return {
        "image_size": size,
        "preset": chosen,
        "resize": resize_policy(chosen, size),
        "interpolation": "bilinear, antialiased" if antialias else "bilinear (OpenCV)",
        "antialias": antialias,
        # evaluation decoded JPEGs at 1/2, 1/4 or 1/8 scale where the resize allowed it
        "fast_decode": fast_decode,
        "color": "RGB",
        "layout": "NCHW float32, (pixel / 255 - mean) / std",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "tta": bool(tta),
        "source": source,
    }


def model_from_checkpoint(
    path: str | os.PathLike,
    image_size: int | None = None,
    preset: str | None = None,
) -> tuple[FGVCNet, dict[str, Any]]:
    """Rebuild the network of a Lightning checkpoint (eval mode) and describe it.

    Returns:
        ``(network, config)``: ``config`` is ``model.json`` without its ``files`` / ``onnx``
        entries. The network also gets ``class_names`` and ``preprocessing`` attributes.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unsafe pickle, not an fgvc checkpoint, or weights that do not fit.
    """
    path = Path(path).expanduser()
    # mapped: only the model's tensors are read, not the optimizer state
    checkpoint = read_checkpoint(path, mmap=True)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, Mapping) else None
    if not isinstance(hparams, Mapping) or "arch" not in hparams:
        raise CheckpointError(
            f"{path}: no model hyperparameters; expected a checkpoint written by fgvc fit "
            f"(a Lightning checkpoint of FGVCClassifier)"
        )
    num_classes = int(hparams.get("num_classes") or 0)
    names = hparams.get("class_names")
    class_names = [str(n) for n in names] if names else [str(i) for i in range(num_classes)]
    try:
        model = _build(hparams, num_classes)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: its hyperparameters do not build a model: {err}") from err
    load_state_dict_checked(model, extract_state_dict(checkpoint, str(path)), str(path))
    model.eval()

    ckpt_state = _model_checkpoint_state(checkpoint) or {}
    epoch, step = checkpoint.get("epoch"), checkpoint.get("global_step")
    config: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "fgvc_version": fgvc.__version__,
        "torch_version": torch.__version__,
        "arch": model.arch,
        "representation": model.representation,
        "reduce_dim": getattr(model.head, "reduce_dim", None),
        "iterations": getattr(model.head, "iterations", None),
        "last_stride": model.backbone.last_stride,
        "num_classes": model.num_classes,
        "feature_dim": model.feature_dim,
        "class_names": class_names,
        "preprocessing": preprocessing_config(
            checkpoint.get("datamodule_hyper_parameters"),
            tta=bool(hparams.get("test_tta", False)),
            image_size=image_size,
            preset=preset,
        ),
        "checkpoint": {
            "file": path.name,
            "path": str(path.resolve()),
            "epoch": int(epoch) if isinstance(epoch, int) else None,
            "global_step": int(step) if isinstance(step, int) else None,
            "monitor": ckpt_state.get("monitor"),
            # the monitored value of these weights, and the run's best when it was saved
            "score": _float(ckpt_state.get("current_score")),
            "best_score": _float(ckpt_state.get("best_model_score")),
        },
    }
    _attach(model, config)
    return model, config


def _attach(model: FGVCNet, config: Mapping[str, Any]) -> None:
    model.class_names = list(config["class_names"])
    model.preprocessing = dict(config["preprocessing"])
    model.export_config = dict(config)


# -------------------------------------------------------------------------------- exports
def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """The state dict as safetensors (contiguous CPU tensors, fgvc version in the metadata)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt", "fgvc_version": fgvc.__version__})


def example_input(image_size: int, batch: int = EXPORT_BATCH) -> torch.Tensor:
    """A deterministic (batch, 3, S, S) input for tracing."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, image_size, image_size, generator=generator)


def _export_dynamo(model: nn.Module, path: Path, example: torch.Tensor) -> None:
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=True,
        input_names=[ONNX_INPUT],
        output_names=[ONNX_OUTPUT],
        dynamic_shapes=({0: batch},),
        external_data=False,
        verbose=False,
    )


def _export_legacy(model: FGVCNet, path: Path, example: torch.Tensor) -> None:
    # the ops layer turns into plain tensor code under tracers (no autograd.Function)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=False,
        input_names=[ONNX_INPUT],
        output_names=[ONNX_OUTPUT],
        dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
        opset_version=LEGACY_OPSET,
        do_constant_folding=True,
    )


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """The ONNX graph optimizer's INFO chatter off, whatever the root logger's level."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".strip()


def export_onnx(model: FGVCNet, path: str | os.PathLike, image_size: int) -> dict[str, Any]:
    """Write ``model`` as ONNX (dynamic batch): torch.export first, the legacy exporter next.

    Returns:
        ``{"exporter": ..., "opset": ...}``.

    Raises:
        ExportError: both exporters failed (both reasons in the message).
    """
    import onnx

    path = Path(path)
    model = model.eval()
    example = example_input(image_size)
    attempts = (
        ("torch.export (dynamo)", _export_dynamo),
        ("torchscript (legacy)", _export_legacy),
    )
    failures = []
    for name, exporter in attempts:
        try:
            with (
                torch.no_grad(),
                warnings.catch_warnings(),
                _quiet_loggers("onnx_ir", "onnxscript"),
            ):
                warnings.simplefilter("ignore")
                exporter(model, path, example)
            proto = onnx.load(str(path), load_external_data=False)
            opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
            return {"exporter": name, "opset": int(opset)}
        except Exception as err:  # any exporter failure: try the next one
            failures.append(f"{name}: {_first_line(err)}")
            logger.warning("ONNX export with %s failed (%s)", name, _first_line(err))
            for leftover in (path, path.with_name(path.name + ".data")):
                leftover.unlink(missing_ok=True)
    raise ExportError("ONNX export failed; " + "; ".join(failures))


def export_torchscript(model: FGVCNet, path: str | os.PathLike, image_size: int) -> None:
    """Trace ``model`` and save it as TorchScript."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), (example_input(image_size),))
        torch.jit.save(traced, str(path))


# -------------------------------------------------------------------------------- checks
def check_images(
    preprocessing: Mapping[str, Any],
    count: int = 4,
    files: Sequence[str | os.PathLike] | None = None,
) -> tuple[torch.Tensor, str]:
    """Normalized (N, 3, S, S) images for the export checks, and where they came from.

    ``preprocessing``: ``model.json``'s entry (S is its ``image_size``).
    ``files`` (image files or folders): decoded and preprocessed as ``fgvc predict`` does.
    Otherwise ``count`` deterministic synthetic images: smooth random colour fields with
    fine noise, in the pixel range and statistics of photos after normalization.
    """
    if files:
        from fgvc.predict import Preprocessor, collect_images

        paths, missing = collect_images(files)
        if missing or not paths:
            bad = ", ".join(str(p) for p, _ in missing) or "no image files"
            raise UsageError(f"--check-images: {bad}")
        prep = Preprocessor.from_config(preprocessing)
        return prep.batch([prep.load(p) for p in paths]), f"{len(paths)} image files"
    import cv2

    image_size = int(preprocessing["image_size"])

    rng = np.random.default_rng(0)
    pixels = []
    for _ in range(count):
        coarse = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
        smooth = cv2.resize(coarse, (image_size, image_size), interpolation=cv2.INTER_CUBIC)
        noise = rng.normal(0.0, 12.0, size=smooth.shape)
        pixels.append(np.clip(smooth + noise, 0, 255).astype(np.uint8))
    batch = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)
    return normalize_images(batch).contiguous(), f"{count} synthetic images"


def onnx_session(path: str | os.PathLike, device: str = "cpu", options: Any = None) -> Any:
    """An ONNX Runtime session on the ONNX file (parsed and optimized once): CPU, or with
    ``device="cuda"`` the CUDA provider first when this onnxruntime has it."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), options, providers=providers)


def onnx_session_logits(session: Any, images: np.ndarray) -> np.ndarray:
    """Logits of an :func:`onnx_session` on ``images``."""
    return session.run([ONNX_OUTPUT], {ONNX_INPUT: images})[0]


def compare_logits(
    reference: np.ndarray, candidate: np.ndarray, what: str, tolerance: float = ONNX_TOLERANCE
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


def reference_logits(model: FGVCNet, images: torch.Tensor) -> np.ndarray:
    """Eager PyTorch logits (float64) that the exported models are checked against."""
    with torch.inference_mode():
        return model(images).double().numpy()


def _check_runner(
    reference: np.ndarray,
    run: Any,
    images: torch.Tensor,
    what: str,
    tolerance: float,
) -> dict[str, Any]:
    """Compare ``run(batch)`` with the eager ``reference`` on the whole batch and on batch 1."""
    batches = [images, images[:1]] if len(images) > 1 else [images]
    worst = 0.0
    for batch in batches:
        out = np.asarray(run(batch))
        worst = max(worst, compare_logits(reference[: len(batch)], out, what, tolerance))
    return {
        "batch_sizes": [len(b) for b in batches],
        "max_abs_logit_diff": worst,
        "top1_identical": True,
        "tolerance": tolerance,
    }


def check_onnx(
    reference: np.ndarray,
    path: str | os.PathLike,
    images: torch.Tensor,
    tolerance: float = ONNX_TOLERANCE,
) -> dict[str, Any]:
    """ONNX Runtime on ``images`` (whole batch, then batch 1) against the eager PyTorch
    logits ``reference`` (:func:`reference_logits`).

    Raises:
        ExportError: top-1 differs on an image or a logit differs by more than ``tolerance``.
    """
    session = onnx_session(path)
    return _check_runner(
        reference,
        lambda batch: onnx_session_logits(session, batch.numpy()),
        images,
        f"ONNX model {Path(path).name}",
        tolerance,
    )


def check_torchscript(
    reference: np.ndarray,
    path: str | os.PathLike,
    images: torch.Tensor,
    tolerance: float = ONNX_TOLERANCE,
) -> dict[str, Any]:
    """The saved TorchScript module against eager PyTorch, like :func:`check_onnx`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        scripted = torch.jit.load(str(path), map_location="cpu")

    def run(batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return scripted(batch).numpy()

    return _check_runner(reference, run, images, f"TorchScript model {Path(path).name}", tolerance)


# ---------------------------------------------------------------------- writing the bundle
def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _check_destination(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.is_dir() and not _is_empty_dir(out) and not force:
        raise UsageError(
            f"--out {out} exists and is not empty; choose another folder or pass --force "
            f"(which replaces the bundle's files and keeps any other file there)"
        )


def _set_default_mode(path: Path, folder: bool) -> None:
    """The permissions a plain mkdir / open would give (temp files are owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if folder else 0o666) & ~umask)


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder``'s missing ancestors; returns those created (outermost first)."""
    created = []
    for parent in reversed(folder.parents):
        if not parent.exists():
            parent.mkdir()
            created.append(parent)
    return created


def _publish(staging: Path, out: Path, force: bool) -> None:
    """Move the finished bundle into place; with ``force`` keep the user's other files."""
    if not out.exists():
        os.replace(staging, out)
        return
    if _is_empty_dir(out):
        out.rmdir()
        os.replace(staging, out)
        return
    _check_destination(out, force)
    backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    backup.rmdir()
    os.replace(out, backup)
    try:
        os.replace(staging, out)
    except OSError:
        os.replace(backup, out)
        raise
    kept = []
    for entry in backup.iterdir():
        if entry.name not in BUNDLE_FILES:
            shutil.move(str(entry), str(out / entry.name))
            kept.append(entry.name)
    shutil.rmtree(backup)
    if kept:
        logger.info("kept %d other entries of %s: %s", len(kept), out, ", ".join(sorted(kept)))


def export_checkpoint(
    ckpt_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = DEFAULT_FORMATS,
    force: bool = False,
    image_size: int | None = None,
    preset: str | None = None,
    check_files: Sequence[str | os.PathLike] | None = None,
    check_count: int = 4,
    tolerance: float = ONNX_TOLERANCE,
) -> Path:
    """Export a Lightning checkpoint of fgvc fit as a bundle in ``out_dir``.

    Args:
        ckpt_path: the ``.ckpt`` file (see :func:`resolve_checkpoint` for ``best``).
        out_dir: the bundle folder; it must not exist or be empty unless ``force``.
        formats: any of ``"safetensors"`` (always written), ``"onnx"``, ``"torchscript"``.
        force: replace the bundle files of a non-empty ``out_dir`` (other files are kept).
        image_size, preset: override the preprocessing recorded in the checkpoint.
        check_files: images (files / folders) for the ONNX / TorchScript checks; default
            ``check_count`` synthetic images.
        check_count: synthetic check images (the export itself traces a batch of 2).
        tolerance: largest accepted |logit difference| (at most :data:`ONNX_TOLERANCE`).

    Returns:
        ``out_dir`` as a Path, holding ``model.json``, ``model.safetensors`` and the formats.

    Raises:
        UsageError: unknown format, or ``out_dir`` is in the way.
        FileNotFoundError, CheckpointError: the checkpoint cannot be read or does not fit.
        ExportError: an exporter failed or an exported model disagrees with PyTorch; nothing
            is written then.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UsageError(f"unknown format(s) {', '.join(unknown)}; choose from {FORMATS}")
    if not 0 <= tolerance <= ONNX_TOLERANCE:
        raise UsageError(f"tolerance must be in [0, {ONNX_TOLERANCE:g}], got {tolerance}")
    out = Path(out_dir).expanduser().absolute()
    _check_destination(out, force)
    started = time.perf_counter()
    model, config = model_from_checkpoint(ckpt_path, image_size=image_size, preset=preset)
    prep = config["preprocessing"]
    size = prep["image_size"]

    created = _make_parents(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _set_default_mode(staging, folder=True)  # mkdtemp makes it private
        save_weights(model, staging / WEIGHTS_FILE)
        files: dict[str, str] = {"weights": WEIGHTS_FILE}
        if "onnx" in formats or "torchscript" in formats:
            images, source = check_images(prep, check_count, check_files)
            reference = reference_logits(model, images)
        if "onnx" in formats:
            info = export_onnx(model, staging / ONNX_FILE, size)
            check = check_onnx(reference, staging / ONNX_FILE, images, tolerance)
            config["onnx"] = {
                "file": ONNX_FILE,
                **info,
                "input": ONNX_INPUT,
                "output": ONNX_OUTPUT,
                "dynamic_axes": {ONNX_INPUT: [0], ONNX_OUTPUT: [0]},
                "check": {"images": source, **check},
            }
            files["onnx"] = ONNX_FILE
            logger.info(
                "ONNX (%s) matches PyTorch on %s: max |logit difference| %.2e, top-1 identical",
                info["exporter"],
                source,
                check["max_abs_logit_diff"],
            )
        if "torchscript" in formats:
            export_torchscript(model, staging / TORCHSCRIPT_FILE, size)
            check = check_torchscript(reference, staging / TORCHSCRIPT_FILE, images, tolerance)
            config["torchscript"] = {"file": TORCHSCRIPT_FILE, "check": {"images": source, **check}}
            files["torchscript"] = TORCHSCRIPT_FILE
        config["files"] = files
        config["export_seconds"] = round(time.perf_counter() - started, 1)
        (staging / CONFIG_FILE).write_text(
            json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        for entry in staging.iterdir():
            _set_default_mode(entry, folder=False)
        _publish(staging, out, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):
            if _is_empty_dir(folder):
                folder.rmdir()
        raise
    return out


# ------------------------------------------------------------------------------- loading
def read_config(bundle: str | os.PathLike) -> dict[str, Any]:
    """``model.json`` of a bundle folder.

    Raises:
        FileNotFoundError: no ``model.json`` there.
        CheckpointError: not an fgvc bundle, or one from a newer fgvc.
    """
    path = Path(bundle).expanduser() / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; is {path.parent} an fgvc export folder?")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(config, dict) or config.get("format") != BUNDLE_FORMAT:
        raise CheckpointError(f"{path} is not an fgvc export description")
    if int(config.get("format_version", 0)) > BUNDLE_VERSION:
        raise CheckpointError(
            f"{path} has format version {config['format_version']}; this fgvc reads "
            f"up to {BUNDLE_VERSION} (upgrade fgvc)"
        )
    return config


def _build(spec: Mapping[str, Any], num_classes: int) -> FGVCNet:
    """The untrained network a checkpoint's hyperparameters or a ``model.json`` describe."""
    return build_model(
        arch=str(spec["arch"]),
        num_classes=num_classes,
        representation=str(spec.get("representation") or "isqrt"),
        reduce_dim=int(spec.get("reduce_dim") or 256),
        iterations=int(spec.get("iterations") or 5),
        last_stride=spec.get("last_stride"),
        pretrained=None,
    )


def load(bundle: str | os.PathLike) -> FGVCNet:
    """The network of an export folder, in eval mode on the CPU.

    Built from ``model.json`` with :func:`fgvc.models.build_model` (no pretrained download)
    and loaded from ``model.safetensors`` with strict key and shape checks. The returned
    module also has ``class_names``, ``preprocessing`` (the ``model.json`` entry) and
    ``export_config`` (all of ``model.json``).

    Raises:
        FileNotFoundError: a file of the bundle is missing.
        CheckpointError: the bundle is not fgvc's or the weights do not fit the description.
    """
    folder = Path(bundle).expanduser()
    return load_bundle(folder, read_config(folder))


def load_bundle(folder: Path, config: dict[str, Any]) -> FGVCNet:
    """:func:`load` for a bundle whose ``model.json`` was already read into ``config``."""
    model = _build(config, int(config["num_classes"]))
    weights = folder / config.get("files", {}).get("weights", WEIGHTS_FILE)
    load_state_dict_checked(model, read_checkpoint(weights), str(weights))
    model.eval()
    _attach(model, config)
    return model


# ------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fgvc export",
        description="Export a trained checkpoint: weights (safetensors), model.json, ONNX "
        "(checked against PyTorch) and optionally TorchScript.",
        epilog="Exit codes: 0 exported; 1 the export or its check failed (nothing written); "
        "2 usage errors.",
    )
    parser.add_argument(
        "--ckpt",
        default="best",
        help="a .ckpt file, a run folder, or 'best' (default): the best checkpoint of --run "
        "or of the most recent run under --runs-root",
    )
    parser.add_argument("--run", help="run folder for --ckpt best (runs/<name>/version_<n>)")
    parser.add_argument(
        "--runs-root", default=DEFAULT_RUNS_ROOT, help="where runs are (default: runs)"
    )
    parser.add_argument(
        "--out",
        help="bundle folder (default: <run folder>/export, or <checkpoint name>-export)",
    )
    parser.add_argument(
        "--formats",
        nargs="+",
        choices=FORMATS,
        default=list(DEFAULT_FORMATS),
        help="what to write (default: safetensors onnx; safetensors is always written)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace the bundle files in a non-empty --out"
    )
    parser.add_argument("--image-size", type=int, help="override the recorded input size")
    parser.add_argument("--preset", choices=PRESETS, help="override the recorded preprocessing")
    parser.add_argument(
        "--check-images",
        nargs="+",
        metavar="PATH",
        help="image files or folders for the export check (default: synthetic images)",
    )
    parser.add_argument(
        "--check-count", type=int, default=4, help="synthetic check images (default: 4)"
    )
    return parser


def default_out_dir(ckpt: Path) -> Path:
    """``<run>/export`` for ``<run>/checkpoints/x.ckpt``, else ``<x>-export`` beside it."""
    if ckpt.parent.name == "checkpoints":
        return ckpt.parent.parent / "export"
    return ckpt.with_name(f"{ckpt.stem}-export")


def export_main(argv: list[str]) -> int:
    """``fgvc export``: returns the exit code (0 ok, 1 export failed, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2)
        return int(exit_.code or 0)
    _log_to_stderr()
    try:
        if args.check_count < 1:
            raise UsageError("--check-count must be >= 1")
        ckpt = resolve_checkpoint(args.ckpt, args.run, args.runs_root)
        out = Path(args.out) if args.out else default_out_dir(ckpt)
        _check_destination(out.expanduser().absolute(), args.force)
        print(f"exporting {ckpt} -> {out}", file=sys.stderr, flush=True)
        bundle = export_checkpoint(
            ckpt,
            out,
            formats=args.formats,
            force=args.force,
            image_size=args.image_size,
            preset=args.preset,
            check_files=args.check_images,
            check_count=args.check_count,
        )
    except (UsageError, FileNotFoundError, CheckpointError) as err:
        print(f"fgvc export: error: {one_line(err)}", file=sys.stderr)
        return 2
    except ExportError as err:
        print(f"fgvc export: failed: {one_line(err)} (nothing was written)", file=sys.stderr)
        return 1
    print(summary(bundle))
    return 0


def _log_to_stderr() -> None:
    """fgvc's own messages (not the exporters' chatter) at INFO on stderr, once."""
    fgvc_logger = logging.getLogger("fgvc")
    if not fgvc_logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        fgvc_logger.addHandler(handler)
        fgvc_logger.setLevel(logging.INFO)


def one_line(err: BaseException) -> str:
    """An error as one line (whitespace collapsed; its type name when it has no text)."""
    return " ".join(str(err).split()) or type(err).__name__


def summary(bundle: str | os.PathLike) -> str:
    """A few lines describing an export folder (what ``fgvc export`` prints)."""
    folder = Path(bundle)
    config = read_config(folder)
    ckpt = config["checkpoint"]
    prep = config["preprocessing"]
    lines = [f"exported to {folder}"]
    for name in config["files"].values():
        size = (folder / name).stat().st_size / 2**20
        lines.append(f"  {name:<22} {size:8.1f} MiB")
    lines.append(
        f"  model: {config['arch']} {config['representation']} d={config['reduce_dim']} "
        f"N={config['iterations']}, {config['num_classes']} classes"
    )
    lines.append(f"  input: {prep['image_size']} px, {prep['resize']}, tta={prep['tta']}")
    score = ckpt.get("score")
    if ckpt.get("monitor"):
        value = "n/a" if score is None else f"{score:.4f}"
        lines.append(
            f"  checkpoint: {ckpt['file']}, epoch {ckpt['epoch']}, {ckpt['monitor']} {value}"
        )
    if "onnx" in config:
        check = config["onnx"]["check"]
        lines.append(
            f"  onnx: {config['onnx']['exporter']}, opset {config['onnx']['opset']}; vs PyTorch "
            f"on {check['images']}: max |logit diff| {check['max_abs_logit_diff']:.2e}, "
            f"top-1 identical"
        )
    return "\n".join(lines)
