"""Pretrained weights for :class:`~fgvc.models.net.FGVCNet`.

Sources (the ``pretrained`` argument of :func:`fgvc.models.build_model`):

* ``"imagenet"``: the trunk's ImageNet weights for the backbone only (head and classifier stay
  freshly initialized): torchvision's IMAGENET1K_V1 for the torchvision trunks, timm's default
  tag for ``timm/`` ones. ``"imagenet:<name>"`` picks other weights of the trunk (a
  torchvision enum name such as ``IMAGENET1K_V2``, a timm tag), ``"imagenet:<path>"`` a file
  of them in the library's layout (see :mod:`fgvc.models.trunks.weights`).
* ``"isqrt-imagenet"``: the authors' ImageNet iSQRT-COV model (fast-MPN-COV release, ResNet-50
  and -101, reduce_dim 256), downloaded once into ``<torch.hub.get_dir()>/checkpoints`` with
  its sha256 prefix checked (resumed after dropped connections; one download when DDP ranks
  start together). A file already there under its name (``mpncovresnet50-15991845.pth``) is
  used. ``FGVC_ISQRT_IMAGENET_URL`` replaces the authors' server: a folder URL ending in
  ``/`` that holds the files under their names, or one file's full URL; ``FGVC_MIRROR`` is
  the folder for all fgvc downloads (see :mod:`fgvc.utils.download`).
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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

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
from fgvc.utils.download import DownloadError, download_url, env_var, resolve_url

logger = logging.getLogger(__name__)

#: Names accepted by ``pretrained`` besides local paths.
NAMED_SOURCES = ("imagenet", "isqrt-imagenet")

AUTHORS_BASE_URL = "http://jtxie.com/models/"
#: Its README links Google Drive and Baidu copies of the ImageNet checkpoints.
AUTHORS_REPO = "https://github.com/jiangtaoxie/fast-MPN-COV"
#: The variable that overrides :data:`AUTHORS_BASE_URL` (``FGVC_ISQRT_IMAGENET_URL``).
AUTHORS_URL_ENV = env_var("isqrt-imagenet")


@dataclass(frozen=True)
class AuthorsCheckpoint:
    """One published iSQRT-COV checkpoint in the authors' layout.

    Attributes:
        url: where it is downloaded from.
        filename: its name in the hub cache (``<name>-<sha256 prefix>.pth``).
        sha256_prefix: the start of the file's sha256 (torch.hub's convention).
        num_classes: classes of its ``fc``.
        reduce_dim: channels after its 1x1 reduction (the covariance size).
    """

    url: str
    filename: str
    sha256_prefix: str
    num_classes: int = 1000
    reduce_dim: int = 256


def _authors(filename: str) -> AuthorsCheckpoint:
    prefix = filename.rsplit("-", 1)[1].split(".", 1)[0]
    return AuthorsCheckpoint(AUTHORS_BASE_URL + filename, filename, prefix)


#: ``"isqrt-imagenet"`` checkpoints by arch. One dict so tests (and mirrors) can repoint it.
AUTHORS_CHECKPOINTS: dict[str, AuthorsCheckpoint] = {
    "resnet50": _authors("mpncovresnet50-15991845.pth"),  # top-1 error 21.71
    "resnet101": _authors("mpncovresnet101-ade9737a.pth"),  # top-1 error 20.99
}

# The authors' names for the head and classifier -> ours; the trunk keeps torchvision names.
_AUTHORS_RENAMES = (
    ("layer_reduce_bn.", "head.bn."),
    ("layer_reduce.", "head.conv."),
    ("fc.", "classifier."),
) + tuple((f"{name}.", f"backbone.{name}.") for name in TRUNK_CHILDREN)


def hub_checkpoint_dir() -> Path:
    """``<torch.hub.get_dir()>/checkpoints``, where torchvision caches its weights too."""
    return Path(torch.hub.get_dir()) / "checkpoints"


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
    imagenet, choice = parse_imagenet(source)
    if imagenet:
        _load_imagenet(model, choice, progress)
    elif isinstance(source, str) and source == "isqrt-imagenet":
        entry = AUTHORS_CHECKPOINTS[model.arch]
        dest = hub_checkpoint_dir() / entry.filename
        url = resolve_url("isqrt-imagenet", entry.url, entry.filename)
        try:
            download_url(url, dest, sha256_prefix=entry.sha256_prefix, progress=progress)
        except DownloadError as err:
            # One line with every way forward. Their Drive/Baidu copies need not be this very
            # file (the sha256 check would refuse them in the cache), so they go by path.
            raise DownloadError(
                f"{err}. Other ways to the authors' iSQRT-COV {model.arch} ImageNet weights: "
                f"download their Google Drive or Baidu copy (links in the README of "
                f"{AUTHORS_REPO}) and set `pretrained: /path/to/that/file` (their .pth/.pth.tar "
                f"files load as they are); set {AUTHORS_URL_ENV} to a mirror folder URL "
                f"holding {entry.filename}; or use `pretrained: imagenet` (torchvision's "
                f"ImageNet backbone weights, head trained from scratch: expect accuracy a few "
                f"points lower)"
            ) from err
        _load_file(model, dest)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"checkpoint file not found: {path} (pretrained takes a path or one of "
                f"{', '.join(NAMED_SOURCES)})"
            )
        _load_file(model, path)
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


def _load_imagenet(model: FGVCNet, choice: str | None, progress: bool) -> None:
    """The trunk's ImageNet weights into ``model.backbone`` (its entry knows where they are
    and how they load; the library's classifier is dropped)."""
    trunk_entry(model.arch).load_imagenet(model.backbone, choice, progress)
