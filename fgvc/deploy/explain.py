"""Class activation maps: where in an image a trained network found the evidence for a class.

Computed with the ``grad-cam`` library (``pytorch_grad_cam``, MIT) on the image exactly as
evaluation prepares it (:meth:`EvalPreprocessing.load <fgvc.data.preprocessing.
EvalPreprocessing.load>`: the crop the network saw), for the predicted class or a chosen one.
Methods: ``gradcam`` (default), ``gradcam++`` and ``scorecam`` (gradient-free, one forward
pass per channel of the target layer: 512 for ResNet-18/34, 2048 for ResNet-50 and up).

Target layer: the trunk's last layer (its ``cam_layer``: ``backbone.layer4`` for ResNet, the
map the head pools for every trunk), for every head. With iSQRT-COV
the layers after it are the head's 1x1 reduction, BatchNorm and ReLU, then covariance pooling.
Grad-CAM weighs each channel by the spatial mean of the class score's gradient, and on the
reduced features ``Y`` that mean is identically zero: the score is a function of the centred
covariance, so ``ds/dY_i = (2/M) G (Y_i - mu)`` (``G = ds/dSigma``, symmetric), whose sum over
the M positions vanishes (see :func:`fgvc.ops.covariance.covariance_backward`). There the
weights are rounding error (1e-7 of the gradients' size) and the map is arbitrary: in the
quadrant test it holds 0% of its mass in the quadrant with the evidence for some images, 62%
on average. Before the reduction, the ReLU's per-position mask breaks the cancellation, and
layer4 keeps the trunk's full channels at its finest stride (16 with iSQRT-COV's last stride
1): 82% there on average, 25% being chance (``tests/test_explain_quadrant.py``). The map says
where the features the covariance was built from came from, not which pairs of them the
classifier weighed.

Geometry: the library upsamples with a plain resize, which puts cell ``j`` at the middle of
pixels ``[16 j, 16 j + 16)``; a ResNet's cell ``j`` is centred on pixel ``16 j``
(:func:`cell_centres`, which asks the trunk: :mod:`fgvc.models.trunks.geometry`), so its maps
sit 7.5 px (15.5 px at stride 32) down and right of the evidence (72% in that test instead of
82%). Maps here are taken at the layer's resolution and
upsampled between the true centres (:func:`upsample_aligned`).

Probabilities are computed as ``fgvc predict`` computes them (flip TTA as the bundle says
unless told otherwise), so captions agree with it; the map itself is of the unmirrored view.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from fgvc.data.files import display_path
from fgvc.data.preprocessing import EvalPreprocessing
from fgvc.data.transforms import hflip_tta
from fgvc.deploy.outputs import escape_controls
from fgvc.deploy.predict import load_or_reason
from fgvc.errors import UsageError

#: ``--method`` names and the ``pytorch_grad_cam`` class each one uses.
METHODS: dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "scorecam": "ScoreCAM",
}
#: The target layer of a ResNet network (every trunk names its own: :func:`target_layer_name`).
TARGET_LAYER = "backbone.layer4"
_SCORECAM_BATCH = 32  # masked copies of an image per forward pass


class Explainable(Protocol):
    """What is explained: a :class:`~fgvc.deploy.bundle.Bundle` or a torch predictor."""

    net: torch.nn.Module
    class_names: list[str]
    preprocessing: EvalPreprocessing


@dataclass
class Explanation:
    """The class activation map of one image.

    Attributes:
        image: the image file.
        crop: ``(S, S, 3)`` ``uint8`` RGB: the evaluation crop, what the network saw.
        cam: ``(S, S)`` ``float32`` map over ``crop``, scaled to [0, 1] (all 0: no positive
            evidence for the class at the target layer).
        class_index, class_name, probability: the explained class and its probability.
        top1_index, top1_name, top1_probability: the predicted class (the explained one unless
            another was asked for).
        method: a key of :data:`METHODS`.
        position: the image's index in the list given to :func:`explain_images`.
        target_layer: the layer the map was computed on (:func:`target_layer_name`).
    """

    image: str
    crop: np.ndarray
    cam: np.ndarray
    class_index: int
    class_name: str
    probability: float
    top1_index: int
    top1_name: str
    top1_probability: float
    method: str
    position: int = 0
    target_layer: str = TARGET_LAYER

    @property
    def caption_lines(self) -> list[str]:
        """The class and its probability; the prediction if it differs; the file name
        (control characters escaped: one line each)."""
        lines = [f"{self.class_name}  p={self.probability:.3f}"]
        if self.top1_index != self.class_index:
            lines.append(f"top-1: {self.top1_name}  p={self.top1_probability:.3f}")
        if not self.cam.any():
            lines.append(f"{self.method}: no positive evidence")
        lines.append(display_path(Path(self.image).name))
        return [escape_controls(line) for line in lines]

    @property
    def caption(self) -> str:
        return " | ".join(self.caption_lines)

    def overlay(self, image_weight: float = 0.5) -> np.ndarray:
        """``(S, S, 3)`` ``uint8`` RGB: the map as a JET heat map blended over the crop."""
        from pytorch_grad_cam.utils.image import show_cam_on_image

        crop = self.crop.astype(np.float32) / 255.0
        return show_cam_on_image(crop, self.cam, use_rgb=True, image_weight=image_weight)


def resolve_class(value: str | int, class_names: Sequence[str]) -> int:
    """A class index from a class name or an index (a name wins where both could match).

    Raises:
        UsageError: neither a class name nor an index in range.
    """
    if isinstance(value, str) and value in class_names:
        return list(class_names).index(value)
    try:
        index = int(value)
    except (TypeError, ValueError):
        index = None
    if index is not None and 0 <= index < len(class_names):
        return index
    shown = ", ".join(repr(n) for n in class_names[:5])
    more = f", ... ({len(class_names)} classes)" if len(class_names) > 5 else ""
    raise UsageError(
        f"--class {value!r} is not a class of this model; give a class name ({shown}{more}) "
        f"or an index from 0 to {len(class_names) - 1}"
    )


def target_layer_name(net: torch.nn.Module) -> str:
    """``backbone.<the trunk's cam_layer>``: the layer whose output the head pools."""
    return f"backbone.{net.get_submodule('backbone').cam_layer}"


