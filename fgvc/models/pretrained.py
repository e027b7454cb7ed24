"""Pretrained weights for :class:`~fgvc.models.net.FGVCNet`.

Sources (the ``pretrained`` argument of :func:`fgvc.models.build_model`):

* ``"imagenet"``: torchvision's ImageNet weights (IMAGENET1K_V1) for the backbone only (head
  and classifier stay freshly initialized); torchvision's ``fc`` is dropped.
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
import pickle
import urllib.error
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from fgvc.errors import CheckpointError
from fgvc.models.backbone import TRUNK_CHILDREN, imagenet_weights
from fgvc.models.net import FGVCNet
from fgvc.models.spec import NetSpec
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

# Prefixes that wrappers add to every key: DataParallel/DDP, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

# Longest key lists printed in a mismatch error.
_MAX_LISTED = 10


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
    for key, value in _strip_wrapper_prefixes(dict(state_dict)).items():
        for old, new in _AUTHORS_RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        converted[key] = value
    return converted


def is_authors_layout(state_dict: Mapping[str, object]) -> bool:
    """Whether the keys are the authors' (torchvision-style trunk at top level), not ours."""
    return "conv1.weight" in state_dict and not any(k.startswith("backbone.") for k in state_dict)


def read_checkpoint(path: str | os.PathLike, mmap: bool = False) -> Mapping[str, object]:
    """Read a checkpoint file without running any code from it.

    ``.safetensors`` goes through ``safetensors.torch.load_file``; anything else through
    ``torch.load(map_location="cpu", weights_only=True)``. ``mmap=True`` maps the tensors'
    bytes instead of reading them (zip-format files; older ones are read in full).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the pickle holds something other than tensors and containers, or
            the file is truncated or not a checkpoint at all.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        mmap = mmap and zipfile.is_zipfile(path)  # torch cannot map the legacy format
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "global" in text.lower():  # a class or function: code the file wants to run
            reason = next((line.strip() for line in text.splitlines() if "global" in line), "")
            raise CheckpointError(
                f"refused to load {path}: it holds objects other than tensors and containers, "
                f"and fgvc only reads checkpoints with torch.load(weights_only=True), which never "
                f"runs code from the file ({reason[:160]}). Re-save it as a state dict "
                f"(torch.save(model.state_dict(), f)) or as .safetensors."
            ) from err
        raise _not_a_checkpoint(path) from err
    except (EOFError, KeyError, RuntimeError, ValueError, SafetensorError) as err:  # truncated
        if zipfile.is_zipfile(path) and not _torch_zip(path):  # a zip of other files
            raise _not_a_checkpoint(path) from err
        detail = str(err).strip().splitlines()[0][:120] if str(err).strip() else "no detail"
        raise CheckpointError(
            f"cannot read {path} as a checkpoint ({type(err).__name__}: {detail}); it is "
            f"truncated or not a checkpoint file: {_EXPECTED}"
        ) from err
    except (OSError, MemoryError):  # reading failed, or no memory: not about the contents
        raise
    except Exception as err:  # noqa: BLE001
        # the unpickler meets foreign bytes (a text file, a RAR) with any error: IndexError...
        raise _not_a_checkpoint(path) from err


_EXPECTED = (
    "give a checkpoint of fgvc fit, a state dict saved with torch.save, or a .safetensors file"
)


def _torch_zip(path: Path) -> bool:
    """Whether a zip file has torch.save's layout (``<name>/data.pkl``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _not_a_checkpoint(path: Path) -> CheckpointError:
    return CheckpointError(
        f"cannot read {path}: it is not a checkpoint (neither torch.save nor safetensors "
        f"wrote it - a text file, an archive, random bytes or another format); {_EXPECTED}"
    )


def extract_state_dict(checkpoint: object, origin: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, unwrapped to model keys.

    Handles ``{"state_dict": ...}`` (Lightning, many training scripts), a Lightning module's
    ``model.`` prefix (fgvc's LightningModule holds the network as ``model``; its other
    entries are skipped) and the prefixes DataParallel/DDP and torch.compile add.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{origin}: expected a state dict, got {type(checkpoint).__name__}")
    inner = checkpoint.get("state_dict")
    state = dict(inner if isinstance(inner, Mapping) else checkpoint)
    if any(isinstance(k, str) and k.startswith("model.") for k in state):
        skipped = [k for k in state if not k.startswith("model.")]
        if skipped:
            logger.info("%s: ignoring %d entries outside 'model.'", origin, len(skipped))
        state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    state = _strip_wrapper_prefixes(state)
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{origin}: expected a mapping of tensors; non-tensor entries: {_listing(bad)}"
        )
    return state


def _strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed and state:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(isinstance(k, str) and k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    more = len(keys) - _MAX_LISTED
    return f"{shown} ... and {more} more" if more > 0 else shown


def load_state_dict_checked(
    model: FGVCNet,
    state_dict: Mapping[str, torch.Tensor],
    origin: str,
    scope: str | None = None,
) -> None:
    """Load ``state_dict`` into ``model`` with strict key and shape checks.

    Args:
        model: the network (keys ``backbone.*``, ``head.*``, ``classifier.*``).
        state_dict: tensors in our key layout.
        origin: the file or source, for messages.
        scope: only the model's keys with this prefix are expected (e.g. ``"backbone."``);
            the rest keep their current values.

    The classifier is skipped (and reset, with one log line) when the checkpoint has another
    number of classes. Missing ``num_batches_tracked`` counters are tolerated: checkpoints
    from PyTorch < 0.4 lack them and they do not affect the outputs.

    Raises:
        CheckpointError: missing or unexpected keys, or shape mismatches (all listed), or
            non-finite weights.
    """
    own = model.state_dict()
    expected = {k: v for k, v in own.items() if scope is None or k.startswith(scope)}
    state = dict(state_dict)

    weight = state.get("classifier.weight")
    own_weight = expected.get("classifier.weight")
    if (
        weight is not None
        and own_weight is not None
        and weight.dim() == 2
        and weight.shape[1:] == own_weight.shape[1:]
        and weight.shape[0] != own_weight.shape[0]
    ):
        logger.warning(
            "%s: classifier has %d classes, the model %d: classifier freshly initialized, "
            "all other weights loaded",
            origin,
            weight.shape[0],
            own_weight.shape[0],
        )
        for key in ("classifier.weight", "classifier.bias"):
            state.pop(key, None)
            expected.pop(key, None)
        model.classifier.reset_parameters()

    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (checkpoint {tuple(v.shape)}, model {tuple(expected[k].shape)})"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {_listing(mismatched)}")
        raise CheckpointError(
            f"{origin} does not match the model ({model.spec.describe()}, "
            f"feature_dim={model.feature_dim}); " + "; ".join(parts)
        )
    broken = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if broken:  # a diverged run's weights: every output would be NaN
        raise CheckpointError(
            f"{origin} holds non-finite weights (NaN or inf) in {len(broken)} tensor(s): "
            f"{_listing(broken)}; its training diverged - use an earlier checkpoint"
        )
    # Keys and shapes are checked above; strict=False only lets scope and the skipped
    # classifier/counters keep their current values.
    model.load_state_dict(state, strict=False)


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
