"""``fgvc fit|validate|test``: the LightningCLI.

Model and data are linked (``num_classes`` and class names come from the DataModule), the
resolved config is saved in every run's folder (``runs/<name>/version_<n>``, a new one each
run), and the defaults add best/last checkpointing on ``val/top1``, a learning-rate monitor,
a rich progress bar and the per-class reports.
"""

from __future__ import annotations

from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from fgvc.callbacks import EvalReports
from fgvc.data.datamodule import FGVCDataModule
from fgvc.loggers import WandbLogger
from fgvc.models.pretrained import CheckpointError
from fgvc.module import FGVCClassifier
from fgvc.utils.download import DownloadError

MONITOR = "val/top1"


class ConfigError(RuntimeError):
    """A config value that the model or data rejected; reported in one line."""


def checkpoint_callback() -> ModelCheckpoint:
    return ModelCheckpoint(
        monitor=MONITOR,
        mode="max",
        save_last=True,
        save_top_k=1,
        filename="best-epoch{epoch:03d}-top1_{val/top1:.4f}",
        auto_insert_metric_name=False,
    )


class FGVCCLI(LightningCLI):
    """LightningCLI with fgvc's links, defaults and end-of-run summary."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {
            "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
            "validate": {"model", "dataloaders", "datamodule"},
            "test": {"model", "dataloaders", "datamodule"},
        }

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments(
            "data", "model.num_classes", compute_fn=_num_classes, apply_on="instantiate"
        )
        parser.link_arguments(
            "data", "model.class_names", compute_fn=_class_names, apply_on="instantiate"
        )

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, FileNotFoundError, CheckpointError, DownloadError) as err:
            raise ConfigError(str(err).splitlines()[0] if str(err) else repr(err)) from err

    def after_fit(self) -> None:
        summary = self._summary()
        self._finish_wandb()  # first, so that its own report does not bury the summary
        if summary:
            print(summary, flush=True)

    def after_validate(self) -> None:
        self._finish_wandb()

    def after_test(self) -> None:
        self._finish_wandb()

    def _finish_wandb(self) -> None:
        """One command, one W&B run: close it so everything is flushed to disk now."""
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                logger._experiment.finish()

    def _summary(self) -> str:
        trainer = self.trainer
        log_dir = trainer.log_dir  # every rank: a collective under DDP
        if not trainer.is_global_zero:
            return ""
        ckpt = next((c for c in trainer.checkpoint_callbacks if c.monitor == MONITOR), None)
        lines = ["", "fgvc fit finished"]
        if ckpt is not None and ckpt.best_model_score is not None:
            lines.append(f"  best {MONITOR}: {float(ckpt.best_model_score):.4f}")
            lines.append(f"  best checkpoint: {ckpt.best_model_path}")
        if ckpt is not None and ckpt.last_model_path:
            lines.append(f"  last checkpoint: {ckpt.last_model_path}")
        if log_dir:
            lines.append(f"  run folder (config, metrics, per-class CSV): {log_dir}")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.wandb_mode != "disabled":
                where = logger.run_dir()
                hint = f" (offline; upload with: wandb sync {where})"
                lines.append(f"  W&B run: {where}{hint if logger.wandb_mode == 'offline' else ''}")
        return "\n".join(lines)


def _num_classes(data: FGVCDataModule) -> int:
    return data.num_classes


def _class_names(data: FGVCDataModule) -> list[str]:
    return list(data.classes)


def build_cli(args: list[str] | None = None, run: bool = True) -> FGVCCLI:
    """The LightningCLI (``run=False``: parse and instantiate only, for tests and tools)."""
    return FGVCCLI(
        FGVCClassifier,
        FGVCDataModule,
        subclass_mode_data=True,
        seed_everything_default=42,
        trainer_defaults={
            "default_root_dir": "runs",
            "callbacks": [
                checkpoint_callback(),
                LearningRateMonitor(logging_interval="epoch"),
                RichProgressBar(leave=True),
                EvalReports(),
            ],
        },
        parser_kwargs={"description": "fine-grained recognition with iSQRT-COV networks"},
        args=args,
        run=run,
    )