def target_layer(net: torch.nn.Module) -> torch.nn.Module:
    """The layer the maps are computed on (see the module doc)."""
    return net.get_submodule(target_layer_name(net))


def _cam_class(method: str) -> Any:
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    import pytorch_grad_cam

    base = getattr(pytorch_grad_cam, METHODS[method])

    class AtFeatureResolution(base):  # type: ignore[misc, valid-type]
        """The library's map, normalized but left at the target layer's resolution: its
        own upsampling (cv2.resize) puts cell j at the centre of the j-th block of pixels,
        half a cell away from where the cell looks (see :func:`cell_centres`)."""

        def get_target_width_height(self, input_tensor: torch.Tensor) -> tuple[int, int]:
            height, width = self.activations_and_grads.activations[0].shape[-2:]
            return width, height

    return AtFeatureResolution


def cell_centres(
    backbone: torch.nn.Module, size: tuple[int, int] | None = None
) -> tuple[int, float]:
    """``(stride, offset)``: cell ``j`` of the trunk's output map is centred on input pixel
    ``offset + stride * j`` (pixel indices), from the kernels, strides and paddings along
    its main path (:func:`fgvc.models.trunks.geometry.measure_cell_centres`) for an input of
    ``size`` (default: one every stride of the trunk divides). For torchvision ResNets
    ``offset`` is 0: each strided layer centres its output ``j`` on input ``2 j`` (a 3x3
    kernel, padding 1), not on the middle of the ``2j, 2j+1`` pair - over 16 px of stride the
    centre is 7.5 px from a plain resize's.
    """
    side = 8 * backbone.stride
    return backbone.cell_centres(size or (side, side))


