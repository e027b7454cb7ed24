"""Training callbacks: best / last checkpoints, the resolved config and what a resumed run
needs in every run folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import SaveConfigCallback

from fgvc.runs import BEST_PREFIX, MONITOR, RUN_RECORD, WANDB_ID
from fgvc.train.elastic import launch_record
from fgvc.utils.atomic import atomic_write_text


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint``, which also recognizes its own folder when a resumed
    run names it by another path (``runs/x`` and ``/home/me/runs/x``) or the run folder was
    moved (copied off a cluster): Lightning would then forget the best score and keep a
    worse checkpoint as the new best beside the real one. The saved paths are moved to the
    folder the run continues in. Its state is saved under ``ModelCheckpoint``'s own key, so
    runs saved before resume with their best so far and :mod:`fgvc.runs` finds the state
    that names the best file."""

    @property
    def state_key(self) -> str:
        key = super().state_key
        return "ModelCheckpoint" + key[len(type(self).__qualname__) :]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and old != new and _same_run_folder(state_dict, str(old), str(new)):
            state_dict = _moved(state_dict, str(old), str(new))
        super().load_state_dict(state_dict)


def _same_run_folder(state: dict[str, Any], old: str, new: str) -> bool:
    """``old`` is ``new`` by another path, or ``new`` holds the checkpoints ``old`` did."""
    if os.path.realpath(old) == os.path.realpath(new):
        return True
    best = state.get("best_model_path") or ""
    return bool(best) and Path(new, Path(best).name).is_file()


def _moved(state: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    def move(path: Any) -> Any:
        return str(Path(new, Path(path).name)) if isinstance(path, str) and path else path

    state = dict(state, dirpath=new)
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if key in state:
            state[key] = move(state[key])
    if isinstance(state.get("best_k_models"), dict):
        state["best_k_models"] = {move(k): v for k, v in state["best_k_models"].items()}
    return state


def monitor_mode(monitor: str) -> str:
    """``"min"`` for a loss, ``"max"`` for an accuracy."""
    return "min" if monitor.endswith("loss") else "max"


class BestCheckpoint(RunCheckpoint):
    """The best checkpoint on the module's ``monitor`` hyperparameter (``model.monitor``;
    ``monitor`` here for a module without one), read when the run is set up, before a
    resumed run restores this callback's state. Named
    ``best-epoch<NNN>-<metric>_<value>.ckpt``."""

    def __init__(self, monitor: str = MONITOR) -> None:
        super().__init__(save_top_k=1, auto_insert_metric_name=False)
        self._watch(monitor)

    def _watch(self, monitor: str) -> None:
        self.monitor, self.mode = monitor, monitor_mode(monitor)
        self.kth_value = torch.tensor(torch.inf if self.mode == "min" else -torch.inf)
        metric = monitor.split("/", 1)[-1]
        self.filename = f"{BEST_PREFIX}-epoch{{epoch:03d}}-{metric}_{{{monitor}:.4f}}"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        monitor = getattr(pl_module, "hparams", {}).get("monitor")
        if isinstance(monitor, str) and monitor != self.monitor and not self.best_k_models:
            self._watch(monitor)
        super().setup(trainer, pl_module, stage)


def best_checkpoint(trainer: Any) -> ModelCheckpoint | None:
    """The trainer's best-checkpoint callback: the :class:`BestCheckpoint`, else one on
    :data:`~fgvc.runs.MONITOR` (a config may add other ModelCheckpoints)."""
    callbacks = list(trainer.checkpoint_callbacks)
    best = [c for c in callbacks if isinstance(c, BestCheckpoint)]
    return next(iter(best or [c for c in callbacks if c.monitor == MONITOR]), None)


class ResumableSaveConfig(SaveConfigCallback):
    """Saves the resolved config as ``config.yaml``; a resumed run that writes into the
    same folder adds ``config.resume-<n>.yaml`` (``config.test-<n>.yaml`` for a test of the
    run's checkpoint) instead of replacing the original. Also records the command that
    created the folder (:data:`fgvc.runs.RUN_RECORD`: ``--ckpt_path last`` resumes only
    runs of ``fit``)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        log_dir = trainer.log_dir  # every rank: a collective under DDP
        stage = str(getattr(stage, "value", stage))  # Lightning passes a TrainerFn
        if log_dir is not None and self.config_filename == "config.yaml":
            n = 1
            kind = "resume" if stage == "fit" else stage
            while (Path(log_dir) / self.config_filename).exists():
                self.config_filename = f"config.{kind}-{n}.yaml"
                n += 1
        if log_dir is not None and trainer.is_global_zero:
            record = Path(log_dir) / RUN_RECORD
            if not record.exists():
                Path(log_dir).mkdir(parents=True, exist_ok=True)
                fields = {"command": stage, **launch_record()}
                weights = getattr(getattr(pl_module, "model", None), "pretrained_record", None)
                if weights is not None:  # where the starting weights came from
                    fields["pretrained"] = weights.to_dict()
                atomic_write_text(record, json.dumps(fields) + "\n")
        super().setup(trainer, pl_module, stage)


class RunRecord(pl.Callback):
    """What ``fit --ckpt_path last`` needs to continue a run as one: the W&B run's id in
    ``<run>/wandb_run_id`` (the resumed run logs into the same W&B run), and, when resuming,
    ``metrics.csv`` without the rows of the epochs about to be trained again."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from fgvc.train.loggers import CSVLogger, active_wandb_loggers

        log_dir = trainer.log_dir  # every rank: a collective under DDP
        if trainer.ckpt_path:
            # inside an epoch (fgvc.train.resume): its rows before the checkpoint stay
            epoch = trainer.current_epoch + int(trainer.fit_loop.restarted_mid_epoch)
            for logger in trainer.loggers:
                if isinstance(logger, CSVLogger):
                    logger.drop_from(epoch, trainer.global_step)
        wandb = active_wandb_loggers(trainer)
        if trainer.is_global_zero and wandb and log_dir:
            atomic_write_text(Path(log_dir, WANDB_ID), wandb[0].experiment.id + "\n")
