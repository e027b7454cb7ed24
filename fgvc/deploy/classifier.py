"""``fgvc.load(path)``: a trained network as a Python object that classifies and explains.

    >>> model = fgvc.load("runs/cub/version_0/export")   # or a .ckpt, a run folder, "best"
    >>> model.predict(["bird.jpg", pil_image, hwc_uint8_array], top_k=3)[0]
    TopK('bird.jpg', [('Laysan_Albatross', 0.93), ('Black_footed_Albatross', 0.05), ...])
    >>> model.explain("bird.jpg", out="explain-bird")[0].overlay()   # (S, S, 3) uint8

The source is resolved as ``fgvc predict --model`` resolves it
(:func:`~fgvc.deploy.predict.load_predictor`), and every image goes through the recorded
evaluation preprocessing (:class:`~fgvc.data.preprocessing.EvalPreprocessing`) and the
run's flip TTA, in batches, through the same code as ``fgvc predict``: the same files give
the same probabilities. What an image may be:

* a file path (``str`` or ``os.PathLike``): decoded as ``fgvc predict`` decodes it
  (reduced-scale JPEG decoding included, where the preprocessing allows it); a folder: the
  image files under it, sorted (:func:`~fgvc.data.files.collect_images`);
* a PIL image, or a ``numpy`` array ``(H, W, 3)`` RGB (``(H, W)`` grey, ``(H, W, 4)`` RGBA:
  alpha dropped) of ``uint8``: taken at the size given;
* a ``torch`` tensor ``(3, H, W)`` (``(1, H, W)``, ``(H, W)``) of ``uint8``, as
  ``torchvision.io.decode_image`` returns it;
* a 4-d array ``(N, H, W, C)`` or tensor ``(N, C, H, W)``: N such images; or a list of any
  of these.

Float arrays and tensors are refused rather than guessed at (pixels in [0, 1]? [0, 255]?
already normalized?): network-ready batches go to :meth:`Classifier.logits`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from fgvc.data.preprocessing import EvalPreprocessing
from fgvc.deploy.explain import Explanation, explain_crops, resolve_class
from fgvc.deploy.images import ImageLike, as_image_list, image_name, prepare_image
from fgvc.deploy.predict import Predictor, TorchPredictor, load_predictor
from fgvc.deploy.predict import top_k as top_k_rows  # predict() has a parameter top_k
from fgvc.errors import ImageDecodeError, UsageError, one_line
from fgvc.runs import RUNS_ROOT

ON_ERROR = ("raise", "skip")


class TopK(tuple):
    """The top-k classes of one image: a sequence of ``(class name, probability)`` pairs,
    most probable first.

    Attributes:
        image: the file, or ``"image <i>"`` for an image given in memory (``i``: its
            position in the call).
        indices: the classes' indices (positions in :attr:`Classifier.classes`).
        error: why the image could not be read (``on_error="skip"``: the sequence is empty
            then), else None.
    """

    image: str
    indices: tuple[int, ...]
    error: str | None

    def __new__(
        cls,
        pairs: Iterable[tuple[str, float]],
        image: str,
        indices: Iterable[int] = (),
        error: str | None = None,
    ) -> TopK:
        self = super().__new__(cls, tuple((str(n), float(p)) for n, p in pairs))
        self.image, self.indices, self.error = image, tuple(indices), error
        return self

    def __getnewargs__(self) -> tuple[Any, ...]:  # pickling (tuple subclasses need it)
        return tuple(self), self.image, self.indices, self.error

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self]

    @property
    def probabilities(self) -> list[float]:
        return [p for _, p in self]

    def __repr__(self) -> str:
        shown = f"error={self.error!r}" if self.error else repr(list(self))
        return f"TopK({self.image!r}, {shown})"


class Classifier:
    """A trained network with its class names and evaluation preprocessing (see the module
    doc); made by :func:`load`.

    Attributes:
        classes: class names in label order.
        preprocessing: how images become its input, and whether flip TTA is on.
        source: what was loaded (a bundle folder or a checkpoint file).
        backend: ``"torch"`` or ``"onnx"`` (ONNX Runtime, for :meth:`predict` only).
    """

    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor
        self._torch = predictor if isinstance(predictor, TorchPredictor) else None
        self._device = getattr(predictor, "device", None) or _onnx_device(predictor)

    # -- what it is ---------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return self._predictor.class_names

    @property
    def preprocessing(self) -> EvalPreprocessing:
        return self._predictor.preprocessing

    @property
    def source(self) -> str:
        return self._predictor.source

    @property
    def backend(self) -> str:
        return self._predictor.backend

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def net(self) -> torch.nn.Module:
        """The PyTorch network in eval mode on :attr:`device` (with the ONNX backend, read
        from the bundle's weights on first use)."""
        return self._torch_model().net

    def to(self, device: str | torch.device) -> Classifier:
        """Run on ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...); returns self."""
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"device {device}: no CUDA device available")
        if self._torch is not None:
            self._torch.net.to(device)
            self._torch.device = device
        if self._predictor is not self._torch:  # ONNX Runtime: a session for that device
            self._predictor = load_predictor(self.source, "onnx", device.type)
        self._device = device
        return self

    def __repr__(self) -> str:
        return (
            f"Classifier({self.source!r}, {len(self.classes)} classes, {self.backend} on "
            f"{self.device}, {self.preprocessing.describe()})"
        )

    # -- using it -----------------------------------------------------------------------
    def logits(self, batch: torch.Tensor, tta: bool = False) -> torch.Tensor:
        """``(N, classes)`` logits (on the CPU) of a network-ready ``(N, 3, S, S)`` float
        batch, normalized as :attr:`preprocessing` says (``preprocessing.batch``)."""
        return self._predictor.predict_logits(batch.float().cpu(), tta=tta)

    def predict(
        self,
        images: ImageLike | Sequence[ImageLike],
        top_k: int = 5,
        tta: bool | None = None,
        batch_size: int = 32,
        workers: int = 4,
        on_error: str = "raise",
    ) -> list[TopK]:
        """The ``top_k`` classes of each image with their probabilities.

        Args:
            images: one image or several (see the module doc for what an image may be).
            top_k: classes per image (at most the number of classes).
            tta: average the logits of each image and its mirror (None: as the run did).
            batch_size: images per forward pass.
            workers: threads decoding and resizing images.
            on_error: ``"raise"`` (default) stops at the first unreadable image;
                ``"skip"`` gives it an empty :class:`TopK` whose ``error`` says why.

        Returns:
            One :class:`TopK` per image, in order (a list even for one image).

        Raises:
            ImageDecodeError: an unreadable image (the message names it: the file, or
                ``image <i>`` for its position).
            UsageError: a bad argument or something that is not an image.
        """
        if top_k < 1 or batch_size < 1 or workers < 1:
            raise UsageError("top_k, batch_size and workers must be >= 1")
        _check_on_error(on_error)
        items = as_image_list(images)
        prep = self.preprocessing
        tta = prep.tta if tta is None else tta
        k = min(top_k, len(self.classes))
        results: list[TopK | None] = [None] * len(items)
        with ThreadPoolExecutor(max_workers=workers) as pool:

            def submit(start: int) -> list[tuple[int, Future]]:
                stop = min(start + batch_size, len(items))
                indices = range(start, stop)
                return [(i, pool.submit(prepare_image, prep, items[i], i)) for i in indices]

            pending = submit(0)
            for start in range(0, len(items), batch_size):
                loaded = [(i, future.result()) for i, future in pending]
                pending = submit(start + batch_size)  # decoded while this batch runs
                good = []
                for i, crop in loaded:
                    if isinstance(crop, torch.Tensor):
                        good.append((i, crop))
                    elif on_error == "raise":
                        raise crop
                    else:
                        results[i] = TopK((), image_name(items[i], i), error=one_line(crop))
                if not good:
                    continue
                batch = prep.batch([crop for _, crop in good])
                probs = self._predictor.predict_logits(batch, tta=tta).float().softmax(-1)
                for (i, _), top in zip(good, top_k_rows(probs, k, self.classes)):
                    pairs = [(name, p) for _, name, p in top]
                    results[i] = TopK(pairs, image_name(items[i], i), [c for c, _, _ in top])
        return results  # type: ignore[return-value]

    def explain(
        self,
        images: ImageLike | Sequence[ImageLike],
        target: int | str | Sequence[int | str | None] | None = None,
        method: str = "gradcam",
        tta: bool | None = None,
        out: str | os.PathLike | None = None,
        force: bool = False,
        batch_size: int = 8,
        on_error: str = "raise",
    ) -> list[Explanation]:
        """Class activation maps (Grad-CAM and kin, :mod:`fgvc.deploy.explain`) on the
        crop the network sees, always on PyTorch.

        Args:
            images: as for :meth:`predict`.
            target: None (each image's predicted class), a class name or index for every
                image, or one such value (or None) per image.
            method: ``"gradcam"``, ``"gradcam++"`` or ``"scorecam"``.
            tta: flip TTA for the probabilities (None: as the run did; maps are of the
                unmirrored crop).
            out: also write one PNG per image, ``contact_sheet.png`` and
                ``explanations.json`` here (whole or not at all; :mod:`fgvc.deploy.overlays`).
            force: write into a non-empty ``out`` (files of the same names are replaced).
            batch_size: images per pass.
            on_error: ``"raise"`` or ``"skip"`` (skipped images are left out, and listed in
                ``explanations.json``).

        Returns:
            One :class:`~fgvc.deploy.explain.Explanation` per readable image: ``cam``
            (``(S, S)`` float32 in [0, 1]), ``crop`` (``(S, S, 3)`` uint8), ``overlay()``
            (the heat map over the crop), the class, its probability and the top-1;
            ``position`` is the image's index in ``images``.
        """
        _check_on_error(on_error)
        if out is not None:
            from fgvc.deploy.publish import check_destination

            out = Path(out).expanduser().absolute()
            check_destination(out, force, "files of the same names")  # before any work
        items = as_image_list(images)
        targets = _per_image(target, len(items), self.classes)
        kept: list[tuple[int, torch.Tensor]] = []
        errors: list[tuple[Path, str]] = []
        for i, item in enumerate(items):
            crop = prepare_image(self.preprocessing, item, i)
            if isinstance(crop, torch.Tensor):
                kept.append((i, crop))
            elif on_error == "raise":
                raise crop
            else:
                errors.append((Path(image_name(item, i)), one_line(crop)))
        if not kept:
            raise ImageDecodeError(f"none of the {len(items)} images could be read")
        model = self._torch_model()
        explanations = explain_crops(
            model,
            [crop for _, crop in kept],
            [image_name(items[i], i) for i, _ in kept],
            method=method,
            target=[targets[i] for i, _ in kept] if isinstance(targets, list) else targets,
            tta=tta,
            batch_size=batch_size,
        )
        for explanation, (i, _) in zip(explanations, kept):
            explanation.position = i
        if out is not None:
            from fgvc.deploy.overlays import write_explanations

            tta = self.preprocessing.tta if tta is None else tta
            meta = {"model": self.source, "method": method, "tta": tta}
            write_explanations(explanations, out, force, errors, meta)
        return explanations

    # -- inside -------------------------------------------------------------------------
    def _torch_model(self) -> TorchPredictor:
        if self._torch is None:
            device = str(self._device) if self._device.type == "cuda" else "cpu"
            self._torch = load_predictor(self.source, "torch", device)  # type: ignore[assignment]
        return self._torch  # type: ignore[return-value]


