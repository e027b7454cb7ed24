"""``fgvc fit|validate|test``: the LightningCLI.

Model and data are linked (``num_classes`` and class names come from the DataModule), the
resolved config is saved in every run's folder (:mod:`fgvc.runs`: a new one each run;
``--ckpt_path last`` continues the newest one in place), and the defaults add best/last
checkpointing (best on ``model.monitor``, default ``val/top1``), a synchronized stop on
Ctrl-C / SIGTERM (:mod:`fgvc.train.interrupt`), a learning-rate monitor, progress and the
per-class reports.
A ``--ckpt_path`` is read with the same safe, checked reader as everything else
(:func:`fgvc.runs.read_fit_checkpoint`) before Lightning touches it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

from jsonargparse import Namespace
from pytorch_lightning.callbacks import LearningRateMonitor, ModelSummary, ProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities import rank_zero_info

from fgvc.data.datamodule import FGVCDataModule
from fgvc.errors import ConfigError, FgvcError, user_message
from fgvc.models import NetSpec
from fgvc.runs import RUNS_ROOT, FitCheckpoint, hpc_checkpoint
from fgvc.runs import read_fit_checkpoint as _read_fit_checkpoint
from fgvc.train.callbacks import ResumableSaveConfig, RunRecord
from fgvc.train.compose import expand_config_args, name_the_run
from fgvc.train.elastic import meet_afresh
from fgvc.train.health import TrainingHealth
from fgvc.train.interrupt import GracefulStop
from fgvc.train.module import FGVCClassifier
from fgvc.train.progress import progress_bar
from fgvc.train.reports import EvalReports
from fgvc.train.resume import (
    StepCheckpoint,
    check_every_n_steps,
    check_resume_layout,
    checkpoint_callbacks,
)
from fgvc.train.run_folder import continue_after_restart, continue_run, give_run_a_folder

#: keys of earlier fgvc configs that moved, and where to (for the parse error's line)
MOVED_KEYS = {
    ("option 'iterations", "model.iterations"): "iterations is now a setting of the head: "
    "model.head: {iterations: N} (on the command line --model.head '{iterations: N}')",
}


class ArgumentParser(LightningArgumentParser):
    """Parse errors (unknown keys, bad types) become a :class:`ConfigError`, which the
    ``fgvc`` command reports as its one line, instead of jsonargparse's usage dump."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        lines = [line.strip() for line in str(message).splitlines() if line.strip()]
        text = " ".join(lines[:2]) or "invalid arguments"
        moved = [hint for keys, hint in MOVED_KEYS.items() if any(k in text for k in keys)]
        raise ConfigError("; ".join([text, *moved])) from ex


def read_fit_checkpoint(path: str) -> FitCheckpoint:
    """:func:`fgvc.runs.read_fit_checkpoint`, its refusals as config errors."""
    try:
        return _read_fit_checkpoint(path)
    except FgvcError as err:
        raise ConfigError(str(err)) from err


