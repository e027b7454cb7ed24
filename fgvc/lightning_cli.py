"""``fgvc fit|validate|test``: the LightningCLI.

Model and data are linked (``num_classes`` and class names come from the DataModule), the
resolved config is saved in every run's folder (``runs/<name>/version_<n>``, a new one each
run; ``--ckpt_path last`` continues the newest one in place), and the defaults add best/last
checkpointing on ``val/top1``, a save on interruption, a learning-rate monitor, a rich
progress bar, the per-class reports and, after ``fit``, the export of the best checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import SIGTERMException

from fgvc.callbacks import EvalReports
from fgvc.data.datamodule import FGVCDataModule
from fgvc.loggers import WandbLogger, active_wandb_loggers
from fgvc.models.pretrained import CheckpointError, read_checkpoint
from fgvc.module import FGVCClassifier
from fgvc.utils.download import DownloadError

MONITOR = "val/top1"
INTERRUPTED = "interrupted.ckpt"


class ConfigError(RuntimeError):
    """A config value that the model or data rejected; reported in one line."""


def checkpoint_callbacks() -> list[ModelCheckpoint]:
    """The best checkpoint on ``val/top1`` and ``last.ckpt`` rewritten every epoch.

    Two callbacks: Lightning's ``save_last`` only refreshes ``last.ckpt`` in epochs that
    also saved a best checkpoint, which would make resuming restart from an old epoch.
    """
    best = ModelCheckpoint(
        monitor=MONITOR,
        mode="max",
        save_top_k=1,
        filename="best-epoch{epoch:03d}-top1_{val/top1:.4f}",
        auto_insert_metric_name=False,
    )
    last = ModelCheckpoint(save_top_k=1, filename="last", enable_version_counter=False)
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


def find_resume_checkpoint(save_dir: str | os.PathLike, name: str) -> tuple[Path, int] | None:
    """Newest ``last.ckpt`` / ``interrupted.ckpt`` under ``<save_dir>/<name>/version_*``."""
    candidates = []
    for run in Path(save_dir, name).glob("version_*"):
        version = run.name.split("_", 1)[1]
        if not version.isdigit():
            continue
        for file in (run / "checkpoints" / "last.ckpt", run / "checkpoints" / INTERRUPTED):
            if file.is_file():
                candidates.append((file.stat().st_mtime, file, int(version)))
    if not candidates:
        return None
    _, file, version = max(candidates)
    return file, version


# Lightning copies the checkpoint's hyperparameters into the config before the model is
# built, so in practice num_classes (re-linked from the data) is what can differ; the rest
# guards the case where the model is built some other way.
_MUST_MATCH = ("arch", "representation", "reduce_dim", "num_classes")


def read_run_checkpoint(path: str | os.PathLike) -> dict:
    """Read a ``--ckpt_path`` safely, refusing in one line a file that is missing,
    truncated, unsafe (a pickle with code) or not written by ``fgvc fit``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    try:
        # weights_only=True refuses unsafe pickles; mmap: Lightning reads the weights later
        ckpt = read_checkpoint(path, mmap=True)
    except CheckpointError as err:
        raise ConfigError(str(err)) from err
    except Exception as err:  # truncated zip, not a torch file at all, ...
        detail = str(err).strip().splitlines()[0][:120] if str(err).strip() else "no detail"
        raise ConfigError(
            f"cannot read {path} as a checkpoint ({type(err).__name__}: {detail}); it is "
            f"truncated or not a checkpoint - use another one (e.g. last.ckpt)"
        ) from err
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if (
        not isinstance(hparams, dict)
        or not isinstance(state, dict)
        or not any(str(k).startswith("model.") for k in state)
    ):
        raise ConfigError(
            f"{path} is not a checkpoint of `fgvc fit` (no FGVCClassifier hyperparameters "
            f"and 'model.' weights); to start from its weights use --model.pretrained {path}"
        )
    return ckpt


