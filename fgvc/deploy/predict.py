"""Top-k classes of image files from an export bundle or a checkpoint.

Images are decoded and preprocessed exactly as evaluation did (the bundle's
:class:`~fgvc.data.preprocessing.EvalPreprocessing`), batched, and run through one of the
bundle's formats (:mod:`fgvc.deploy.formats`: ONNX Runtime by default when the bundle has
``model.onnx``, else ``model.pt2``, else PyTorch on the weights); with test-time flip augmentation
(the bundle's setting unless told otherwise) the logits of each image and its mirror are
averaged. Unreadable images are reported and skipped.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import torch

from fgvc.bundle_config import is_bundle
from fgvc.data.preprocessing import EvalPreprocessing
from fgvc.data.transforms import hflip_tta
from fgvc.deploy.bundle import CONFIG_FILE, bundle_file, load, parse_config, read_config
from fgvc.deploy.formats import FORMATS, WEIGHTS, ExportFormat, by_backend, onnx_fp32
from fgvc.errors import CheckpointError, ImageDecodeError, UsageError, one_line
from fgvc.runs import RUNS_ROOT, read_fit_checkpoint, resolve_checkpoint

#: ``auto`` and each format's backend name (``torch``: the weights on PyTorch).
BACKENDS = ("auto", *(f.backend for f in FORMATS))


# ---------------------------------------------------------------------------------- models
class Predictor:
    """A model that maps normalized ``(N, 3, S, S)`` float32 images to logits.

    Attributes:
        class_names: names in label order.
        preprocessing: how image files become its input (and whether to flip-average).
        backend: one of :data:`BACKENDS` but ``auto``.
        source: what was loaded (a path).
    """

    backend = ""

    def __init__(
        self, class_names: list[str], preprocessing: EvalPreprocessing, source: str
    ) -> None:
        self.class_names = list(class_names)
        self.preprocessing = preprocessing
        self.source = source

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict_logits(self, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
        """Logits, or with ``tta`` the mean of the images' and their mirrors' logits."""
        logits = hflip_tta(self.logits, images) if tta else self.logits(images)
        self.check_outputs(logits.shape[-1] if logits.dim() == 2 else None)
        return logits

    def check_outputs(self, outputs: int | None) -> None:
        """The model must give one logit per class name: a model file swapped or hand-edited
        under another ``model.json`` would otherwise fail in top-k or, worse, name the
        wrong classes."""
        if outputs != len(self.class_names):
            given = "no (N, classes) logits" if outputs is None else f"{outputs} outputs"
            raise CheckpointError(
                f"{self.source}: the model gives {given} per image, but "
                f"{CONFIG_FILE} names {len(self.class_names)} classes; export the checkpoint "
                f"again (fgvc export) instead of combining files of different bundles"
            )


class TorchPredictor(Predictor):
    """PyTorch: the network of a bundle or of a checkpoint."""

    backend = "torch"

    def __init__(
        self,
        net: torch.nn.Module,
        class_names: list[str],
        preprocessing: EvalPreprocessing,
        source: str,
        device: str,
    ) -> None:
        super().__init__(class_names, preprocessing, source)
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.net(images.to(self.device)).cpu()


class FormatPredictor(Predictor):
    """A bundle's file of one of the :data:`~fgvc.deploy.formats.FORMATS`, loaded by its
    record (``device``: ``cuda`` where its runtime can)."""

    def __init__(
        self,
        fmt: ExportFormat,
        path: Path,
        class_names: list[str],
        preprocessing: EvalPreprocessing,
        device: str,
    ) -> None:
        super().__init__(class_names, preprocessing, str(path.parent))
        self.format = fmt
        self.backend = fmt.backend
        if importlib.util.find_spec(fmt.runtime) is None:
            raise UsageError(
                f"--backend {fmt.backend} needs the {fmt.runtime} package (pip install "
                f"{fmt.runtime}), or use --backend torch"
            )
        try:
            self.run = fmt.load(path, device)
        except Exception as err:  # the runtime's own errors: a truncated or foreign file
            raise CheckpointError(
                f"{path}: {fmt.runtime} cannot load it ({one_line(err)}); export again, or use "
                f"--backend torch"
            ) from err

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        try:
            return self.run(images)
        except Exception as err:  # e.g. a model whose input size does not fit the bundle
            raise CheckpointError(
                f"{self.source}: {self.format.name} model failed ({one_line(err)}); use "
                f"--backend torch"
            ) from err


class OnnxPredictor(FormatPredictor):
    """ONNX Runtime on a bundle's ``model.onnx`` (CUDA provider when asked and available)."""

    def __init__(
        self,
        path: Path,
        class_names: list[str],
        preprocessing: EvalPreprocessing,
        device: str,
    ) -> None:
        super().__init__(onnx_fp32.FORMAT, path, class_names, preprocessing, device)


