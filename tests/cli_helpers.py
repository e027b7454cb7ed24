"""Callbacks that tests put into configs (importable by subprocesses as tests.cli_helpers),
and a pickle that runs code when loaded without ``weights_only``."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytorch_lightning as pl
import torch


class SigtermAtEpochEnd(pl.Callback):
    """Sends a signal (SIGTERM: a cluster scheduler preempting the job; SIGINT: Ctrl-C) to
    this process at the end of training epoch ``epoch``."""

    def __init__(self, epoch: int = 0, signame: str = "SIGTERM") -> None:
        self.epoch = epoch
        self.signum = getattr(signal, signame)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), self.signum)


class SigtermAtStep(pl.Callback):
    """Sends SIGTERM to this process after training batch ``batch`` of the first epoch: a run
    stopped before it saved any checkpoint."""

    def __init__(self, batch: int = 0) -> None:
        self.batch = batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == 0 and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


class PoisonWeightsAtEpochEnd(pl.Callback):
    """After the last training step of epoch ``epoch``, puts a NaN into the first conv's
    weights: a step that blew the weights up while its own loss was still finite."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == trainer.num_training_batches - 1:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


class KillRankAtEpochEnd(pl.Callback):
    """SIGKILLs process ``rank`` at the end of training epoch ``epoch``, in the first attempt
    of a torchrun launch only (``TORCHELASTIC_RESTART_COUNT`` 0): a node lost mid-run."""

    def __init__(self, rank: int = 1, epoch: int = 0) -> None:
        self.rank = rank
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        first = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if first and trainer.global_rank == self.rank and trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class CodePayload:
    """Pickles to a call that writes "pwned" to ``marker``: proof that loading ran code."""

    def __init__(self, marker: str | Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


class FailOnRank(pl.Callback):
    """Raises an fgvc error on process ``rank`` at the end of training epoch 0: one rank's
    failure (a corrupt image in its shard) while the others wait in a collective."""

    def __init__(self, rank: int = 1) -> None:
        self.rank = rank

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from fgvc.errors import ImageDecodeError

        if trainer.global_rank == self.rank:
            raise ImageDecodeError(f"/data/rank{self.rank}.jpg: cannot decode image (planted)")
