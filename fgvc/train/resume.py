"""Checkpoints inside an epoch: ``last.ckpt`` every N training steps, and at a stop.

An ImageNet epoch is long; with ``checkpoint_every_n_steps: N`` (a top-level key of the
config, ``--checkpoint_every_n_steps N`` on the command line) the run's ``last.ckpt`` is
also rewritten every N optimizer steps inside an epoch, atomically like every checkpoint
(:class:`~fgvc.train.checkpoint_io.AtomicCheckpointIO`), and ``fit --ckpt_path last``
continues from it exactly: the resumed run ends with the weights, ``metrics.csv`` rows and
best checkpoint of a run that was never interrupted. The best checkpoint and the epoch-end
``last.ckpt`` are written as before.

What a checkpoint inside an epoch holds beyond an epoch-end one:

* the training loader's position (Lightning saves and restores every loader with
  ``state_dict`` / ``load_state_dict``; :mod:`fgvc.data.resume`), so the rest of the epoch
  is the rest of the same order, every image once;
* the training metrics accumulated so far in the epoch (torchmetrics states, which Lightning
  does not save), for every process: ``train/loss`` and ``train/top1`` of that epoch are the
  uninterrupted run's;
* Lightning's own loop counters (batch index, global step, the learning-rate schedule's
  step), which it restores itself.

The same goes for the ``last.ckpt`` Lightning writes after a validation inside an epoch
(``val_check_interval``): it continues exactly too.

A step checkpoint is written after the optimizer step of a batch that is neither the last of
its epoch (the epoch-end checkpoint follows), nor followed by a validation
(``val_check_interval``: Lightning would not run it again after a restart), nor in the middle
of a gradient accumulation (the accumulated gradients are not saved): when step N is such a
batch, the first batch after it that is not. A run whose training loader is not resumable
is refused at the start with one line.

Limits: a checkpoint inside an epoch continues on the same processes and per-process batch
size only (refused in one line before anything is written: :func:`check_resume_layout`);
an epoch value a LightningModule logs as a plain tensor (``self.log(name, tensor,
on_epoch=True)``) rather than a torchmetrics object starts its mean again at the checkpoint
(fgvc's module logs torchmetrics objects).

**At a stop**: with step checkpoints on, SIGTERM and Ctrl-C (:mod:`fgvc.train.interrupt`)
let every process finish the step they agreed on, save ``last.ckpt`` there, and exit
(143, 130): a preempted or requeued job, or a torchrun restart, loses nothing. Without the
option nothing is saved at a stop, as before (the run continues from its last epoch's end):
the option says the run's epochs are long enough for that to matter.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from lightning_fabric.utilities.types import _Stateful
from pytorch_lightning.callbacks import ModelCheckpoint
from torchmetrics import Metric

from fgvc.errors import ConfigError
from fgvc.runs import LAST
from fgvc.train.callbacks import BestCheckpoint, RunCheckpoint

#: the checkpoint key holding what a checkpoint inside an epoch adds (see the module doc)
MID_EPOCH = "fgvc_mid_epoch"


def check_every_n_steps(value: Any) -> int | None:
    """``checkpoint_every_n_steps`` as given: None (off) or a positive int.

    Raises:
        ConfigError: zero, negative or not a whole number.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"checkpoint_every_n_steps must be a whole number of training steps >= 1, got "
            f"{value!r}; leave it out to save last.ckpt at epoch ends only"
        )
    return value


def checkpoint_callbacks(every_n_steps: int | None = None) -> list[ModelCheckpoint]:
    """The best checkpoint on ``model.monitor`` (:class:`~fgvc.train.callbacks.BestCheckpoint`)
    and ``last.ckpt`` (:class:`StepCheckpoint`: every epoch, and every ``every_n_steps``).

    Two callbacks: Lightning's ``save_last`` only refreshes ``last.ckpt`` in epochs that
    also saved a best checkpoint, which would make resuming restart from an old epoch.
    """
    return [BestCheckpoint(), StepCheckpoint(every_n_steps)]