def bundle_format(folder: Path, config: dict, backend: str = "auto") -> tuple[ExportFormat, Path]:
    """The format (and its file) a bundle runs with: ``backend``'s, or for ``auto`` the
    present format of highest ``auto`` preference (ONNX, then pt2, then the weights).

    Raises:
        UsageError: the bundle has no file of that format (or none of any).
    """
    if backend != "auto":
        fmt = by_backend(backend)
        path = bundle_file(folder, config, fmt.key, fmt.file)
        if not path.is_file():
            raise UsageError(
                f"{folder} has no {path.name} ({fmt.name}); export it with fgvc export "
                f"--formats {fmt.name}, or use --backend auto"
            )
        return fmt, path
    present = [(f, bundle_file(folder, config, f.key, f.file)) for f in FORMATS]
    present = [(f, p) for f, p in present if p.is_file()]
    if not present:
        raise CheckpointError(f"{folder} holds no model file; export the checkpoint again")
    return max(present, key=lambda item: item[0].auto)  # the first of equals: table order


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
    runs_root: str | os.PathLike = RUNS_ROOT,
) -> Predictor:
    """A predictor from an export folder, a ``.ckpt`` file, a run folder or ``"best"``.

    ``backend``: one of :data:`BACKENDS`; ``"auto"`` picks the bundle's format by
    :func:`bundle_format` (ONNX Runtime when it has ``model.onnx``). Checkpoints and run
    folders always run on PyTorch.

    Raises:
        UsageError: nothing usable at ``source``, a format the bundle lacks, or a format
            other than ``torch`` asked for a checkpoint.
        CheckpointError: unreadable or mismatching files.
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    device = _device(device)
    path = Path(source).expanduser()
    if is_bundle(path):
        config = read_config(path)
        fmt, file = bundle_format(path, config, backend)
        if fmt is WEIGHTS:  # the network itself (gradients, .net for explain)
            bundle = load(path)
            return TorchPredictor(
                bundle.net, bundle.class_names, bundle.preprocessing, str(path), device
            )
        _, names, prep = parse_config(config, path / CONFIG_FILE)
        return FormatPredictor(fmt, file, names, prep, device)
    if backend not in ("auto", WEIGHTS.backend):
        raise UsageError(
            f"--backend {backend} needs an export folder (fgvc export), got {source}; "
            f"checkpoints run with --backend torch"
        )
    ckpt = read_fit_checkpoint(resolve_checkpoint(source, runs_root=runs_root))
    prep = ckpt.eval_preprocessing()
    return TorchPredictor(ckpt.build_net(), ckpt.class_names, prep, str(ckpt.path), device)


# ------------------------------------------------------------------------------ predicting
@dataclass
class Prediction:
    """Top-k of one image: ``(class_index, class_name, probability)`` by rank."""

    image: str
    top: list[tuple[int, str, float]]


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def load_or_reason(prep: EvalPreprocessing, path: Path) -> torch.Tensor | str:
    """The image as evaluation prepares it, or why it cannot be read (one line naming it)."""
    try:
        return prep.load(path)
    except UsageError:  # a setting (FGVC_MAX_IMAGE_PIXELS), not this image
        raise
    except (ImageDecodeError, OSError, ValueError, RuntimeError, cv2.error) as err:
        message = one_line(err)
        return message if str(path) in message else f"{path}: {message}"


def top_k(probs: torch.Tensor, k: int, class_names: Sequence[str]) -> list[list[tuple]]:
    """``(class_index, class_name, probability)`` of the ``k`` largest of each row."""
    values, indices = probs.topk(k, dim=-1)
    return [
        [(i, class_names[i], v) for i, v in zip(idxs, vals)]
        for vals, idxs in zip(values.tolist(), indices.tolist())
    ]


def predict_files(
    predictor: Predictor,
    images: Sequence[Path],
    topk: int = 5,
    tta: bool | None = None,
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
        tta: average the logits of each image and its horizontal mirror; None: as the
            bundle says (``preprocessing.tta``).
        batch_size: images per forward pass.
        workers: threads decoding and preprocessing.
        on_error: called with ``(path, message)`` for each unreadable image, when it happens.
        progress: show a progress bar on stderr (None: when stderr is a terminal).

    Returns:
        ``(predictions, errors)``.
    """
    from tqdm import tqdm

    prep = predictor.preprocessing
    tta = prep.tta if tta is None else tta
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
                return chunk, [pool.submit(load_or_reason, prep, path) for path in chunk]

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
                    probs = predictor.predict_logits(batch, tta=tta).float().softmax(-1)
                    tops = top_k(probs, k, predictor.class_names)
                    predictions.extend(Prediction(str(p), t) for (p, _), t in zip(good, tops))
                bar.update(len(chunk))
    finally:
        bar.close()
    return predictions, errors
