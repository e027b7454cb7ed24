"""``fgvc fit|validate|test``: the LightningCLI.

Model and data are linked (``num_classes`` and class names come from the DataModule), the
resolved config is saved in every run's folder (:mod:`fgvc.runs`: a new one each run;
``--ckpt_path last`` continues the newest one in place), and the defaults add best/last
checkpointing on ``val/top1``, a synchronized stop on Ctrl-C / SIGTERM
(:mod:`fgvc.train.interrupt`), a learning-rate monitor, progress and the per-class reports.
A ``--ckpt_path`` is read with the same safe, checked reader as everything else
(:func:`fgvc.runs.read_fit_checkpoint`) before Lightning touches it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

from pytorch_lightning.callbacks import LearningRateMonitor, ProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities import rank_zero_info

from fgvc.data.datamodule import FGVCDataModule
from fgvc.errors import ConfigError, FgvcError, user_message
from fgvc.runs import RUNS_ROOT, FitCheckpoint, find_resume_checkpoint
from fgvc.runs import read_fit_checkpoint as _read_fit_checkpoint
from fgvc.train.callbacks import ResumableSaveConfig, checkpoint_callbacks
from fgvc.train.interrupt import GracefulStop
from fgvc.train.module import FGVCClassifier
from fgvc.train.progress import progress_bar
from fgvc.train.reports import EvalReports


class ArgumentParser(LightningArgumentParser):
    """Parse errors (unknown keys, bad types) become a :class:`ConfigError`, which the
    ``fgvc`` command reports as its one line, instead of jsonargparse's usage dump."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        lines = [line.strip() for line in str(message).splitlines() if line.strip()]
        raise ConfigError(" ".join(lines[:2]) or "invalid arguments") from ex


def read_fit_checkpoint(path: str) -> FitCheckpoint:
    """:func:`fgvc.runs.read_fit_checkpoint`, its refusals as config errors."""
    try:
        return _read_fit_checkpoint(path)
    except FgvcError as err:
        raise ConfigError(str(err)) from err


def check_compatible(ckpt: FitCheckpoint, model: FGVCClassifier) -> None:
    """The checkpoint's network must be the one the config builds (class count included)."""
    different = ckpt.spec.differences(model.spec)
    if different:
        raise ConfigError(
            f"{ckpt.path} was trained with {', '.join(different)}; resume or evaluate with "
            f"the run's own config, or fine-tune from it with --model.pretrained {ckpt.path}"
        )


class FGVCCLI(LightningCLI):
    """LightningCLI with fgvc's links, defaults and checkpoint checks."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {
            "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
            "validate": {"model", "dataloaders", "datamodule"},
            "test": {"model", "dataloaders", "datamodule"},
        }

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.classes", "model.class_names", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # `fgvc` passes argv=None when run from the command line, so Lightning's warning
        # about args given beside sys.argv does not apply
        self.config = parser.parse_args(args)
        # Lightning reads --ckpt_path's hyperparameters right after this: find the file
        # `last` means and check it first, like any other path
        self.fit_checkpoint: FitCheckpoint | None = None
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        if subcommand == "fit" and self.config[subcommand].get("ckpt_path") == "last":
            self._resolve_last(self.config[subcommand])
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if ckpt_path and ckpt_path not in ("best", "hpc", "registry"):
            self.fit_checkpoint = read_fit_checkpoint(ckpt_path)

    def _resolve_last(self, config: Any) -> None:
        """``fit --ckpt_path last``: continue the newest run of this config in its folder."""
        loggers = config.trainer.logger
        loggers = loggers if isinstance(loggers, list) else [loggers]
        csv = next(
            (
                lg
                for lg in loggers
                if hasattr(lg, "class_path") and lg.class_path.endswith("CSVLogger")
            ),
            None,
        )
        if csv is None:
            raise ConfigError(
                "--ckpt_path last needs a CSVLogger in trainer.logger to find the run folder; "
                "pass the checkpoint path instead"
            )
        args = csv.init_args
        found = find_resume_checkpoint(args.save_dir, args.name)
        if found is None:
            raise ConfigError(
                f"--ckpt_path last: no last.ckpt under "
                f"{Path(args.save_dir, args.name)}/version_*/checkpoints; nothing to resume"
            )
        path, version = found
        args.version = version
        config.ckpt_path = str(path)
        rank_zero_info(f"resuming {path} in {Path(args.save_dir, args.name, f'version_{version}')}")

    def before_instantiate_classes(self) -> None:
        # what the run's own settings allow: no progress bar when it is switched off (a
        # cluster log), no learning-rate monitor without a logger to write to
        config = self.config[self.subcommand] if self.subcommand else self.config
        callbacks = [cb for cb in self.trainer_defaults["callbacks"] if not _optional(cb)]
        if config.trainer.get("enable_progress_bar") is not False:
            callbacks.append(progress_bar())
        if config.trainer.get("logger") is not False:
            callbacks.append(LearningRateMonitor(logging_interval="epoch"))
        self.trainer_defaults["callbacks"] = callbacks

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, FileNotFoundError, FgvcError) as err:
            raise ConfigError(user_message(err)) from err

    def after_instantiate_classes(self) -> None:
        # the model as configured must be able to take the checkpoint's weights
        if self.fit_checkpoint is not None:
            check_compatible(self.fit_checkpoint, self.model)


def _optional(callback: Any) -> bool:
    return isinstance(callback, ProgressBar | LearningRateMonitor)


def build_cli(args: list[str] | None = None, run: bool = True) -> FGVCCLI:
    """The LightningCLI (``run=False``: parse and instantiate only, for tests and tools)."""
    return FGVCCLI(
        FGVCClassifier,
        FGVCDataModule,
        subclass_mode_data=True,
        seed_everything_default=42,
        save_config_callback=ResumableSaveConfig,
        parser_class=ArgumentParser,
        trainer_defaults={
            "default_root_dir": RUNS_ROOT,
            "benchmark": True,  # fixed-size inputs: let cuDNN pick its fastest kernels
            "callbacks": [
                *checkpoint_callbacks(),
                GracefulStop(),
                EvalReports(),
            ],
        },
        parser_kwargs={"description": "fine-grained recognition with iSQRT-COV networks"},
        args=args,
        run=run,
    )
