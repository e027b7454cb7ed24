"""Training callbacks: best / last checkpoints, a save on interruption, the config per run."""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import SIGTERMException

from fgvc.runs import BEST_PREFIX, INTERRUPTED, LAST, MONITOR


def checkpoint_callbacks() -> list[ModelCheckpoint]:
    """The best checkpoint on ``val/top1`` and ``last.ckpt`` rewritten every epoch.

    Two callbacks: Lightning's ``save_last`` only refreshes ``last.ckpt`` in epochs that
    also saved a best checkpoint, which would make resuming restart from an old epoch.
    """
    best = ModelCheckpoint(
        monitor=MONITOR,
        mode="max",
        save_top_k=1,
        filename=BEST_PREFIX + "-epoch{epoch:03d}-top1_{val/top1:.4f}",
        auto_insert_metric_name=False,
    )
    last = ModelCheckpoint(save_top_k=1, filename=Path(LAST).stem, enable_version_counter=False)
    return [best, last]


class CheckpointOnInterrupt(pl.Callback):
    """On Ctrl-C, SIGTERM (or any error in a single process) during ``fit``, save
    ``checkpoints/interrupted.ckpt`` so that ``--ckpt_path last`` can resume.

    Lightning turns SIGTERM into an exception on every rank at the same step, so the save
    is collective there; other errors under DDP are not (ranks may be anywhere) and are
    left alone.
    """

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if trainer.state.fn != "fit" or trainer.global_step == 0:
            return
        synced = isinstance(exception, SIGTERMException | KeyboardInterrupt)
        if trainer.world_size > 1 and not synced:
            return
        ckpt = trainer.checkpoint_callback
        directory = getattr(ckpt, "dirpath", None)
        if not directory:
            return
        path = os.path.join(directory, INTERRUPTED)
        trainer.save_checkpoint(path)
        rank_zero_info(f"interrupted: saved {path}; resume with --ckpt_path last")


class ResumableSaveConfig(SaveConfigCallback):
    """Saves the resolved config as ``config.yaml``; a resumed run that writes into the
    same folder adds ``config.resume-<n>.yaml`` instead of replacing the original."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        log_dir = trainer.log_dir
        if log_dir is not None and self.config_filename == "config.yaml":
            n = 1
            while (Path(log_dir) / self.config_filename).exists():
                self.config_filename = f"config.resume-{n}.yaml"
                n += 1
        super().setup(trainer, pl_module, stage)