def check_resume_layout(
    checkpoint: Mapping[str, Any], path: Any, world_size: int, batch: Any
) -> None:
    """Before anything is built or written: a checkpoint saved inside an epoch continues on
    its own processes and batch size only (see :mod:`fgvc.data.resume`).

    Args:
        checkpoint: the checkpoint (``--ckpt_path``) as read.
        path: its path, for the message.
        world_size: this run's processes.
        batch: this run's per-process batch size (None: unknown).

    Raises:
        ConfigError: another layout.
    """
    if MID_EPOCH not in checkpoint:  # saved at an epoch's end: any layout continues
        return
    loops = checkpoint.get("loops") or {}
    loop_state = (loops.get("fit_loop") or {}).get("state_dict") or {}
    for state in loop_state.get("combined_loader") or []:
        saved = (state.get("world_size"), state.get("batch_size"))
        if None in saved or state.get("batches", 0) == 0:
            continue
        if saved != (world_size, batch if isinstance(batch, int) else saved[1]):
            raise ConfigError(
                f"{path} was saved inside an epoch by {saved[0]} process(es) x {saved[1]} "
                f"images, this run has {world_size} x {batch}: a checkpoint inside an epoch "
                f"continues only on the same processes and batch size (trainer.devices x "
                f"num_nodes, data.init_args.batch_size) - resume with those, or from a "
                f"checkpoint saved at an epoch's end"
            )


def can_save_inside_epoch(trainer: pl.Trainer) -> bool:
    """After this batch's training step, would a checkpoint resume exactly (see the module
    doc)? Call from ``on_train_batch_end``."""
    loop = trainer.fit_loop.epoch_loop
    if loop._should_accumulate() or loop._num_ready_batches_reached():
        return False
    fetcher = trainer.fit_loop._data_fetcher
    return fetcher is None or not loop._should_check_val_fx(fetcher)


def inside_epoch(trainer: pl.Trainer) -> bool:
    """Is a checkpoint saved now one from inside a training epoch (every process asks at
    the same point: saves are collective)?"""
    loop = trainer.fit_loop.epoch_loop
    return (
        trainer.state.fn == "fit"
        and not trainer.sanity_checking
        and loop.batch_progress.current.ready > 0
        and not loop._num_ready_batches_reached()
    )


def step_checkpoint(trainer: pl.Trainer) -> StepCheckpoint | None:
    """The trainer's :class:`StepCheckpoint` when step checkpoints are on, else None."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, StepCheckpoint) and callback.every_n_steps:
            return callback
    return None


class StepCheckpoint(RunCheckpoint):
    """``last.ckpt``: rewritten after every epoch and, with ``every_n_steps``, inside epochs
    (see the module doc).

    Args:
        every_n_steps: optimizer steps between checkpoints inside an epoch; None: none.
    """

    def __init__(self, every_n_steps: int | None = None) -> None:
        super().__init__(save_top_k=1, filename=Path(LAST).stem, enable_version_counter=False)
        self.every_n_steps = check_every_n_steps(every_n_steps)
        self._due = False
        self._flush = False
        self._group: Any = None
        self._restore: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # for the metric states of checkpoints inside an epoch (also those Lightning saves
        # after a validation inside one, val_check_interval)
        if stage == "fit" and trainer.world_size > 1 and dist.is_initialized():
            self._group = dist.new_group(backend="gloo")  # collective: every rank is here

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        if self._group is not None:
            dist.destroy_process_group(self._group)
            self._group = None

    # -------------------------------------------------------------------- when to save
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        loader = trainer.fit_loop._combined_loader
        loaders = loader.flattened if loader is not None else []
        if self.every_n_steps and not all(isinstance(dl, _Stateful) for dl in loaders):
            names = ", ".join(sorted({type(dl).__name__ for dl in loaders}))
            raise ConfigError(
                f"checkpoint_every_n_steps needs a training loader that can continue inside "
                f"an epoch (with state_dict and load_state_dict), and {names} cannot; use an "
                f"fgvc DataModule, or leave the option out"
            )
        restore, self._restore = self._restore, None
        # the loader's position is given back by the module's on_train_start (after this
        # hook), through restart_training_iterator, for every resume
        if trainer.fit_loop.restarted_mid_epoch and restore is not None:
            _restore_metrics(trainer, pl_module, restore)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._flush:  # the saved step's own rows, logged after its checkpoint
            self._flush = False
            for logger in trainer.loggers:
                logger.save()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self.every_n_steps or self._should_skip_saving_checkpoint(trainer):
            return
        if trainer.global_step > 0 and trainer.global_step % self.every_n_steps == 0:
            self._due = True
        if self._due and can_save_inside_epoch(trainer):
            self.save_inside_epoch(trainer, pl_module)

    def save_inside_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write ``last.ckpt`` now, after this batch's step (every process calls this at the
        same step: the weights' finiteness check and the metric states are collectives)."""
        for callback in trainer.callbacks:  # never save weights that went bad
            check = getattr(callback, "check_weights", None)
            if callable(check):
                check(trainer, pl_module)
        self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
        self._flush = True

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self._due = False  # an epoch-end save counts too

    # --------------------------------------------------------- what a save adds and restores
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if not inside_epoch(trainer):
            return
        states = _metric_states(trainer, pl_module)
        gathered = [states]
        if self._group is not None:
            gathered = [None] * trainer.world_size
            dist.all_gather_object(gathered, states, group=self._group)
        checkpoint[MID_EPOCH] = {"world_size": trainer.world_size, "metrics": gathered}

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._restore = checkpoint.get(MID_EPOCH)