def recipe_changes(ckpt: FitCheckpoint, model: FGVCClassifier) -> list[str]:
    """The recipe settings in which the config differs from the checkpoint's run (the
    network's are :func:`check_compatible`'s; ``pretrained`` does not matter once the
    checkpoint's weights are loaded)."""
    # the network's settings may be written differently and mean the same (reduce_dim
    # "auto" and 256; a head group and the flat iterations of older checkpoints)
    network = {f.name for f in dataclasses.fields(NetSpec)} | {"iterations"}
    changed = []
    for key, value in model.hparams.items():
        old = ckpt.hparams.get(key, value)
        if key not in network | {"class_names", "pretrained"} and old != value:
            changed.append(f"{key} {old!r} -> {value!r}")
    return changed


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
        parser.add_argument(
            "--name",
            type=str | None,
            default=None,
            help="the run's name: its folder <save_dir>/<name>/version_<n> and its W&B name "
            "(default: a logger's own name, else <dataset>_<trunk>, e.g. cub_resnet50)",
        )
        parser.add_argument(
            "--checkpoint_every_n_steps",
            type=int | None,
            default=None,
            help="also rewrite checkpoints/last.ckpt every N training (optimizer) steps inside "
            "an epoch, and at a SIGTERM or Ctrl-C: --ckpt_path last then continues inside the "
            "epoch exactly (default: last.ckpt at epoch ends only)",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # `fgvc` passes argv=None when run from the command line, so Lightning's warning
        # about args given beside sys.argv does not apply. Configs that list bases are
        # expanded first (fgvc.train.compose).
        if args is None or isinstance(args, list):
            args = expand_config_args(sys.argv[1:] if args is None else list(args))
        self.config = parser.parse_args(args)
        # Lightning reads --ckpt_path's hyperparameters right after this: find the file
        # `last` means and check it first, like any other path
        self.fit_checkpoint: FitCheckpoint | None = None
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        # every checkpoint Lightning reads for fgvc is read without running code from it
        if config.get("weights_only") is False:
            raise ConfigError(
                "--weights_only false is refused: fgvc reads checkpoints with weights_only=True, "
                "which never runs code from the file, and its own checkpoints need nothing else"
            )
        config.weights_only = True
        try:
            check_every_n_steps(config.get("checkpoint_every_n_steps"))
        except FgvcError as err:
            raise ConfigError(str(err)) from err
        give_run_a_folder(config)
        name_the_run(config)
        ckpt_path = config.get("ckpt_path")
        if isinstance(ckpt_path, str) and ckpt_path.startswith("registry"):
            raise ConfigError(
                f"--ckpt_path {ckpt_path}: model registries are not supported; give a file or last"
            )
        if ckpt_path == "hpc" or (ckpt_path is None and SLURMEnvironment.detect()):
            # resolved here, so that the file goes through the same checks as any other
            found = hpc_checkpoint(config.trainer.default_root_dir or RUNS_ROOT)
            if found is None and ckpt_path == "hpc":
                raise ConfigError(
                    f"--ckpt_path hpc: no hpc_ckpt_<n>.ckpt in "
                    f"{config.trainer.default_root_dir or RUNS_ROOT}"
                )
            if found is not None:
                config.ckpt_path = str(found)
        elif ckpt_path and ckpt_path != "best":
            continue_run(config, subcommand)
        elif subcommand == "fit":
            continue_after_restart(config)
        meet_afresh()  # a torchrun restart: before the processes form their group
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and ckpt_path != "best":
            self.fit_checkpoint = read_fit_checkpoint(ckpt_path)

    def _parse_ckpt_path(self) -> None:
        """Lightning would parse the checkpoint's hyperparameters over the config here, so
        that a received checkpoint chose what is built and read (``pretrained:`` a file, a
        download). In fgvc the config decides; :meth:`after_instantiate_classes` compares the
        checkpoint's network with it and :func:`recipe_changes` reports what differs."""

    def before_instantiate_classes(self) -> None:
        # what the run's own settings allow: no progress bar when it is switched off (a
        # cluster log), no learning-rate monitor without a logger to write to
        config = self.config[self.subcommand] if self.subcommand else self.config
        _one_job_for_interactive_srun(config.trainer)
        _check_sync_batchnorm(config.trainer)
        _csv_logger_first(config.trainer)
        _check_logger_folders(config.trainer.get("logger"))
        _weights_from_checkpoint(config, self.fit_checkpoint)
        callbacks = [cb for cb in self.trainer_defaults.get("callbacks", []) if not _optional(cb)]
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
        config = self.config[self.subcommand] if self.subcommand else self.config
        every = config.get("checkpoint_every_n_steps")
        if every and self.subcommand == "fit":
            for callback in self.trainer.checkpoint_callbacks:
                if isinstance(callback, StepCheckpoint):
                    callback.every_n_steps = every
        # the model as configured must be able to take the checkpoint's weights
        if self.fit_checkpoint is not None:
            check_compatible(self.fit_checkpoint, self.model)
            old = self.fit_checkpoint.hparams.get("optimizer", self.model.hparams.optimizer)
            if self.subcommand == "fit" and old != self.model.hparams.optimizer:
                raise ConfigError(
                    f"{self.fit_checkpoint.path} was trained with optimizer {old}, the config "
                    f"says {self.model.hparams.optimizer}: the optimizer state cannot continue "
                    f"under another optimizer; resume with model.optimizer {old}, or fine-tune "
                    f"from it with --model.pretrained {self.fit_checkpoint.path}"
                )
            if self.subcommand == "fit":
                check_resume_layout(
                    self.fit_checkpoint.raw,
                    self.fit_checkpoint.path,
                    self.trainer.world_size,
                    getattr(self.datamodule, "batch_size", None),
                )
            changes = recipe_changes(self.fit_checkpoint, self.model)
            if changes and self.subcommand == "fit":
                rank_zero_info(
                    f"the config's recipe differs from the checkpoint's (the config's is used): "
                    f"{', '.join(changes)}"
                )
        _example_input(self.model, self.datamodule, self.trainer)
        # every split the command reads, parsed now: a bad one ends here, in one line
        if isinstance(self.datamodule, FGVCDataModule) and self.subcommand:
            try:
                self.datamodule.check_splits(self.subcommand)
            except (ValueError, OSError, FgvcError) as err:
                raise ConfigError(user_message(err)) from err


def _weights_from_checkpoint(config: Any, ckpt: FitCheckpoint | None) -> None:
    """A checkpoint's weights replace every starting weight, so ``model.pretrained`` is not
    read when one is given: the run folder or export a fine-tune started from may be gone,
    a download offline (``run.json`` keeps where the first start's weights came from)."""
    model = config.get("model")
    if ckpt is None or model is None or model.get("pretrained") is None:
        return
    rank_zero_info(
        f"model.pretrained {model.pretrained}: not read, the weights come from {ckpt.path}"
    )
    model.pretrained = None


def _example_input(model: Any, datamodule: Any, trainer: Any) -> None:
    """One zero image at the data's size: Lightning's model summary then counts the
    network's FLOPs and shows layer sizes (without one it prints ``FLOPs 0``). Not for a
    compiled backbone, which would compile once more for a batch of 1."""
    summary = any(isinstance(cb, ModelSummary) for cb in getattr(trainer, "callbacks", []))
    size = getattr(datamodule, "image_size", None)
    if summary and isinstance(size, int) and isinstance(model, FGVCClassifier):
        if not model.hparams.get("compile"):
            import torch

            model.example_input_array = torch.zeros(1, 3, size, size)


def slurm_interactive_tasks() -> int:
    """How many tasks an ``srun`` started in SLURM's interactive mode (job name ``bash`` or
    ``interactive``, where Lightning does not take SLURM as the launcher); 0 otherwise."""
    if os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return 0
    if "SLURM_PROCID" not in os.environ:  # a shell in the allocation, not an srun task
        return 0
    tasks = os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or "1"
    return int(tasks) if tasks.isdigit() else 1


def _one_job_for_interactive_srun(trainer: Any) -> None:
    """Several ``srun`` tasks in an interactive allocation would each launch a job of their
    own (two run folders, the work done twice): make them the processes of one job, as
    SLURM's environment does for batch jobs."""
    tasks = slurm_interactive_tasks()
    plugins = trainer.get("plugins")
    plugins = [] if plugins is None else plugins if isinstance(plugins, list) else [plugins]
    named = [str(getattr(p, "class_path", type(p).__name__)) for p in plugins]
    if tasks < 2 or any(name.endswith("Environment") for name in named):
        return
    slurm = Namespace(class_path=f"{SLURMEnvironment.__module__}.SLURMEnvironment")
    slurm.init_args = Namespace(auto_requeue=False)
    trainer.plugins = [*plugins, slurm]
    rank_zero_info(
        f"SLURM interactive mode (job name {os.environ['SLURM_JOB_NAME']}) with {tasks} srun "
        f"tasks: they run as the processes of one job"
    )


def _check_sync_batchnorm(trainer: Any) -> None:
    """torch's SyncBatchNorm runs on CUDA only: several CPU processes would fail with a
    traceback at start-up (in one process it changes nothing, and is left alone)."""
    if not trainer.get("sync_batchnorm"):
        return
    import torch

    accelerator = str(trainer.get("accelerator") or "auto")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    devices = trainer.get("devices")
    several = int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 or (trainer.get("num_nodes") or 1) > 1
    several = several or (isinstance(devices, int) and devices > 1) or str(devices) == "-1"
    several = several or (isinstance(devices, str) and devices.isdigit() and int(devices) > 1)
    if on_cpu and several:
        raise ConfigError(
            "trainer.sync_batchnorm true needs GPUs (torch's SyncBatchNorm runs on CUDA only); "
            "drop it for this CPU run"
        )


def _csv_logger_first(trainer: Any) -> None:
    """The first logger names the run folder (``trainer.log_dir``, the checkpoints): it must
    be the CSV logger, whose ``version_<n>`` folders ``--ckpt_path last`` searches."""
    loggers = trainer.get("logger")
    if isinstance(loggers, list):
        csv = [lg for lg in loggers if str(getattr(lg, "class_path", "")).endswith("CSVLogger")]
        trainer.logger = csv[:1] + [lg for lg in loggers if lg is not (csv[:1] or [None])[0]]


def _check_logger_folders(loggers: Any) -> None:
    """A logger's ``save_dir`` must be a folder fgvc can create and write in (tried, not
    guessed); jsonargparse would report a failure there as 'Not a valid subclass of Logger'
    with a dump of the config."""
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        save_dir = getattr(getattr(logger, "init_args", None), "save_dir", None)
        if not save_dir:
            continue
        try:
            Path(save_dir).expanduser().mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=Path(save_dir).expanduser(), prefix=".fgvc-")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            kind = logger.class_path.rsplit(".", 1)[-1]
            raise ConfigError(
                f"{kind} save_dir {save_dir}: cannot write there ({err.strerror or err}); "
                f"choose a writable folder"
            ) from err


