"""Pretrained weights for :class:`~fgvc.models.net.FGVCNet`.

Sources (the ``pretrained`` argument of :func:`fgvc.models.build_model`):

* ``"imagenet"``: the trunk's ImageNet weights for the backbone only (head and classifier stay
  freshly initialized): torchvision's IMAGENET1K_V1 for the torchvision trunks, timm's default
  tag for ``timm/`` ones. ``"imagenet:<name>"`` picks other weights of the trunk (a
  torchvision enum name such as ``IMAGENET1K_V2``, a timm tag), ``"imagenet:<path>"`` a file
  of them in the library's layout (see :mod:`fgvc.models.trunks.weights`).
* ``"isqrt-imagenet"``: the authors' ImageNet iSQRT-COV model (fast-MPN-COV release, ResNet-50
  and -101, reduce_dim 256) from the first source that gives a file that loads: a mirror
  (``FGVC_ISQRT_IMAGENET_URL``, ``FGVC_MIRROR``), the hub cache, the authors' HTTP server,
  their Google Drive copy (:mod:`fgvc.models.authors`).
* a local file: the authors' layout (``conv1.*``, ``layer*``, ``layer_reduce*``, ``fc.*``,
  optionally inside ``{"state_dict": ...}`` and/or with DataParallel's ``module.``), or fgvc's
  own: a state dict of the model, a Lightning checkpoint (``model.`` prefix) or ``.safetensors``.
* a :class:`PretrainedFile`: a file of fgvc's own runs with the network its run or export
  recorded. ``fgvc fit`` (:class:`~fgvc.train.module.FGVCClassifier`) makes one from a run
  folder, an export bundle, a bundle's weights file or a checkpoint of ``fgvc fit``
  (:func:`fgvc.train.pretrained.resolve_pretrained`); the layout of runs and bundles is
  known above this package, which only compares networks.

Pickles are always read with ``torch.load(weights_only=True)``: a checkpoint can carry
tensors and containers, never code. Everything must match the model exactly, except the
classifier, which is kept fresh when the checkpoint has another number of classes. A
:class:`PretrainedFile` is checked against the model before any tensor is read: another trunk
is refused in one line naming both; the same trunk under another head (representation,
``reduce_dim`` or head settings: an ImageNet GAP run fine-tuned as iSQRT-COV) gives the trunk
alone, head and classifier fresh, said in one log line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from fgvc.errors import CheckpointError
from fgvc.models.authors import AUTHORS_CHECKPOINTS, WeightsRecord, fetch_authors_checkpoint
from fgvc.models.backbone import TRUNK_CHILDREN
from fgvc.models.checkpoint import (
    extract_state_dict,
    load_state_dict_checked,
    read_checkpoint,
    strip_wrapper_prefixes,
)
from fgvc.models.net import FGVCNet
from fgvc.models.spec import NetSpec
from fgvc.models.trunks import parse_imagenet, trunk_entry

logger = logging.getLogger(__name__)

#: Names accepted by ``pretrained`` besides local paths.
NAMED_SOURCES = ("imagenet", "isqrt-imagenet")

#: The spec fields that decide the head's weights: any difference loads the trunk alone.
HEAD_FIELDS = ("representation", "reduce_dim", "head")


@dataclass(frozen=True)
class PretrainedFile:
    """A weights file of fgvc's own, with the network its run or export recorded.

    Attributes:
        path: the file read: a checkpoint of ``fgvc fit`` or a bundle's ``model.safetensors``.
        spec: the network that file holds.
        source: how it was found, for ``run.json`` (:class:`WeightsRecord`): ``run``,
            ``checkpoint`` or ``export``.
        given: what ``pretrained`` said, when it named a folder rather than ``path``.
        found: how ``path`` was chosen, in words (for the log line).
        class_names: the classes of its classifier, in label order, where recorded.
    """

    path: Path
    spec: NetSpec
    source: str = "checkpoint"
    given: str | None = None
    found: str = ""
    class_names: tuple[str, ...] | None = None


def head_differences(recorded: NetSpec, model: NetSpec) -> list[str]:
    """``"field <recorded> (now <model>)"`` for each of :data:`HEAD_FIELDS` that differs."""
    return [
        f"{name} {getattr(recorded, name)!r} (now {getattr(model, name)!r})"
        for name in HEAD_FIELDS
        if getattr(recorded, name) != getattr(model, name)
    ]


def check_recorded(weights: PretrainedFile, spec: NetSpec) -> None:
    """Refuse, before reading a tensor, a file whose trunk is not the one ``spec`` builds."""
    recorded = weights.spec
    if recorded.arch != spec.arch:
        where = weights.path if weights.given is None else f"{weights.given} ({weights.path})"
        raise CheckpointError(
            f"pretrained {where} holds a {recorded.arch} network "
            f"({recorded.describe()}), the config builds {spec.arch}: a trunk's weights load "
            f"only into the same trunk; set model.arch: {recorded.arch}, or start from other "
            f"weights"
        )


# The authors' names for the head and classifier -> ours; the trunk keeps torchvision names.
_AUTHORS_RENAMES = (
    ("layer_reduce_bn.", "head.bn."),
    ("layer_reduce.", "head.conv."),
    ("fc.", "classifier."),
) + tuple((f"{name}.", f"backbone.{name}.") for name in TRUNK_CHILDREN)


def convert_authors_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a state dict from the authors' MPNCOVResNet (or a torchvision ResNet) to ours.

    ``conv1/bn1/layer1..4.*`` -> ``backbone.*``, ``layer_reduce.weight`` -> ``head.conv.weight``,
    ``layer_reduce_bn.*`` -> ``head.bn.*``, ``fc.*`` -> ``classifier.*``. Wrapper prefixes
    (DataParallel's ``module.``, torch.compile's ``_orig_mod.``) are removed first. Other
    keys pass through unchanged, so that loading reports them as unexpected instead of
    dropping them silently.
    """
    converted: dict[str, torch.Tensor] = {}
    for key, value in strip_wrapper_prefixes(dict(state_dict)).items():
        for old, new in _AUTHORS_RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        converted[key] = value
    return converted


