"""``pt2``: the network as a ``torch.export`` program (``torch.export.save``), the successor
of TorchScript: PyTorch without fgvc's model code, and the input of AOTInductor
(``torch._inductor.aoti_compile_and_package``) and ExecuTorch. Dynamic batch dimension.

Loading unpickles the weights; it runs with ``torch.load``'s ``weights_only`` enforced
(``TORCH_FORCE_WEIGHTS_ONLY_LOAD``), so a file holding anything but tensors is refused.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fgvc.deploy.formats.base import ExportFormat, LogitsFn, torch_runner

PT2_FILE = "model.pt2"


def export_pt2(net: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """``torch.export.export`` with a dynamic batch (any N >= 1), saved to ``path``."""
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.export.export(net.eval(), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return {
        "exporter": "torch.export",
        "input": "images (N, 3, S, S) float32, N dynamic",
        "output": "logits (N, classes)",
    }


@contextlib.contextmanager
def _weights_only() -> Iterator[None]:
    # torch.export.load retries a failed weights_only load with full unpickling
    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    before = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ[key]
        else:
            os.environ[key] = before


def load_pt2(path: Path, device: str = "cpu") -> LogitsFn:
    """A :data:`LogitsFn` on a saved ``torch.export`` program, moved to ``device``."""
    with _weights_only():
        program = torch.export.load(str(path))
    if torch.device(device).type != "cpu":
        # constants the trace baked in (e.g. an identity matrix) move too, unlike .to()
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    return torch_runner(program.module(), device)


FORMAT = ExportFormat(
    name="pt2",
    file=PT2_FILE,
    export=export_pt2,
    load=load_pt2,
    runtime="torch",
    purpose="PyTorch without fgvc's code (torch.export); AOTInductor, ExecuTorch",
    tolerance=1e-4,
    auto=2,
)
