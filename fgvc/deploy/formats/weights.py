"""``safetensors``: the weights, rebuilt into the network by fgvc from ``model.json``.

Always written: it is what ``fgvc.export.load`` and ``fgvc predict --backend torch`` and
``fgvc explain`` use. Its verification rebuilds the network from the bundle's ``model.json``
and weights, and compares it with the network that was exported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fgvc.deploy.bundle import WEIGHTS_FILE, load, save_weights
from fgvc.deploy.formats.base import ExportFormat, LogitsFn, torch_runner


def _export(net: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    save_weights(net, path)
    return {}


def _load(path: Path, device: str = "cpu") -> LogitsFn:
    # model.json beside the weights describes the network (a bundle's weights name it)
    net = load(path.parent).net.to(torch.device(device))
    return torch_runner(net, device)


FORMAT = ExportFormat(
    name="safetensors",
    file=WEIGHTS_FILE,
    export=_export,
    load=_load,
    runtime="torch",
    purpose="the weights; PyTorch with fgvc (fgvc.export.load, fgvc explain, fine-tuning on)",
    tolerance=1e-4,
    default=True,
    auto=1,
    backend="torch",
    key="weights",
)
