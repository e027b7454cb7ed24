"""End-of-evaluation reports: per-class accuracy, most-confused pairs, sample predictions.

Written to the run folder as CSV for everyone, and to Weights & Biases (tables, a confusion
matrix, captioned images) when a :class:`~fgvc.train.loggers.WandbLogger` is attached.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from fgvc.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from fgvc.runs import MONITOR
from fgvc.train.callbacks import best_checkpoint
from fgvc.train.loggers import WandbLogger, active_wandb_loggers
from fgvc.utils.atomic import atomic_file


def per_class_accuracy(confmat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(support, accuracy) per class from a (true, predicted) count matrix."""
    support = confmat.sum(1)
    correct = confmat.diagonal()
    return support, correct / support.clamp_min(1)


def most_confused(confmat: torch.Tensor, k: int = 20) -> list[tuple[int, int, int]]:
    """The ``k`` largest off-diagonal counts as (true, predicted, count), largest first."""
    off = confmat.clone()
    off.fill_diagonal_(0)
    counts, flat = off.flatten().topk(min(k, off.numel()))
    n = confmat.shape[1]
    return [(int(i) // n, int(i) % n, int(c)) for c, i in zip(counts, flat) if c > 0]


def _denormalize(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images
    mean = images.new_tensor(IMAGENET_MEAN)[:, None, None]
    std = images.new_tensor(IMAGENET_STD)[:, None, None]
    return ((images.float() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)


class EvalReports(pl.Callback):
    """Per-class reports at the end of each validation and test epoch.

    Needs the module to keep a synced ``confmat[stage]`` (``MulticlassConfusionMatrix``)
    and ``class_names``, as :class:`fgvc.train.module.FGVCClassifier` does.

    Args:
        num_samples: images of the first evaluation batch logged with their predictions.
        confusion_matrix_max_classes: above this, W&B gets the most-confused pairs only.
    """

    def __init__(self, num_samples: int = 8, confusion_matrix_max_classes: int = 40) -> None:
        self.num_samples = num_samples
        self.confusion_matrix_max_classes = confusion_matrix_max_classes
        self._samples: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        #: the latest most-confused pairs (true, predicted, count) per stage, on rank 0
        self.pairs: dict[str, list[tuple[int, int, int]]] = {}
        # the per-class CSV of the latest evaluation, until it is written (rank 0)
        self._table: dict[str, tuple[Path, list[list[Any]]]] = {}

    def _keep_samples(
        self, stage: str, trainer: pl.Trainer, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx != 0 or not isinstance(outputs, dict) or self.num_samples <= 0:
            return
        if not trainer.is_global_zero or not active_wandb_loggers(trainer):
            return  # only W&B shows them
        images, labels = batch[0][: self.num_samples], batch[1][: self.num_samples]
        probs = outputs["logits"][: self.num_samples].float().softmax(-1)
        self._samples[stage] = (_denormalize(images).cpu(), labels.cpu(), probs.cpu())

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._keep_samples("val", trainer, outputs, batch, batch_idx)

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._keep_samples("test", trainer, outputs, batch, batch_idx)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._report("val", trainer, pl_module)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report("test", trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # During fit, val_per_class.csv is the best checkpoint's: written when this epoch's
        # monitored score beats the best one so far, as the best ModelCheckpoint will decide
        # after this (the module logs the score after the callbacks' epoch-end hooks, so here).
        if trainer.state.fn != "fit" or trainer.sanity_checking or not trainer.is_global_zero:
            return
        best = best_checkpoint(trainer)
        score = trainer.callback_metrics.get(best.monitor if best is not None else MONITOR)
        if score is None:
            return
        previous = best.best_model_score if best is not None else None
        sign = -1.0 if best is not None and best.mode == "min" else 1.0
        if previous is None or sign * float(score) > sign * float(previous):
            self._write("val")

    def _write(self, stage: str) -> None:
        path, rows = self._table.pop(stage, (None, []))
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "name", "support", "correct", "accuracy"])
            writer.writerows(rows)

    def _report(self, stage: str, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metric = pl_module.confmat[stage]
        confmat = metric.compute().long().cpu()  # every rank: compute() syncs (reset: module)
        log_dir = trainer.log_dir  # every rank: a collective under DDP
        if not trainer.is_global_zero:
            return
        names = pl_module.class_names
        support, accuracy = per_class_accuracy(confmat)
        pairs = most_confused(confmat)
        self.pairs[stage] = pairs
        if log_dir:
            rows = [
                [i, name, int(support[i]), int(confmat[i, i]), f"{float(accuracy[i]):.4f}"]
                for i, name in enumerate(names)
            ]
            self._table[stage] = (Path(log_dir) / f"{stage}_per_class.csv", rows)
            if stage == "test" or trainer.state.fn != "fit":
                self._write(stage)
        for logger in active_wandb_loggers(trainer):
            self._to_wandb(logger, stage, names, confmat, support, accuracy, pairs, trainer)

    def _to_wandb(
        self,
        logger: WandbLogger,
        stage: str,
        names: list[str],
        confmat: torch.Tensor,
        support: torch.Tensor,
        accuracy: torch.Tensor,
        pairs: list[tuple[int, int, int]],
        trainer: pl.Trainer,
    ) -> None:
        import wandb

        run = logger.experiment
        payload: dict[str, Any] = {
            f"{stage}/per_class_accuracy": wandb.Table(
                columns=["class", "name", "support", "accuracy"],
                data=[[i, n, int(support[i]), float(accuracy[i])] for i, n in enumerate(names)],
            ),
            f"{stage}/most_confused": wandb.Table(
                columns=["true", "predicted", "count", "fraction of true class"],
                data=[[names[t], names[p], c, c / max(1, int(support[t]))] for t, p, c in pairs],
            ),
        }
        if len(names) <= self.confusion_matrix_max_classes:
            y_true = torch.arange(len(names)).repeat_interleave(support)
            preds = torch.cat([torch.arange(len(names)).repeat_interleave(row) for row in confmat])
            payload[f"{stage}/confusion_matrix"] = wandb.plot.confusion_matrix(
                y_true=y_true.tolist(), preds=preds.tolist(), class_names=list(names)
            )
        if stage in self._samples:
            images, labels, probs = self._samples.pop(stage)
            conf, pred = probs.max(-1)
            payload[f"{stage}/samples"] = [
                wandb.Image(
                    img.permute(1, 2, 0).numpy(),
                    caption=f"true: {names[int(y)]} | pred: {names[int(p)]} ({float(c):.2f})",
                )
                for img, y, p, c in zip(images, labels, pred, conf)
            ]
        payload["trainer/global_step"] = trainer.global_step
        run.log(payload)
