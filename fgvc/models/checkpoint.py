"""Reading checkpoints safely and loading their weights strictly: the one reader every
checkpoint, state dict and ``.safetensors`` file goes through.

* :func:`read_checkpoint`: ``torch.load(weights_only=True)`` (never runs code from the file)
  or safetensors; a file that is not a checkpoint is one line naming it.
* :func:`extract_state_dict`: the network's tensors, unwrapped from Lightning / DDP /
  ``torch.compile`` layouts.
* :func:`load_state_dict_checked`: keys, shapes and finiteness checked, every mismatch listed.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from fgvc.errors import CheckpointError

logger = logging.getLogger(__name__)

# Prefixes that wrappers add to every key: DataParallel/DDP, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

# Longest key lists printed in a mismatch error.
_MAX_LISTED = 10


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
    state = strip_wrapper_prefixes(state)
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{origin}: expected a mapping of tensors; non-tensor entries: {_listing(bad)}"
        )
    return state


def strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the prefixes DataParallel/DDP and torch.compile put on every key."""
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
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    origin: str,
    scope: str | None = None,
) -> None:
    """Load ``state_dict`` into ``model`` with strict key and shape checks.

    Args:
        model: an :class:`~fgvc.models.net.FGVCNet` (keys ``backbone.*``, ``head.*``,
            ``classifier.*``; its ``spec`` and ``feature_dim`` name it in messages).
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
