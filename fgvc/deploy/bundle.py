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
rebuilds the network from it; reading and checking ``model.json`` is
:mod:`fgvc.bundle_config`'s (training reads it too: ``model.pretrained: <export folder>``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import fgvc
from fgvc.bundle_config import (  # re-exported: the deploy modules read bundles from here
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    CONFIG_FILE,
    WEIGHTS_FILE,
    bundle_file,
    parse_config,
    read_config,
)
from fgvc.data.preprocessing import EvalPreprocessing
from fgvc.errors import CheckpointError
from fgvc.models import FGVCNet, NetSpec, build_model, load_state_dict_checked, read_checkpoint
from fgvc.runs import FitCheckpoint

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "Bundle",
    "bundle_file",
    "describe",
    "load",
    "parse_config",
    "read_config",
    "save_weights",
    "summary",
]


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