def _optional(callback: Any) -> bool:
    return isinstance(callback, ProgressBar | LearningRateMonitor)


class _ParseOnly(FGVCCLI):
    """Parses and resolves the config (bases expanded, the run named, the run folder chosen)
    and builds nothing."""

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass

    def after_instantiate_classes(self) -> None:
        pass

    def _run_subcommand(self, subcommand: str) -> None:
        pass


def resolve_config(args: list[str]) -> dict[str, Any]:
    """The config ``fgvc <subcommand> <args>`` would run with, as a dict, nothing built or
    downloaded (for tests and tools; ``args`` start with the subcommand)."""
    cli = build_cli(args, parse_only=True)
    config = cli.config[cli.subcommand].as_dict()
    config.pop("config", None)  # the files it came from
    return config


def build_cli(
    args: list[str] | None = None,
    run: bool = True,
    parse_only: bool = False,
    cli_class: type[FGVCCLI] = FGVCCLI,
) -> FGVCCLI:
    """The LightningCLI (``run=False``: parse and instantiate only, for tests and tools;
    ``parse_only``: parse only, see :func:`resolve_config`; ``cli_class``: a subclass with
    other subcommands, such as ``fgvc tune``'s)."""
    from fgvc.train import quiet
    from fgvc.train.checkpoint_io import AtomicCheckpoints

    quiet.install()
    return (_ParseOnly if parse_only else cli_class)(
        FGVCClassifier,
        FGVCDataModule,
        subclass_mode_data=True,
        seed_everything_default=42,
        save_config_callback=ResumableSaveConfig,
        parser_class=ArgumentParser,
        trainer_defaults={
            "default_root_dir": RUNS_ROOT,
            "benchmark": True,  # fixed-size inputs: let cuDNN pick its fastest kernels
            # checkpoints written whole, beside their place (a class path: saved configs name it)
            "plugins": [{"class_path": "fgvc.train.checkpoint_io.AtomicCheckpointIO"}],
            "callbacks": [
                *checkpoint_callbacks(),
                AtomicCheckpoints(),  # ... even when --trainer.plugins replaces that list
                GracefulStop(),
                RunRecord(),
                EvalReports(),
                TrainingHealth(),
            ],
        },
        parser_kwargs={"description": "fine-grained recognition with iSQRT-COV networks"},
        args=args,
        run=run,
    )
