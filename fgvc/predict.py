"""``fgvc predict``: top-k classes of image files from an export bundle or a checkpoint.

    fgvc predict IMAGE_OR_FOLDER... [--model DIR|CKPT|best] [--backend onnx|torch]
                 [--topk 5] [--tta] [--format table|csv|json] [--output FILE]

Folders are searched recursively for image files (``fgvc.data.io.IMAGE_EXTENSIONS``, any
case); files named on the command line are read whatever their extension. Images are decoded
to RGB (:func:`fgvc.data.io.read_rgb`) and preprocessed exactly as in evaluation: JPEGs at
reduced DCT scale where the evaluation did so (``fast_decode`` in ``model.json``), then
``build_transforms(preset, train=False, image_size)`` and the bundle's mean / std, batched,
and run through ONNX Runtime (default when the bundle has ``model.onnx``) or PyTorch.
``--tta`` averages the logits of each image and its mirror, as ``test_tta`` does in training.

Outputs (stdout, or ``--output FILE``, UTF-8):

* ``table``: per image, its path then one line per rank: ``rank  probability  class name``.
* ``csv``: one row per image and rank: ``image,rank,class_index,class_name,probability``.
* ``json``: ``{"model", "backend", "tta", "topk", "predictions": [{"image", "top": [{"rank",
  "class_index", "class_name", "probability"}]}], "errors": [{"image", "error"}]}``.

An image that cannot be read is reported on one line on stderr and skipped; the others are
still predicted. Exit codes: 0 every image predicted; 1 some could not be read (the rest were
predicted); 2 usage errors (bad arguments, model not found, no image found).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np
import torch

from fgvc.data.io import IMAGE_EXTENSIONS, ImageDecodeError, read_rgb
from fgvc.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_transforms,
    decode_min_size,
    hflip_tta,
    normalize_images,
)
from fgvc.export import (
    CONFIG_FILE,
    DEFAULT_RUNS_ROOT,
    ONNX_FILE,
    UsageError,
    load_bundle,
    model_from_checkpoint,
    one_line,
    onnx_session,
    onnx_session_logits,
    read_config,
    resolve_checkpoint,
)
from fgvc.models import CheckpointError

BACKENDS = ("auto", "onnx", "torch")
OUTPUT_FORMATS = ("table", "csv", "json")
CSV_COLUMNS = ("image", "rank", "class_index", "class_name", "probability")


# --------------------------------------------------------------------------------- inputs
def collect_images(
    inputs: Iterable[str | os.PathLike],
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files from files and folders, in the given order (folders sorted, recursive).

    Returns:
        ``(images, missing)``: ``missing`` lists the inputs that do not exist, with a reason.
    """
    images: list[Path] = []
    missing: list[tuple[Path, str]] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = [
                p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
            ]
            images.extend(sorted(found))
        elif path.exists():
            images.append(path)
        else:
            missing.append((path, f"{path}: no such file or folder"))
    return images, missing


