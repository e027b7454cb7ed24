"""Callbacks that tests put into configs (importable by subprocesses as tests.cli_helpers),
and a pickle that runs code when loaded without ``weights_only``."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytorch_lightning as pl


class SigtermAtEpochEnd(pl.Callback):
    """Sends a signal (SIGTERM: a cluster scheduler preempting the job; SIGINT: Ctrl-C) to
    this process at the end of training epoch ``epoch``."""

    def __init__(self, epoch: int = 0, signame: str = "SIGTERM") -> None:
        self.epoch = epoch
        self.signum = getattr(signal, signame)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), self.signum)


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
