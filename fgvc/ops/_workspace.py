"""Reusable CPU buffers for the meta-layer's (B, d, d) intermediates.

A fresh multi-megabyte CPU tensor is slow to fill the first time: glibc hands such blocks
back to the OS when they are freed, so every training step page-faults its way through new
memory (about 0.5 ms per 2.6 MB buffer, a third of a 256 x 256 x 10 GEMM). The layer
therefore writes its intermediates into buffers it takes from here and gives back at the
end of its backward (or of an inference forward). CUDA tensors bypass the pool: PyTorch's
caching allocator already does this there.

Buffers that autograd saves for the backward come back only when the graph node that
holds them is freed (:class:`Lease`), so a retained graph can be differentiated again. And
should a stray reference survive anyway, buffers are refilled with ``out=``, which bumps
their version counter: autograd then refuses loudly instead of reading reused memory.

Buffers made under ``torch.inference_mode`` (Lightning's validation, export checks) are
inference tensors, which may not be written outside it: they are pooled apart.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable

import torch

_Key = tuple[tuple[int, ...], torch.dtype, torch.device, bool]  # ..., inference tensor


class Workspace:
    """A free list of CPU buffers per (shape, dtype, device, inference), capped in bytes."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._free: dict[_Key, list[torch.Tensor]] = defaultdict(list)
        self._bytes = 0
        # re-entrant: dropping buffers inside give_back can collect a Lease, whose __del__
        # gives its own buffers back on the same thread
        self._lock = threading.RLock()

    def take(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialized buffer of ``shape`` with ``like``'s dtype and device."""
        if like.device.type == "cpu":
            key = (tuple(shape), like.dtype, like.device, torch.is_inference_mode_enabled())
            with self._lock:
                free = self._free.get(key)
                if free:
                    buf = free.pop()
                    self._bytes -= buf.nbytes
                    return buf
        return torch.empty(shape, dtype=like.dtype, device=like.device)

    def give_back(self, tensors: Iterable[torch.Tensor | None]) -> None:
        """Return buffers obtained from :meth:`take`; ``None``, non-CPU and non-contiguous
        tensors are skipped."""
        with self._lock:
            for t in tensors:
                if t is None or t.device.type != "cpu" or not t.is_contiguous():
                    continue
                if self._bytes + t.nbytes > self.max_bytes:
                    self._free.clear()  # shapes changed (new batch size): start over
                    self._bytes = 0
                self._free[(tuple(t.shape), t.dtype, t.device, t.is_inference())].append(t)
                self._bytes += t.nbytes


def into(ws: Workspace | None, like: torch.Tensor) -> dict:
    """``out=`` keyword arguments for an op whose result is shaped like ``like``: a workspace
    buffer, or none at all (plain tensor code, which tracers and exporters handle best)."""
    return {} if ws is None else {"out": ws.take(tuple(like.shape), like)}


def give_back(ws: Workspace | None, *tensors: torch.Tensor | None) -> None:
    """Return buffers to ``ws`` (no-op without a workspace)."""
    if ws is not None:
        ws.give_back(tensors)


class Lease:
    """Gives its buffers back to the workspace when it is garbage-collected.

    Stored on an autograd ``ctx``: it dies with the graph node, i.e. after the last
    backward that could read the saved buffers.
    """

    def __init__(self, workspace: Workspace, tensors: list[torch.Tensor]) -> None:
        self.workspace = workspace
        self.tensors = tensors

    def __del__(self) -> None:
        self.workspace.give_back(self.tensors)


#: the pool the meta-layer uses
WORKSPACE = Workspace()