def check_compatible(path: str | os.PathLike, hparams: dict, model: FGVCClassifier) -> None:
    """The checkpoint's network must be the one the config builds (class count included)."""
    ours = model.hparams
    different = [
        f"{k}={hparams.get(k)!r} (now {ours.get(k)!r})"
        for k in _MUST_MATCH
        if k in hparams and hparams.get(k) != ours.get(k)
    ]
    if different:
        raise ConfigError(
            f"{path} was trained with {', '.join(different)}; resume or evaluate with the "
            f"run's own config, or fine-tune from it with --model.pretrained {path}"
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
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.classes", "model.class_names", apply_on="instantiate")

    def _resolve_last(self) -> None:
        """``fit --ckpt_path last``: continue the newest run of this config in its folder."""
        if self.config.get("subcommand") != "fit" or self.config["fit"].get("ckpt_path") != "last":
            return
        config = self.config["fit"]
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
                f"--ckpt_path last: no last.ckpt or {INTERRUPTED} under "
                f"{Path(args.save_dir, args.name)}/version_*/checkpoints; nothing to resume"
            )
        path, version = found
        args.version = version
        config.ckpt_path = str(path)
        rank_zero_info(f"resuming {path} in {Path(args.save_dir, args.name, f'version_{version}')}")

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, FileNotFoundError, CheckpointError, DownloadError) as err:
            raise ConfigError(_root_message(err)) from err

    def _parse_ckpt_path(self) -> None:
        # Lightning reads the checkpoint's hyperparameters here (before any other hook): find
        # the file `last` means, then check it like any other
        self._resolve_last()
        self._ckpt_hparams: dict | None = None
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path not in ("best", "last", "hpc", "registry"):
            self._ckpt_hparams = dict(read_run_checkpoint(ckpt_path)["hyper_parameters"])
        super()._parse_ckpt_path()

    def after_instantiate_classes(self) -> None:
        # the model as configured must be able to take the checkpoint's weights
        if self._ckpt_hparams is not None:
            path = self.config[self.subcommand].get("ckpt_path")
            check_compatible(path, self._ckpt_hparams, self.model)

    def after_fit(self) -> None:
        log_dir = self.trainer.log_dir  # every rank: a collective under DDP
        self._export_best(log_dir)
        summary = self._summary(log_dir)
        self._finish_wandb()  # first, so that its own report does not bury the summary
        if summary:
            print(summary, flush=True)

    def after_validate(self) -> None:
        self._finish_wandb()

    def after_test(self) -> None:
        self._finish_wandb()

    def _export_best(self, log_dir: str | None) -> None:
        """Export the best checkpoint into ``<run>/export`` and log the bundle to W&B."""
        from fgvc.export import ExportError, export_checkpoint

        trainer = self.trainer
        self._export_dir: Path | None = None
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if not trainer.is_global_zero or not best or not log_dir:
            return
        out = Path(log_dir) / "export"
        n = 1
        while out.exists():  # a resumed run exports beside the earlier bundle
            out = Path(log_dir) / f"export-{n}"
            n += 1
        try:
            self._export_dir = export_checkpoint(best, out)
        except (ExportError, ValueError, OSError) as err:
            print(f"fgvc: warning: export of {best} failed ({err}); the checkpoint is intact")
            return
        for logger in active_wandb_loggers(trainer):
            logger.log_file_artifact(self._export_dir, "export", ["best"])

    def _finish_wandb(self) -> None:
        """One command, one W&B run: close it so everything is flushed to disk now."""
        for logger in self.trainer.loggers:  # disabled-mode runs too: wandb keeps them current
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                logger._experiment.finish()

    def _summary(self, log_dir: str | None) -> str:
        trainer = self.trainer
        if not trainer.is_global_zero:
            return ""
        ckpt = next((c for c in trainer.checkpoint_callbacks if c.monitor == MONITOR), None)
        lines = ["", "fgvc fit finished"]
        if ckpt is not None and ckpt.best_model_score is not None:
            lines.append(f"  best {MONITOR}: {float(ckpt.best_model_score):.4f}")
            lines.append(f"  best checkpoint: {ckpt.best_model_path}")
        last = next((c for c in trainer.checkpoint_callbacks if c.monitor is None), None)
        if last is not None and last.best_model_path:
            lines.append(f"  last checkpoint: {last.best_model_path}")
        if getattr(self, "_export_dir", None):
            lines.append(f"  export (safetensors, ONNX, model.json): {self._export_dir}")
        if log_dir:
            lines.append(f"  run folder (config, metrics, per-class CSV): {log_dir}")
        for logger in active_wandb_loggers(trainer):
            where = logger.run_dir()
            hint = f" (offline; upload with: wandb sync {where})"
            lines.append(f"  W&B run: {where}{hint if logger.wandb_mode == 'offline' else ''}")
        return "\n".join(lines)


def _root_message(err: BaseException) -> str:
    """First line of the innermost cause: jsonargparse wraps our errors (a missing dataset
    file, a bad value) in messages about links and union types."""
    chain = [err]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 20:
        chain.append(nxt)
    ours = [e for e in chain if type(e).__module__.startswith("fgvc") or type(e) in _PLAIN]
    text = str((ours or chain)[-1]).strip()
    return text.splitlines()[0] if text else repr(err)


_PLAIN = (ValueError, TypeError, FileNotFoundError)


def build_cli(args: list[str] | None = None, run: bool = True) -> FGVCCLI:
    """The LightningCLI (``run=False``: parse and instantiate only, for tests and tools)."""
    return FGVCCLI(
        FGVCClassifier,
        FGVCDataModule,
        subclass_mode_data=True,
        seed_everything_default=42,
        save_config_callback=ResumableSaveConfig,
        trainer_defaults={
            "default_root_dir": "runs",
            "callbacks": [
                *checkpoint_callbacks(),
                CheckpointOnInterrupt(),
                LearningRateMonitor(logging_interval="epoch"),
                RichProgressBar(leave=True),
                EvalReports(),
            ],
        },
        parser_kwargs={"description": "fine-grained recognition with iSQRT-COV networks"},
        args=args,
        run=run,
    )
