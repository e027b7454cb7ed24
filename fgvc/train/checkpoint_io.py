"""Checkpoints written whole: Lightning's checkpoint IO, saving through
:func:`fgvc.utils.atomic.atomic_file`.

Lightning's own save serializes into memory, writes a temporary file in ``$TMPDIR`` and moves
it onto the destination: where ``$TMPDIR`` is another filesystem the move is a copy that
truncates the destination first, so a kill leaves ``last.ckpt`` empty and a full disk leaves
a truncated ``best-*.ckpt`` under its final name. Here the file is written beside its
destination, fsynced and renamed over it: the previous checkpoint stays whole until the new
one is complete. ModelCheckpoint removes a replaced best checkpoint only after the new one
is saved, so a failed save keeps the old best too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.utilities.cloud_io import get_filesystem
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins.io import CheckpointIO, TorchCheckpointIO
from pytorch_lightning.plugins.io.wrapper import _WrappingCheckpointIO
from pytorch_lightning.utilities import rank_zero_info

from fgvc.utils.atomic import atomic_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic (remote URLs: Lightning's save).

    Raises (from ``save_checkpoint``):
        DiskFullError: no room for the new checkpoint; the previous file is intact.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "wb") as file:
            torch.save(checkpoint, file)


def _is_local(path: _PATH) -> bool:
    return isinstance(get_filesystem(os.fspath(path)), LocalFileSystem)


def _stock(io: CheckpointIO | None) -> bool:
    """Lightning's default checkpoint IO (or none yet), not one the user chose."""
    return io is None or type(io) is TorchCheckpointIO


class AtomicCheckpoints(pl.Callback):
    """Keeps :class:`AtomicCheckpointIO` when a ``--trainer.plugins`` list replaced the
    default one: a stock ``TorchCheckpointIO`` (also inside a wrapper such as
    ``AsyncCheckpointIO``) is swapped for it; a checkpoint IO of the user's own is kept."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        strategy = trainer.strategy
        io = strategy.checkpoint_io
        if isinstance(io, _WrappingCheckpointIO) and _stock(io.checkpoint_io):
            # the strategy has just given it a stock one, which its setter would keep
            io._checkpoint_io = AtomicCheckpointIO()
        elif _stock(io):
            strategy.checkpoint_io = AtomicCheckpointIO()
        elif not isinstance(io, AtomicCheckpointIO | _WrappingCheckpointIO):
            rank_zero_info(
                f"checkpoints are saved by {type(io).__name__} (from --trainer.plugins), not "
                f"fgvc's atomic writer"
            )
