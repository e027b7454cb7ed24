"""An export bundle: a folder that describes, holds and rebuilds one trained network.

Layout::

    <bundle>/
        model.json            what the network is and how to feed it (below)
        model.safetensors     the weights (backbone.*, head.*, classifier.*)
        model.onnx, ...       the other formats asked for (:mod:`fgvc.deploy.formats`)

``model.json`` (format ``fgvc-export``, version 2): ``net`` (the
:class:`~fgvc.models.NetSpec`), ``class_names``, ``preprocessing`` (the
:class:`~fgvc.data.preprocessing.EvalPreprocessing`, with its resize policy in words),
``checkpoint`` (file, epoch, step, monitored metric and score), ``files`` (format key ->
file name), one entry per format (``weights``, ``onnx``, ``pt2``, ...) with what its exporter
reports and its verification against PyTorch, and the fgvc and torch versions. :func:`load`
rebuilds the network from it.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import fgvc
from fgvc.data.files import confusable_message, confusable_names
from fgvc.data.preprocessing import EvalPreprocessing
from fgvc.errors import CheckpointError
from fgvc.models import FGVCNet, NetSpec, build_model, load_state_dict_checked, read_checkpoint
from fgvc.runs import FitCheckpoint

logger = logging.getLogger(__name__)

CONFIG_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
BUNDLE_FORMAT = "fgvc-export"
BUNDLE_VERSION = 2


@dataclass
class Bundle:
    """A loaded bundle (or a checkpoint read the same way).

    Attributes:
        net: the network, in eval mode on the CPU.
        class_names: names in label order.
        preprocessing: how to turn image files into its input.
        config: ``model.json`` as read (for a checkpoint: what the export would write).
        source: the bundle folder or checkpoint file.
    """

    net: FGVCNet
    class_names: list[str]
    preprocessing: EvalPreprocessing
    config: dict[str, Any]
    source: Path

    @property
    def spec(self) -> NetSpec:
        return self.net.spec


def describe(
    spec: NetSpec,
    class_names: list[str],
    preprocessing: EvalPreprocessing,
    ckpt: FitCheckpoint | None = None,
) -> dict[str, Any]:
    """``model.json`` without its ``files`` and format entries."""
    config: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "fgvc_version": fgvc.__version__,
        "torch_version": torch.__version__,
        "net": spec.to_dict(),
        "class_names": list(class_names),
        "preprocessing": preprocessing.to_dict(),
    }
    if ckpt is not None:
        monitor = ckpt.monitor or {}
        config["checkpoint"] = {
            "file": ckpt.path.name,
            "path": str(ckpt.path.resolve()),
            "epoch": ckpt.epoch,
            "global_step": ckpt.global_step,
            "monitor": monitor.get("monitor"),
            # the monitored value of these weights (None: not recorded, e.g. last.ckpt),
            # and the run's best when it was saved
            "score": ckpt.own_score(),
            "best_score": ckpt.score("best_model_score"),
        }
    return config


def save_weights(net: nn.Module, path: str | os.PathLike) -> None:
    """The state dict as safetensors (contiguous CPU tensors, fgvc version in the metadata)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt", "fgvc_version": fgvc.__version__})


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """``model.json`` of a bundle folder, checked so that it can rebuild the network.

    Raises:
        CheckpointError: no ``model.json`` there, or one that is not fgvc's, is from another
            format version, or is inconsistent (the message names the file and the value).
    """
    path = Path(folder).expanduser() / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found; is {path.parent} an fgvc export folder?")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(config, dict) or config.get("format") != BUNDLE_FORMAT:
        raise CheckpointError(f"{path} is not an fgvc export description")
    if config.get("format_version") != BUNDLE_VERSION:
        raise CheckpointError(
            f"{path} has format version {config.get('format_version')!r}; this fgvc reads "
            f"{BUNDLE_VERSION} - export the checkpoint again with this fgvc (fgvc export)"
        )
    parse_config(config, path)  # every value checked now, not at first use
    return config


