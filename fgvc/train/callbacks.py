"""Training callbacks: best / last checkpoints, and the resolved config in every run folder."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import SaveConfigCallback

from fgvc.runs import BEST_PREFIX, LAST, MONITOR


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