def load(
    path: str | os.PathLike,
    device: str = "auto",
    backend: str = "torch",
    runs_root: str | os.PathLike = RUNS_ROOT,
) -> Classifier:
    """A trained network, ready to :meth:`~Classifier.predict` and
    :meth:`~Classifier.explain` (also ``fgvc.load``).

    Args:
        path: an export folder (``fgvc export``, a run's ``export/``), a ``.ckpt`` of
            ``fgvc fit``, a run folder (its best checkpoint), a folder of runs (its newest
            run's best) or ``"best"`` (the newest run under ``runs_root``) - as
            ``fgvc predict --model``.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        backend: ``"torch"`` (default), ``"onnx"`` (ONNX Runtime on the bundle's
            ``model.onnx``: faster on CPUs; :meth:`~Classifier.explain` still runs on
            PyTorch) or ``"auto"`` (ONNX when the bundle has it, as ``fgvc predict``).
        runs_root: where ``"best"`` looks.

    Raises:
        UsageError: nothing usable at ``path``.
        CheckpointError: unreadable or mismatching files.
    """
    return Classifier(load_predictor(path, backend, device, runs_root))


def _per_image(target: Any, count: int, classes: list[str]) -> list[int | None] | int | None:
    """``target`` as class indices: one for every image, or one (or None) per image."""
    if target is None or isinstance(target, (int, str)):
        return None if target is None else resolve_class(target, classes, "target")
    target = list(target)
    if len(target) != count:
        raise UsageError(f"{len(target)} target classes for {count} images")
    return [None if t is None else resolve_class(t, classes, "target") for t in target]


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise UsageError(f"on_error={on_error!r}; choose one of {', '.join(ON_ERROR)}")


def _onnx_device(predictor: Predictor) -> torch.device:
    session = getattr(predictor, "session", None)
    providers = session.get_providers() if session is not None else []
    return torch.device("cuda" if "CUDAExecutionProvider" in providers else "cpu")
