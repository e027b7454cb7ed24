"""``fgvc tune``: the learning-rate search as a LightningCLI subcommand, and what it writes.

:class:`TuneCLI` is :class:`~fgvc.train.cli.FGVCCLI` with one subcommand, ``tune``, whose
options are the arguments of :meth:`TuneTrainer.tune`; the config, overrides, links and
checks are those of ``fit``. The search (:mod:`fgvc.train.lr_finder`) runs in one process and
writes into a folder of its own, ``<save_dir>/<name>/tune_<n>/`` (:func:`fgvc.runs.
claim_tune_folder`)::

    config.yaml   run.json ({"command": "tune", ...})
    lr_find.png   the smoothed training loss against the base rate, the suggestion marked
    lr_find.csv   step, lr (base), loss, the rate of each part, suggested (1 on its row)
    lr_find.json  the suggestion, the model.lr it means, the search, the batch-size finder

and, when the config's W&B logger is active, logs the plot, the curve and the suggestion to a
W&B run of its own (``<name>-tune``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
from jsonargparse import Namespace
from pytorch_lightning.cli import LightningArgumentParser
from pytorch_lightning.utilities import rank_zero_info

from fgvc.errors import ConfigError
from fgvc.runs import claim_tune_folder
from fgvc.train.callbacks import ResumableSaveConfig
from fgvc.train.cli import FGVCCLI, build_cli
from fgvc.train.loggers import active_wandb_loggers
from fgvc.train.lr_finder import (
    BatchSearch,
    LRSearch,
    TrainSplit,
    batch_finder_skipped,
    check_search,
    find_batch_size,
    find_lr,
    temporary_checkpoints_in,
)
from fgvc.train.module import FGVCClassifier
from fgvc.train.run_folder import CSV_LOGGER, UNNAMED, csv_logger, loggers
from fgvc.utils.atomic import atomic_file, atomic_write_text

PLOT, TABLE, SUMMARY = "lr_find.png", "lr_find.csv", "lr_find.json"
#: the options of ``fgvc tune`` that ``fit`` does not take (dropped from the suggested command)
TUNE_OPTIONS = (
    "min_lr",
    "max_lr",
    "num_training",
    "mode",
    "early_stop_threshold",
    "batch_size_finder",
)


@dataclass
class TuneResult:
    """What ``fgvc tune`` found and where it wrote it."""

    search: LRSearch
    batch: BatchSearch
    folder: Path
    notes: list[str]
    wandb_runs: list[tuple[str | None, str, str]]  # (folder, mode, why that mode)


class TuneTrainer(pl.Trainer):
    """Lightning's Trainer with the ``tune`` method the ``fgvc tune`` subcommand runs."""

    tune_result: TuneResult | None = None

    def tune(
        self,
        model: FGVCClassifier,
        datamodule: Any = None,
        min_lr: float = 1e-7,
        max_lr: float = 1.0,
        num_training: int = 100,
        mode: Literal["exponential", "linear"] = "exponential",
        early_stop_threshold: float | None = 4.0,
        batch_size_finder: bool | None = None,
    ) -> TuneResult:
        """Find a learning rate for the config (Lightning's range test on its training split)
        and, on a GPU, the largest batch that fits; prints the model.lr to use.

        Args:
            model: the configured model.
            datamodule: the configured data (only its training samples are read).
            min_lr: the smallest base rate tried (each part at its lr_mult of it).
            max_lr: the largest base rate tried.
            num_training: training steps of the search, one rate each.
            mode: how the rate grows from step to step.
            early_stop_threshold: stop once the smoothed loss exceeds this many times its
                lowest value (null: never).
            batch_size_finder: run Lightning's batch-size finder first (null: on a GPU only).
        """
        folder = Path(str(self.log_dir))
        notes = []
        if model.hparams.freeze_backbone_epochs:
            notes.append(
                f"model.freeze_backbone_epochs {model.hparams.freeze_backbone_epochs}: the "
                f"search trains the whole network, as after the freeze (the rate is the same "
                f"in both phases)"
            )
            model.hparams.freeze_backbone_epochs = 0
        data = TrainSplit(datamodule)
        # enough epochs for the search's steps on a small training set (max_steps stops it)
        needed = num_training * self.accumulate_grad_batches
        self.fit_loop.max_epochs = max(self.max_epochs or 1, needed)
        skipped = batch_finder_skipped(self)
        configured = data.batch_size
        with warnings.catch_warnings(), temporary_checkpoints_in(self, folder):
            # no validation, on purpose: Lightning's notes about it would read as a fault
            warnings.filterwarnings("ignore", message=".*val_dataloader.*")
            warnings.filterwarnings("ignore", message="Total length of .* is zero")
            if batch_size_finder is False:
                batch = BatchSearch(None, configured, configured, "not asked for")
            elif skipped and batch_size_finder is None:
                batch = BatchSearch(None, configured, configured, skipped)
            else:
                batch = find_batch_size(self, model, data)
            search = find_lr(
                self, model, data, min_lr, max_lr, num_training, mode, early_stop_threshold
            )
        write_outputs(folder, search, batch)
        result = TuneResult(search, batch, folder, notes, log_to_wandb(self, model, search, batch))
        self.tune_result = result
        return result


