"""Pretrained weights for :class:`~fgvc.models.net.FGVCNet`.

Sources (the ``pretrained`` argument of :func:`fgvc.models.build_model`):

* ``"imagenet"``: torchvision's ImageNet weights (IMAGENET1K_V1) for the backbone only (head
  and classifier stay freshly initialized); torchvision's ``fc`` is dropped.
* ``"isqrt-imagenet"``: the authors' ImageNet iSQRT-COV model (fast-MPN-COV release, ResNet-50
  and -101, reduce_dim 256) from the first source that gives a file that loads: a mirror
  (``FGVC_ISQRT_IMAGENET_URL``, ``FGVC_MIRROR``), the hub cache, the authors' HTTP server,
  their Google Drive copy (:mod:`fgvc.models.authors`).
* a local file: the authors' layout (``conv1.*``, ``layer*``, ``layer_reduce*``, ``fc.*``,
  optionally inside ``{"state_dict": ...}`` and/or with DataParallel's ``module.``), or fgvc's
  own: a state dict of the model, a Lightning checkpoint (``model.`` prefix) or ``.safetensors``.

Pickles are always read with ``torch.load(weights_only=True)``: a checkpoint can carry
tensors and containers, never code. Everything must match the model exactly, except the
classifier, which is kept fresh when the checkpoint has another number of classes.
"""

from __future__ import annotations

import logging
import os
import pickle
import urllib.error
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch

from fgvc.errors import CheckpointError
from fgvc.models.authors import (
    AUTHORS_CHECKPOINTS,
    WeightsRecord,
    fetch_authors_checkpoint,
    hub_checkpoint_dir,
)
from fgvc.models.backbone import TRUNK_CHILDREN, imagenet_weights
from fgvc.models.checkpoint import (
    extract_state_dict,
    load_state_dict_checked,
    read_checkpoint,
    strip_wrapper_prefixes,
)
from fgvc.models.net import FGVCNet
from fgvc.models.spec import NetSpec
from fgvc.utils.download import DownloadError

logger = logging.getLogger(__name__)

#: Names accepted by ``pretrained`` besides local paths.
NAMED_SOURCES = ("imagenet", "isqrt-imagenet")

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


def check_source(source: str | os.PathLike, spec: NetSpec) -> None:
    """Fail early (before building anything) when a named source cannot fit ``spec``."""
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"pretrained must be None, {' or '.join(map(repr, NAMED_SOURCES))} or a path, "
            f"got {type(source).__name__}"
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


def load_pretrained(model: FGVCNet, source: str | os.PathLike, progress: bool = True) -> FGVCNet:
    """Load weights from ``source`` into ``model`` in place and return it.

    Args:
        model: a network from :func:`fgvc.models.build_model`.
        source: ``"imagenet"``, ``"isqrt-imagenet"`` or a checkpoint path (see module doc).
        progress: show download progress bars.

    Raises:
        FileNotFoundError: a path that does not exist.
        CheckpointError: an unsafe or mismatching checkpoint.
        DownloadError: a download failed (the message names the URL and where to put the
            file by hand) or the checksum did not match.
    """
    check_source(source, model.spec)
    if isinstance(source, str) and source == "imagenet":
        _load_torchvision_imagenet(model, progress)
    elif isinstance(source, str) and source == "isqrt-imagenet":
        model.pretrained_record = fetch_authors_checkpoint(
            model.arch, lambda path: _load_file(model, path), progress
        )
    else:
        path = Path(source).expanduser()
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


def _load_torchvision_imagenet(model: FGVCNet, progress: bool) -> None:
    weights = imagenet_weights(model.arch)
    cached = hub_checkpoint_dir() / os.path.basename(urlparse(weights.url).path)
    was_cached = cached.is_file()
    try:
        state = weights.get_state_dict(progress=progress, check_hash=True, weights_only=True)
    except (urllib.error.URLError, OSError, RuntimeError, pickle.UnpicklingError) as err:
        if was_cached:
            raise CheckpointError(
                f"could not load torchvision's cached ImageNet weights {cached} ({err}); "
                f"delete the file to download it again from {weights.url}"
            ) from err
        raise DownloadError(
            f"could not download torchvision's ImageNet weights for {model.arch} from "
            f"{weights.url} ({getattr(err, 'reason', err)}); without network, fetch it "
            f"elsewhere and put it at {cached}"
        ) from err
    # torchvision's fc is its 1000-class ImageNet classifier; ours starts fresh.
    backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
    load_state_dict_checked(
        model, convert_authors_state_dict(backbone), f"torchvision {weights}", scope="backbone."
    )