def _interpolation(cells: int, pixels: int, stride: int, offset: float) -> np.ndarray:
    """``(pixels, cells)`` linear interpolation weights: pixel ``x`` between the cells
    centred around it, the border cell's value beyond the outermost centres."""
    where = np.clip((np.arange(pixels) - offset) / stride, 0, cells - 1)
    low = np.floor(where).astype(int)
    high = np.minimum(low + 1, cells - 1)
    weights = np.zeros((pixels, cells))
    np.add.at(weights, (np.arange(pixels), low), 1 - (where - low))
    np.add.at(weights, (np.arange(pixels), high), where - low)
    return weights


def upsample_aligned(
    maps: np.ndarray, size: tuple[int, int], stride: int, offset: float = 0.0
) -> np.ndarray:
    """``(N, h, w)`` cell maps -> ``(N, H, W)`` pixel maps, bilinear between cell centres
    (cell ``j`` at pixel ``offset + stride * j``)."""
    rows = _interpolation(maps.shape[1], size[0], stride, offset)
    cols = _interpolation(maps.shape[2], size[1], stride, offset)
    return np.einsum("yh,nhw,xw->nyx", rows, maps, cols).astype(np.float32)


def compute_cams(
    net: torch.nn.Module, batch: torch.Tensor, classes: Sequence[int], method: str = "gradcam"
) -> np.ndarray:
    """``(N, H, W)`` maps in [0, 1] of ``classes[i]`` for each normalized input ``batch[i]``,
    aligned with the pixels each cell of the target layer is centred on."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = _cam_class(method)(net, [target_layer(net)])
    if method == "scorecam":
        cam.batch_size = _SCORECAM_BATCH
    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    # ScoreCAM draws a progress bar per image on stderr; fgvc shows its own
    quiet = contextlib.redirect_stderr(io.StringIO()) if method == "scorecam" else None
    try:
        # gradients are needed even if the caller runs under no_grad / inference_mode
        with torch.inference_mode(False), torch.enable_grad(), quiet or contextlib.nullcontext():
            maps = cam(input_tensor=batch, targets=targets)
    finally:
        cam.activations_and_grads.release()  # remove its hooks from the network
        net.zero_grad(set_to_none=True)
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float64), nan=0.0)
    stride, offset = cell_centres(net.get_submodule("backbone"), tuple(batch.shape[-2:]))
    return upsample_aligned(maps, tuple(batch.shape[-2:]), stride, offset)


def _classes_for(
    target: int | str | Sequence[int | str | None] | None, count: int, names: Sequence[str]
) -> list[int | None]:
    if target is None or isinstance(target, (int, str)):
        index = None if target is None else resolve_class(target, names)
        return [index] * count
    if len(target) != count:
        raise UsageError(f"{len(target)} target classes for {count} images")
    return [None if t is None else resolve_class(t, names) for t in target]


def explain_images(
    model: Explainable,
    images: Sequence[str | os.PathLike],
    method: str = "gradcam",
    target: int | str | Sequence[int | str | None] | None = None,
    tta: bool | None = None,
    batch_size: int = 8,
    on_error: Callable[[Path, str], None] | None = None,
    progress: bool | None = None,
) -> tuple[list[Explanation], list[tuple[Path, str]]]:
    """Class activation maps of image files, in order; unreadable files are skipped.

    Args:
        model: a :class:`~fgvc.deploy.bundle.Bundle` (or anything with ``net``,
            ``class_names`` and ``preprocessing``), on any device.
        images: image files.
        method: a key of :data:`METHODS`.
        target: None (each image's predicted class), a class name or index for every image,
            or one such value (or None) per image.
        tta: flip TTA for the probabilities (None: as the model was evaluated).
        batch_size: images per pass.
        on_error: called with ``(path, message)`` for each unreadable image.
        progress: a progress bar on stderr (None: when stderr is a terminal).

    Returns:
        ``(explanations, errors)``; ``errors`` holds ``(path, one-line message)``.

    Raises:
        UsageError: an unknown method or class.
    """
    from tqdm import tqdm

    _cam_class(method)
    paths = [Path(p) for p in images]
    classes = _classes_for(target, len(paths), model.class_names)
    prep, net = model.preprocessing, model.net.eval()
    tta = prep.tta if tta is None else tta
    device = next(net.parameters()).device
    explanations: list[Explanation] = []
    errors: list[tuple[Path, str]] = []
    disable = None if progress is None else not progress
    bar = tqdm(total=len(paths), unit="img", file=sys.stderr, disable=disable, desc=method)
    try:
        for start in range(0, len(paths), max(1, batch_size)):
            good: list[tuple[int, Path, torch.Tensor, int | None]] = []
            for i in range(start, min(start + batch_size, len(paths))):
                path = paths[i]
                loaded = load_or_reason(prep, path)
                if isinstance(loaded, torch.Tensor):
                    good.append((i, path, loaded, classes[i]))
                    continue
                errors.append((path, loaded))
                if on_error is not None:
                    bar.clear()
                    on_error(path, loaded)
            if good:
                explanations += _explain_batch(net, prep, good, tta, device, method, model)
            bar.update(min(batch_size, len(paths) - start))
    finally:
        bar.close()
    return explanations, errors


def explain_crops(
    model: Explainable,
    crops: Sequence[torch.Tensor],
    names: Sequence[str],
    method: str = "gradcam",
    target: int | str | Sequence[int | str | None] | None = None,
    tta: bool | None = None,
    batch_size: int = 8,
) -> list[Explanation]:
    """Class activation maps of images already prepared for the network: ``(3, S, S)``
    ``uint8`` crops from :meth:`EvalPreprocessing.prepare
    <fgvc.data.preprocessing.EvalPreprocessing.prepare>` or ``load``. ``names[i]`` stands
    for crop ``i`` in captions and file names; the other arguments are those of
    :func:`explain_images`.

    Raises:
        UsageError: an unknown method or class, or as many names as crops.
    """
    _cam_class(method)
    if len(names) != len(crops):
        raise UsageError(f"{len(names)} names for {len(crops)} images")
    classes = _classes_for(target, len(crops), model.class_names)
    prep, net = model.preprocessing, model.net.eval()
    tta = prep.tta if tta is None else tta
    device = next(net.parameters()).device
    good = [(i, Path(n), c, t) for i, (n, c, t) in enumerate(zip(names, crops, classes))]
    explanations: list[Explanation] = []
    for start in range(0, len(good), max(1, batch_size)):
        chunk = good[start : start + max(1, batch_size)]
        explanations += _explain_batch(net, prep, chunk, tta, device, method, model)
    return explanations


def _explain_batch(
    net: torch.nn.Module,
    prep: EvalPreprocessing,
    good: list[tuple[int, Path, torch.Tensor, int | None]],
    tta: bool,
    device: torch.device,
    method: str,
    model: Explainable,
) -> list[Explanation]:
    batch = prep.batch([x for _, _, x, _ in good]).to(device)
    with torch.no_grad():  # as fgvc predict: logits (flip-averaged with tta), softmax in fp32
        logits = hflip_tta(net, batch) if tta else net(batch)
    probs = logits.detach().cpu().float().softmax(-1)
    top1 = probs.argmax(-1).tolist()
    chosen = [top if wanted is None else wanted for (*_, wanted), top in zip(good, top1)]
    maps = compute_cams(net, batch, chosen, method)
    names = model.class_names
    return [
        Explanation(
            image=str(path),
            crop=crop.permute(1, 2, 0).numpy().copy(),
            cam=cam,
            class_index=c,
            class_name=names[c],
            probability=float(p[c]),
            top1_index=t,
            top1_name=names[t],
            top1_probability=float(p[t]),
            method=method,
            position=i,
            target_layer=target_layer_name(net),
        )
        for (i, path, crop, _), cam, c, t, p in zip(good, maps, chosen, top1, probs)
    ]