class TuneRecord(ResumableSaveConfig):
    """The resolved config and ``run.json`` with the command ``tune`` (Lightning runs the
    search inside a ``fit``)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, "tune")


class TuneCLI(FGVCCLI):
    """:class:`FGVCCLI` with the one subcommand ``tune`` (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.update(trainer_class=TuneTrainer, save_config_callback=TuneRecord)
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"tune": {"model", "datamodule"}}

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        config = self.config.get("tune")
        if config is None:
            return
        config.pop("weights_only", None)  # fit's checkpoint setting: no option of tune
        try:
            check_search(config.min_lr, config.max_lr, config.num_training, config.mode)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if config.early_stop_threshold is not None and config.early_stop_threshold <= 1:
            raise ConfigError(
                f"--early_stop_threshold must be > 1 (a multiple of the lowest loss) or null, "
                f"got {config.early_stop_threshold}"
            )
        _one_process(config.trainer)
        self.tune_folder = _tune_folder(config.trainer)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except BaseException:
            # a bad config value: the folder claimed for the search stays empty
            folder = getattr(self, "tune_folder", None)
            if folder is not None and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
            raise


def _one_process(trainer: Any) -> None:
    """The search runs in one process: the rate it finds at that global batch becomes the
    config's model.lr through lr_scaling, which scales it to any number of processes."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ConfigError(
            "fgvc tune runs in one process: start it without torchrun / srun tasks (the rate "
            "it finds is converted to model.lr_batch_size, which scales to every device)"
        )
    devices = trainer.get("devices")
    one = devices in (1, "1") or (isinstance(devices, list) and len(devices) == 1)
    if not one:
        trainer.devices = 1
    if (trainer.get("num_nodes") or 1) > 1:
        trainer.num_nodes = 1
    if isinstance(trainer.get("strategy"), str) and trainer.strategy != "auto":
        trainer.strategy = "auto"
    if not one and devices not in (None, "auto"):
        rank_zero_info(
            f"fgvc tune: searching on one device (the config says devices {devices}); the "
            f"model.lr it suggests is for lr_batch_size, which lr_scaling scales to them all"
        )


def _tune_folder(trainer: Any) -> Path:
    """The CSV logger names the folder: ``tune_<n>`` beside the config's runs, claimed now;
    a W&B logger gets the run name ``<name>-tune``."""
    csv_lg = csv_logger(trainer)
    if csv_lg is None:  # only a W&B logger: a CSV logger first, to name the folder
        save_dir = trainer.get("default_root_dir") or "runs"
        init = Namespace(save_dir=str(save_dir), name=UNNAMED)
        csv_lg = Namespace(class_path=CSV_LOGGER, init_args=init)
        trainer.logger = [csv_lg, *loggers(trainer)]
    args = csv_lg.init_args
    folder = claim_tune_folder(args.save_dir, args.name)
    args.version = folder.name
    for logger in loggers(trainer):
        if str(getattr(logger, "class_path", "")).endswith("WandbLogger"):
            name = logger.init_args.get("name")
            if name and not str(name).endswith("-tune"):
                logger.init_args.name = f"{name}-tune"
    return folder


# ------------------------------------------------------------------------------ outputs
def plot_search(search: LRSearch, path: Path) -> None:
    """The loss-vs-rate curve as a PNG, the suggestion marked (written whole)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    losses = [x if math.isfinite(x) else math.nan for x in search.losses]
    figure = Figure(figsize=(7.5, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(search.lrs, losses, color="tab:blue")
    axes.plot(search.found, losses[search.index], "o", color="tab:red", markersize=8)
    if search.mode == "exponential":
        axes.set_xscale("log")
    mults = ", ".join(f"{k} x{v:g}" for k, v in search.multipliers.items())
    axes.set_xlabel(f"base learning rate at global batch {search.global_batch} ({mults})")
    axes.set_ylabel("training loss (smoothed)")
    axes.set_title(
        f"steepest descent at {search.found:.3g}: model.lr {search.model_lr:.3g} "
        f"for lr_batch_size {search.lr_batch_size} ({search.rule} scaling)",
        fontsize=10,
    )
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    with atomic_file(path, "wb") as file:
        figure.savefig(file, format="png")


def write_outputs(folder: Path, search: LRSearch, batch: BatchSearch) -> None:
    """``lr_find.png``, ``lr_find.csv`` and ``lr_find.json`` in ``folder``."""
    plot_search(search, folder / PLOT)
    parts = list(search.multipliers)
    with atomic_file(folder / TABLE, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["step", "lr", "loss", *(f"lr_{p}" for p in parts), "suggested"])
        for step, (lr, loss) in enumerate(zip(search.lrs, search.losses)):
            rates = [repr(lr * search.multipliers[p]) for p in parts]
            writer.writerow([step, repr(lr), repr(loss), *rates, int(step == search.index)])
    record = {k: v for k, v in asdict(search).items() if k not in ("lrs", "losses")}
    record.update(steps=len(search.lrs), stopped_early=search.stopped_early)
    record["batch_size_finder"] = asdict(batch)
    text = json.dumps(record, indent=2, allow_nan=True)
    atomic_write_text(folder / SUMMARY, text + "\n")


def log_to_wandb(
    trainer: pl.Trainer, model: FGVCClassifier, search: LRSearch, batch: BatchSearch
) -> list[tuple[str | None, str, str]]:
    """The plot, the curve and the suggestion into the config's active W&B runs; returns
    (run folder, mode, why) of each."""
    runs = []
    for logger in active_wandb_loggers(trainer):
        import wandb

        data = getattr(trainer.datamodule, "hparams", {})
        logger.log_hyperparams({**dict(model.hparams), **dict(data)})
        finite = [[lr, loss] for lr, loss in zip(search.lrs, search.losses) if math.isfinite(loss)]
        logger.experiment.log(
            {
                "tune/lr_find": wandb.Image(str(Path(trainer.log_dir, PLOT))),
                "tune/lr_find_curve": wandb.Table(columns=["lr", "loss"], data=finite),
            }
        )
        logger.experiment.summary.update(
            {
                "tune/suggested_lr": search.found,
                "tune/model_lr": search.model_lr,
                "tune/global_batch": search.global_batch,
                "tune/lr_batch_size": search.lr_batch_size,
                "tune/batch_size_found": batch.found,
            }
        )
        runs.append((logger.run_dir(), logger.wandb_mode, logger.mode_reason))
    return runs


def build_tune_cli(args: list[str]) -> TuneCLI:
    """The ``fgvc tune`` CLI, run (``args``: what follows ``fgvc``, ``tune`` first)."""
    return build_cli(args, cli_class=TuneCLI)