def is_authors_layout(state_dict: Mapping[str, object]) -> bool:
    """Whether the keys are the authors' (torchvision-style trunk at top level), not ours."""
    return "conv1.weight" in state_dict and not any(k.startswith("backbone.") for k in state_dict)


def check_source(source: str | os.PathLike | PretrainedFile, spec: NetSpec) -> None:
    """Fail early (before building anything) when a source cannot fit ``spec``."""
    if isinstance(source, PretrainedFile):
        check_recorded(source, spec)
        return
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"pretrained must be None, {' or '.join(map(repr, NAMED_SOURCES))}, a path or a "
            f"PretrainedFile, got {type(source).__name__}"
        )
    if source != "isqrt-imagenet":
        return
    if spec.arch not in AUTHORS_CHECKPOINTS:
        raise ValueError(
            f"pretrained='isqrt-imagenet' exists for {', '.join(AUTHORS_CHECKPOINTS)} only, "
            f"not {spec.arch}; use pretrained='imagenet' for torchvision's backbone weights"
        )
    entry = AUTHORS_CHECKPOINTS[spec.arch]
    if spec.representation != "isqrt" or spec.reduce_dim != entry.reduce_dim:
        raise ValueError(
            f"pretrained='isqrt-imagenet' needs representation='isqrt' and "
            f"reduce_dim={entry.reduce_dim} (the authors' model), got "
            f"representation={spec.representation!r}, reduce_dim={spec.reduce_dim}"
        )


def load_pretrained(
    model: FGVCNet, source: str | os.PathLike | PretrainedFile, progress: bool = True
) -> FGVCNet:
    """Load weights from ``source`` into ``model`` in place and return it.

    Args:
        model: a network from :func:`fgvc.models.build_model`.
        source: ``"imagenet"``, ``"isqrt-imagenet"``, a checkpoint path or a
            :class:`PretrainedFile` (see module doc).
        progress: show download progress bars.

    Raises:
        FileNotFoundError: a path that does not exist.
        CheckpointError: an unsafe or mismatching checkpoint, a folder (only ``fgvc fit``
            resolves run and export folders), or another trunk than the model's.
        DownloadError: a download failed (the message names the URL and where to put the
            file by hand) or the checksum did not match.
    """
    check_source(source, model.spec)
    if isinstance(source, PretrainedFile):
        loaded = _load_recorded(model, source)
        model.pretrained_record = WeightsRecord(
            source.source, str(source.path), given=source.given, loaded=loaded
        )
        found = f" ({source.found})" if source.found else ""
        logger.info(
            "loaded pretrained weights for %s/%s from %s%s",
            model.arch,
            model.representation,
            source.path,
            found,
        )
        return model
    imagenet, choice = parse_imagenet(source)
    if imagenet:
        _load_imagenet(model, choice, progress)
    elif isinstance(source, str) and source == "isqrt-imagenet":
        model.pretrained_record = fetch_authors_checkpoint(
            model.arch, lambda path: _load_file(model, path), progress
        )
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            raise CheckpointError(
                f"pretrained {path} is a folder; build_model takes a weights file - a run "
                f"folder or export bundle is resolved to its file by fgvc fit "
                f"(fgvc.train.pretrained.resolve_pretrained)"
            )
        if not path.is_file():
            raise FileNotFoundError(
                f"checkpoint file not found: {path} (pretrained takes a path or one of "
                f"{', '.join(NAMED_SOURCES)})"
            )
        _load_file(model, path)
        model.pretrained_record = WeightsRecord("file", str(path))
    logger.info(
        "loaded pretrained weights for %s/%s from %s", model.arch, model.representation, source
    )
    return model


def _load_file(model: FGVCNet, path: Path) -> None:
    origin = str(path)
    state = extract_state_dict(read_checkpoint(path), origin)
    if is_authors_layout(state):
        state = convert_authors_state_dict(state)
        origin += " (authors'/torchvision layout, keys renamed to fgvc's)"
    load_state_dict_checked(model, state, origin)


def _load_recorded(model: FGVCNet, weights: PretrainedFile) -> str | None:
    """The whole network when its head is the model's (classifier fresh when the class count
    differs), else the trunk alone; returns ``"trunk"`` in that case."""
    origin = str(weights.path)
    # mapped: a checkpoint's optimizer state is never read
    state = extract_state_dict(read_checkpoint(weights.path, mmap=True), origin)
    different = head_differences(weights.spec, model.spec)
    if not different:
        load_state_dict_checked(model, state, origin)
        return None
    trunk = {k: v for k, v in state.items() if k.startswith("backbone.")}
    load_state_dict_checked(model, trunk, origin, scope="backbone.")
    logger.warning(
        "%s: loaded the trunk only (backbone.*): its head differs from the model's (%s); "
        "head and classifier freshly initialized",
        origin,
        ", ".join(different),
    )
    return "trunk"


def _load_imagenet(model: FGVCNet, choice: str | None, progress: bool) -> None:
    """The trunk's ImageNet weights into ``model.backbone`` (its entry knows where they are
    and how they load; the library's classifier is dropped)."""
    trunk_entry(model.arch).load_imagenet(model.backbone, choice, progress)