def restart_training_iterator(trainer: pl.Trainer) -> None:
    """Start the training iterator again once a resumed run's epoch (and, inside an epoch,
    the loader's saved position) is restored; call once, from ``on_train_start``.

    ``configure_optimizers`` asks for ``estimated_stepping_batches``, which makes Lightning
    start the training iterator before the checkpoint is restored (its #20550, #21960): the
    loader's saved state would be dropped and workers would prefetch epoch 0's samples (order,
    augmentation seeds, progressive image size). No batch has been taken yet: the fetcher
    starts over, and the epoch loop counts the batches done before from its restored progress.
    """
    loop = trainer.fit_loop
    if not loop.is_resuming or loop._data_fetcher is None:
        return
    if loop._combined_loader_states_to_load:  # saved inside an epoch
        loop._load_combined_loader_states()
    iter(loop._data_fetcher)


def _metric_states(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """This process's states of the metrics the training epoch accumulates: those logged
    as torchmetrics objects with ``on_epoch`` (found in Lightning's training results)."""
    names = {id(m): name for name, m in pl_module.named_modules() if isinstance(m, Metric)}
    states = {}
    for result in trainer.fit_loop.epoch_loop._results.result_metrics:
        metric = result.value
        if result.is_tensor or not result.meta.on_epoch or id(metric) not in names:
            continue
        values = {key: getattr(metric, key) for key in metric._defaults}
        states[names[id(metric)]] = {
            "state": {k: _to_cpu(v) for k, v in values.items()},
            "updates": int(metric._update_count),
        }
    return states


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    return [_to_cpu(v) for v in value] if isinstance(value, list) else value


def _restore_metrics(
    trainer: pl.Trainer, pl_module: pl.LightningModule, saved: dict[str, Any]
) -> None:
    """Put this process's saved metric states back (see :func:`_metric_states`)."""
    if saved.get("world_size") != trainer.world_size:
        raise ConfigError(
            f"the checkpoint was saved inside an epoch by {saved.get('world_size')} "
            f"process(es), this run has {trainer.world_size}: resume with as many, or from a "
            f"checkpoint saved at an epoch's end"
        )
    modules = dict(pl_module.named_modules())
    device = pl_module.device
    for name, entry in saved["metrics"][trainer.global_rank].items():
        metric = modules.get(name)
        if not isinstance(metric, Metric):
            raise ConfigError(
                f"the checkpoint holds the state of a training metric {name!r} that this "
                f"model does not have; resume with the run's own config"
            )
        for key, value in entry["state"].items():
            if isinstance(value, list):
                setattr(metric, key, [v.to(device) for v in value])
            else:
                setattr(metric, key, value.to(device) if torch.is_tensor(value) else value)
        metric._update_count = entry["updates"]
        metric._computed = None