@dataclass
class Preprocessor:
    """The evaluation preprocessing of a bundle: decode, resize / crop, normalize.

    Attributes:
        image_size: side S of the square input.
        preset: transform preset (see :func:`fgvc.data.transforms.build_transforms`).
        antialias: antialiased resizing.
        fast_decode: decode JPEGs at 1/2, 1/4 or 1/8 scale where the resize allows (as the
            DataModule does by default); False for bundles that do not say.
        mean, std: per-channel normalization (of pixel / 255).
    """

    image_size: int
    preset: str = "generic"
    antialias: bool = False
    fast_decode: bool = False
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    _transform: Any = field(default=None, init=False, repr=False)
    _min_size: tuple[int, int] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.fast_decode:
            self._min_size = decode_min_size(self.preset, False, self.image_size)
        self._transform = build_transforms(
            self.preset,
            train=False,
            image_size=self.image_size,
            normalize=False,
            antialias=self.antialias,
        )

    @classmethod
    def from_config(cls, preprocessing: Mapping[str, Any]) -> Preprocessor:
        """From the ``preprocessing`` entry of ``model.json``."""
        return cls(
            image_size=int(preprocessing["image_size"]),
            preset=str(preprocessing.get("preset", "generic")),
            antialias=bool(preprocessing.get("antialias", False)),
            fast_decode=bool(preprocessing.get("fast_decode", False)),
            mean=tuple(preprocessing.get("mean", IMAGENET_MEAN)),
            std=tuple(preprocessing.get("std", IMAGENET_STD)),
        )

    def load(self, path: str | os.PathLike) -> torch.Tensor:
        """``(3, S, S)`` uint8 tensor of one image file.

        Raises:
            ImageDecodeError: the file cannot be read or decoded (the message names it).
        """
        return self.transform(read_rgb(path, self._min_size)[0])

    def transform(self, image: np.ndarray) -> torch.Tensor:
        """``(3, S, S)`` uint8 tensor from an ``(H, W, 3)`` RGB uint8 array."""
        return self._transform(image=image)["image"]

    def batch(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stack uint8 images and normalize: ``(N, 3, S, S)`` float32."""
        return normalize_images(torch.stack(list(images)), self.mean, self.std).contiguous()


# ---------------------------------------------------------------------------------- models
class Predictor:
    """A model that maps normalized ``(N, 3, S, S)`` float32 images to logits.

    Attributes:
        class_names: names in label order.
        config: ``model.json`` (or the equivalent built from a checkpoint).
        backend: ``"onnx"`` or ``"torch"``.
        source: what was loaded (a path).
    """

    backend = ""

    def __init__(self, config: Mapping[str, Any], source: str) -> None:
        self.config = dict(config)
        self.class_names: list[str] = list(config["class_names"])
        self.source = source

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict_logits(self, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
        """Logits, or with ``tta`` the mean of the images' and their mirrors' logits."""
        return hflip_tta(self.logits, images) if tta else self.logits(images)


class TorchPredictor(Predictor):
    """PyTorch: the network of a bundle (``fgvc.export.load``) or of a checkpoint."""

    backend = "torch"

    def __init__(
        self, model: torch.nn.Module, config: Mapping[str, Any], source: str, device: str
    ) -> None:
        super().__init__(config, source)
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(images.to(self.device)).cpu()


class OnnxPredictor(Predictor):
    """ONNX Runtime on a bundle's ``model.onnx`` (CUDA provider when asked and available)."""

    backend = "onnx"

    def __init__(self, path: Path, config: Mapping[str, Any], device: str) -> None:
        super().__init__(config, str(path.parent))
        self.session = onnx_session(path, device)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(onnx_session_logits(self.session, images.numpy()))


def _device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device available")
    return device


def load_predictor(
    source: str | os.PathLike,
    backend: str = "auto",
    device: str = "auto",
    runs_root: str | os.PathLike = DEFAULT_RUNS_ROOT,
) -> Predictor:
    """A predictor from an export folder, a ``.ckpt`` file, a run folder or ``"best"``.

    ``backend="auto"``: ONNX Runtime when the export folder has ``model.onnx``, else PyTorch.
    Checkpoints and run folders always run on PyTorch.

    Raises:
        UsageError: nothing usable at ``source``, or ONNX asked for a checkpoint.
        FileNotFoundError, CheckpointError: unreadable or mismatching files.
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    device = _device(device)
    path = Path(source).expanduser()
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        config = read_config(path)
        onnx_name = config.get("files", {}).get("onnx", ONNX_FILE)
        has_onnx = (path / onnx_name).is_file()
        if backend == "onnx" and not has_onnx:
            raise UsageError(f"{path} has no {onnx_name}; use --backend torch")
        if backend == "onnx" or (backend == "auto" and has_onnx):
            return OnnxPredictor(path / onnx_name, config, device)
        model = load_bundle(path, config)
        return TorchPredictor(model, config, str(path), device)
    if backend == "onnx":
        raise UsageError(
            f"--backend onnx needs an export folder (fgvc export), got {source}; "
            f"checkpoints run with --backend torch"
        )
    ckpt = resolve_checkpoint(source, runs_root=runs_root)
    model, config = model_from_checkpoint(ckpt)
    return TorchPredictor(model, config, str(ckpt), device)


# ------------------------------------------------------------------------------ predicting
@dataclass
class Prediction:
    """Top-k of one image: ``(class_index, class_name, probability)`` by rank."""

    image: str
    top: list[tuple[int, str, float]]


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _try_load(prep: Preprocessor, path: Path) -> torch.Tensor | str:
    try:
        return prep.load(path)
    except (ImageDecodeError, OSError, ValueError, RuntimeError, cv2.error) as err:
        message = one_line(err)
        return message if str(path) in message else f"{path}: {message}"


def predict_files(
    predictor: Predictor,
    images: Sequence[Path],
    topk: int = 5,
    tta: bool = False,
    batch_size: int = 32,
    workers: int = 4,
    on_error: Callable[[Path, str], None] | None = None,
    progress: bool | None = None,
) -> tuple[list[Prediction], list[tuple[Path, str]]]:
    """Top-k predictions for image files, in order; unreadable files are skipped.

    Args:
        predictor: from :func:`load_predictor`.
        images: image files (see :func:`collect_images`).
        topk: classes per image (at most the number of classes).
        tta: average the logits of each image and its horizontal mirror.
        batch_size: images per forward pass.
        workers: threads decoding and preprocessing.
        on_error: called with ``(path, message)`` for each unreadable image, when it happens.
        progress: show a progress bar on stderr (None: when stderr is a terminal).

    Returns:
        ``(predictions, errors)``.
    """
    from tqdm import tqdm

    prep = Preprocessor.from_config(predictor.config["preprocessing"])
    k = max(1, min(topk, len(predictor.class_names)))
    predictions: list[Prediction] = []
    errors: list[tuple[Path, str]] = []
    bar = tqdm(
        total=len(images),
        unit="img",
        file=sys.stderr,
        disable=None if progress is None else not progress,
        desc="predict",
    )
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:

            def submit(chunk: Sequence[Path] | None) -> tuple[Sequence[Path], list[Future]] | None:
                if chunk is None:
                    return None
                return chunk, [pool.submit(_try_load, prep, path) for path in chunk]

            chunks = _chunks(images, max(1, batch_size))
            pending = submit(next(chunks, None))
            while pending is not None:
                chunk, futures = pending
                loaded = [future.result() for future in futures]
                pending = submit(next(chunks, None))  # decoded while this chunk runs
                good = []
                for path, result in zip(chunk, loaded):
                    if isinstance(result, torch.Tensor):
                        good.append((path, result))
                        continue
                    errors.append((path, result))
                    if on_error is not None:
                        bar.clear()
                        on_error(path, result)
                        bar.refresh()
                if good:
                    batch = prep.batch([x for _, x in good])
                    probs = predictor.predict_logits(batch, tta=tta).softmax(-1)
                    values, indices = probs.topk(k, dim=-1)
                    for (path, _), vals, idxs in zip(good, values.tolist(), indices.tolist()):
                        top = [(i, predictor.class_names[i], v) for i, v in zip(idxs, vals)]
                        predictions.append(Prediction(str(path), top))
                bar.update(len(chunk))
    finally:
        bar.close()
    return predictions, errors


# --------------------------------------------------------------------------------- outputs
def format_table(predictions: Sequence[Prediction]) -> str:
    """Human-readable: the image, then ``rank  probability  class`` lines."""
    lines = []
    for pred in predictions:
        lines.append(pred.image)
        for rank, (_, name, prob) in enumerate(pred.top, 1):
            lines.append(f"  {rank:>2}  {prob:7.4f}  {name}")
    return "\n".join(lines) + ("\n" if lines else "")


def format_csv(predictions: Sequence[Prediction]) -> str:
    """One row per image and rank (RFC 4180 quoting; names keep commas, quotes, unicode)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for pred in predictions:
        for rank, (index, name, prob) in enumerate(pred.top, 1):
            writer.writerow([pred.image, rank, index, name, repr(prob)])
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
                "image": pred.image,
                "top": [
                    {"rank": rank, "class_index": index, "class_name": name, "probability": prob}
                    for rank, (index, name, prob) in enumerate(pred.top, 1)
                ],
            }
            for pred in predictions
        ],
        "errors": [{"image": str(path), "error": message} for path, message in errors],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _write(text: str, output: str | None, stdout: TextIO) -> None:
    if output is None:
        stdout.write(text)
        stdout.flush()
        return
    with open(output, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


# ------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fgvc predict",
        description="Top-k classes of images from an export folder (ONNX Runtime or "
        "PyTorch) or a checkpoint.",
        epilog="Exit codes: 0 all images predicted; 1 some images could not be read (reported "
        "on stderr, the others predicted); 2 usage errors.",
    )
    parser.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files or folders")
    parser.add_argument(
        "--model",
        default="best",
        help="export folder (fgvc export), .ckpt file, run folder, or 'best' (default: the "
        "best checkpoint of the most recent run under --runs-root)",
    )
    parser.add_argument("--runs-root", default=DEFAULT_RUNS_ROOT, help="where runs are, for 'best'")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto (default): ONNX Runtime when the export folder has model.onnx, else torch",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    parser.add_argument("--tta", action="store_true", help="average with the mirrored image")
    parser.add_argument("--format", choices=OUTPUT_FORMATS, default="table")
    parser.add_argument("--output", "-o", help="write here instead of stdout (UTF-8)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def predict_main(
    argv: list[str], stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """``fgvc predict``: returns the exit code (0 all predicted, 1 some failed, 2 usage)."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2)
        return int(exit_.code or 0)

    def fail(message: str) -> int:
        print(f"fgvc predict: error: {message}", file=stderr)
        return 2

    if args.topk < 1 or args.batch_size < 1 or args.workers < 1:
        return fail("--topk, --batch-size and --workers must be >= 1")
    if args.output is not None:
        parent = Path(args.output).expanduser().absolute().parent
        if not parent.is_dir():
            return fail(f"--output: folder {parent} does not exist")
    images, missing = collect_images(args.inputs)
    if not images:
        listing = "; ".join(message for _, message in missing)
        return fail(
            f"no image found in {' '.join(args.inputs)}" + (f" ({listing})" if listing else "")
        )
    try:
        predictor = load_predictor(args.model, args.backend, args.device, args.runs_root)
    except (UsageError, FileNotFoundError, CheckpointError) as err:
        return fail(one_line(err))

    def report(path: Path, message: str) -> None:
        print(f"fgvc predict: skipped {message}", file=stderr, flush=True)

    for path, message in missing:
        report(path, message)
    predictions, errors = predict_files(
        predictor,
        images,
        topk=args.topk,
        tta=args.tta,
        batch_size=args.batch_size,
        workers=args.workers,
        on_error=report,
        progress=False if args.no_progress else None,
    )
    errors = missing + errors
    if args.format == "json":
        meta = {
            "model": predictor.source,
            "backend": predictor.backend,
            "tta": bool(args.tta),
            "topk": min(args.topk, len(predictor.class_names)),
        }
        text = format_json(predictions, errors, meta)
    elif args.format == "csv":
        text = format_csv(predictions)
    else:
        text = format_table(predictions)
    try:
        _write(text, args.output, stdout)
    except OSError as err:
        return fail(f"--output: {err}")
    if errors:
        print(
            f"fgvc predict: {len(errors)} of {len(images) + len(missing)} images could not be "
            f"read (listed above); {len(predictions)} predicted",
            file=stderr,
        )
        return 1
    return 0
