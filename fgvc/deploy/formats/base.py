"""What an export format is: :class:`ExportFormat`, and helpers its records share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: A loaded model: normalized float32 ``(N, 3, S, S)`` CPU images -> float32 CPU logits.
LogitsFn = Callable[[torch.Tensor], torch.Tensor]
#: Batch size of the example input the exporters trace with (the verification uses others).
EXPORT_BATCH = 2


@dataclass(frozen=True)
class ExportFormat:
    """One way of writing a network into a bundle and of running it from there.

    ``fgvc export`` writes and verifies the formats asked for, in table order
    (:data:`fgvc.deploy.formats.FORMATS`); ``fgvc predict`` loads one of them.

    Attributes:
        name: what ``fgvc export --formats`` calls it.
        file: its file name in the bundle.
        export: ``(net, example, path) -> info``: writes ``net`` (eval mode, CPU) to
            ``path``, traced with the ``example`` batch; ``info`` goes into ``model.json``.
        load: ``(path, device) -> logits function`` (see :data:`LogitsFn`).
        runtime: the Python package ``load`` runs on (an import name).
        purpose: what it is for, in a few words.
        tolerance: largest |logit difference| accepted against eager PyTorch at export;
            None: not bounded (``min_top1`` is the check, for an approximation like int8).
        min_top1: least fraction of verification images whose top-1 must agree.
        default: written when ``--formats`` is not given.
        auto: preference of ``fgvc predict --backend auto`` (higher first); 0: only when the
            bundle has nothing else.
        backend: its name as ``fgvc predict --backend`` (default: ``name``).
        key: its key in ``model.json``'s ``files`` and its entry there (default: ``name``).
        deprecated: None, or what to use instead (said when the format is asked for).
    """

    name: str
    file: str
    export: Callable[[nn.Module, torch.Tensor, Path], dict[str, Any]] = field(repr=False)
    load: Callable[[Path, str], LogitsFn] = field(repr=False)
    runtime: str
    purpose: str
    tolerance: float | None = 1e-3
    min_top1: float = 1.0
    default: bool = False
    auto: int = 0
    backend: str = ""
    key: str = ""
    deprecated: str | None = None

    def __post_init__(self) -> None:
        for name in ("backend", "key"):
            if not getattr(self, name):
                object.__setattr__(self, name, self.name)


def example_input(image_size: int, batch: int = EXPORT_BATCH) -> torch.Tensor:
    """A deterministic ``(batch, 3, S, S)`` input for tracing."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, image_size, image_size, generator=generator)


def torch_runner(
    module: nn.Module | Callable[[torch.Tensor], torch.Tensor], device: str
) -> LogitsFn:
    """A :data:`LogitsFn` running a PyTorch module (already on ``device``) without autograd."""
    target = torch.device(device)

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(images.to(target)).float().cpu()

    return run


def first_line(err: BaseException) -> str:
    """``Type: first line of the message``, for errors with long multi-line texts."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".strip()