def parse_config(
    config: dict[str, Any], path: Path
) -> tuple[NetSpec, list[str], EvalPreprocessing]:
    """The network, class names and preprocessing ``model.json`` describes.

    Raises:
        CheckpointError: a missing or bad value (named with the file).
    """
    try:
        spec = NetSpec.from_mapping(_mapping(config, "net"))
        prep = EvalPreprocessing.from_dict(_mapping(config, "preprocessing"))
        names = config.get("class_names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("class_names must be a list of strings")
        if len(names) != spec.num_classes:
            raise ValueError(
                f"{len(names)} class_names for a network with {spec.num_classes} outputs"
            )
        if not isinstance(config.get("files", {}), dict):
            raise ValueError("files must be a mapping")
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: {err}; export the checkpoint again") from err
    _warn_about_names(names, path)
    return spec, names, prep


_warned: set[str] = set()  # each message once per process (a bundle's file is read twice)


def _warn_about_names(names: list[str], path: Path) -> None:
    """Class names a reader cannot tell apart: the same name twice (predictions of either
    class print alike), or names that differ only in case or Unicode normalization."""
    counts = Counter(names)
    messages = [
        f"{path}: class name {name!r} appears {count} times in class_names: predictions of "
        f"those classes cannot be told apart; give each class its own name"
        for name, count in counts.items()
        if count > 1
    ]
    messages += [confusable_message(str(path), group) for group in confusable_names(names)]
    for message in messages:
        if message not in _warned:
            _warned.add(message)
            logger.warning("warning: %s", message)


def _mapping(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a mapping, got {type(value).__name__}")
    return value


def bundle_file(folder: Path, config: dict[str, Any], kind: str, default: str) -> Path:
    """The path of one of the bundle's files (``files[kind]``, a plain name inside it)."""
    name = config.get("files", {}).get(kind, default)
    if not isinstance(name, str) or Path(name).name != name:
        raise CheckpointError(f"{folder / CONFIG_FILE}: files.{kind} must be a file name")
    return folder / name


def load(folder: str | os.PathLike) -> Bundle:
    """The network of an export folder, in eval mode on the CPU, with what describes it.

    Built from ``model.json`` with :func:`fgvc.models.build_model` (no pretrained download)
    and loaded from ``model.safetensors`` with strict key and shape checks.

    Raises:
        CheckpointError: the bundle is missing, not fgvc's, or its weights do not fit.
    """
    folder = Path(folder).expanduser()
    config = read_config(folder)
    spec, names, prep = parse_config(config, folder / CONFIG_FILE)
    net = build_model(spec)
    weights = bundle_file(folder, config, "weights", WEIGHTS_FILE)
    try:
        state = read_checkpoint(weights)
    except FileNotFoundError as err:
        raise CheckpointError(f"{err}; the bundle {folder} is incomplete") from err
    load_state_dict_checked(net, state, str(weights))
    return Bundle(net.eval(), names, prep, config, folder)


def summary(folder: str | os.PathLike) -> str:
    """A few lines describing an export folder (what ``fgvc export`` prints)."""
    folder = Path(folder)
    config = read_config(folder)
    spec, _, prep = parse_config(config, folder / CONFIG_FILE)
    lines = [f"exported to {folder}"]
    for name in config["files"].values():
        size = (folder / name).stat().st_size / 2**20
        lines.append(f"  {name:<22} {size:8.1f} MiB")
    lines.append(f"  model: {spec.describe()}")
    lines.append(f"  input: {prep.describe()}")
    ckpt = config.get("checkpoint", {})
    if ckpt.get("monitor"):
        score = ckpt.get("score")
        value = "n/a" if score is None else f"{score:.4f}"
        lines.append(
            f"  checkpoint: {ckpt['file']}, epoch {ckpt['epoch']}, {ckpt['monitor']} {value}"
        )
    for key in config["files"]:
        entry = config.get(key)
        verify = entry.get("verify") if isinstance(entry, dict) else None
        if isinstance(verify, dict) and "max_abs_logit_diff" in verify:
            agree = verify.get("top1_agreement", 1.0)
            top1 = "top-1 identical" if agree >= 1 else f"top-1 agrees on {agree:.0%}"
            how = f"{entry['exporter']}; " if "exporter" in entry else ""
            if "opset" in entry:
                how = f"{entry['exporter']}, opset {entry['opset']}; "
            lines.append(
                f"  {key}: {how}vs PyTorch on {verify['images']}: max |logit diff| "
                f"{verify['max_abs_logit_diff']:.2e}, {top1}"
            )
    return "\n".join(lines)
