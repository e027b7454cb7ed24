"""``torchscript``: the traced network (``torch.jit``), deprecated in torch in favour of
``torch.export`` (``pt2``). Still written when asked for (C++ LibTorch deployments that have
not moved yet) and loaded from older bundles; never chosen by ``fgvc predict --backend
auto``, so that torch's deprecation warning appears only where TorchScript was asked for.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fgvc.deploy.formats.base import ExportFormat, LogitsFn, first_line, torch_runner
from fgvc.errors import ExportError

TORCHSCRIPT_FILE = "model.torchscript.pt"
SUCCESSOR = "pt2 (torch.export)"


def export_torchscript(net: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """Trace ``net`` and save it as TorchScript.

    Raises:
        ExportError: tracing or saving failed.
    """
    try:
        # the deprecation is said once by fgvc export (ExportFormat.deprecated); the tracer's
        # warnings are about tracing, which the verification judges
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(net.eval(), (example,))
            torch.jit.save(traced, str(path))
    except Exception as err:  # any tracer failure
        raise ExportError(f"TorchScript export failed; {first_line(err)}") from err
    return {"exporter": "torch.jit.trace"}


def load_torchscript(path: Path, device: str = "cpu") -> LogitsFn:
    """A :data:`LogitsFn` on a TorchScript file (torch's deprecation warning is left on)."""
    return torch_runner(torch.jit.load(str(path), map_location=device).eval(), device)


FORMAT = ExportFormat(
    name="torchscript",
    file=TORCHSCRIPT_FILE,
    export=export_torchscript,
    load=load_torchscript,
    runtime="torch",
    purpose="deprecated: LibTorch (C++) deployments not yet on pt2; older bundles",
    tolerance=1e-4,
    deprecated=SUCCESSOR,
)
