"""Ctrl-C, SIGTERM and a diverged loss during ``fit``: every process stops at the same
step, nothing hangs, nothing broken is saved.

A signal may reach each process at a different moment (a scheduler preempting the job, a
terminal's Ctrl-C, Lightning's launcher forwarding it to its children). A process that acts
on it alone - saving a checkpoint, which synchronizes, or leaving - would wait forever for
the others. So the signal handler only takes note (and forwards the signal to the processes
this one launched); at the start of every training step all processes agree, with one small
all-reduce on a CPU (gloo) group that never touches the GPU stream, whether any of them was
signalled, and if so they all raise :class:`Stopped` at that same step.

Without step checkpoints nothing is saved at the stop: the run continues exactly from the
``last.ckpt`` of the last completed epoch (``fgvc fit --ckpt_path last``), written
atomically, so it is intact whatever happens. With step checkpoints
(``checkpoint_every_n_steps``, :mod:`fgvc.train.resume`) the processes train the step they
agreed on, save ``last.ckpt`` after it (or, where no checkpoint can be taken there - the
epoch's last batch, one followed by validation or in a gradient accumulation - after the
first batch that allows one, the epoch-end checkpoint included) and stop at the next step:
the run continues inside the epoch. A process that has not reached a training step
``timeout`` seconds after the signal (stuck, or in a long evaluation) exits by itself. A
second Ctrl-C stops at once.

Lightning's launcher (``devices: 2`` without torchrun or SLURM) watches the processes it
started and SIGKILLs itself when one of them exits with a non-zero code - as each does after
an agreed stop (143, 130 or 1), however far the launcher still is from its own exit (closing
the W&B run, reporting). So at an agreed stop the launcher takes its children from that
watcher and waits for them itself, and they leave only once it has: the launcher exits last,
with the stop's own exit code.

A loss that is not finite (NaN, inf) stops the fit the same way, with :class:`Diverged`
(exit code 1): each step's finiteness is read one step later (so the check does not wait
for the GPU), and once more before validation and before the epoch's checkpoints are
written, so weights that went bad are never saved, exported or called best.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.utilities.exceptions import SIGTERMException

from fgvc.errors import FgvcError
from fgvc.train.resume import can_save_inside_epoch, step_checkpoint

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(SIGTERMException):
    """Training stopped on a signal, at the same step in every process."""

    def __init__(self, signum: int, epoch: int, step: int, saved: bool = False) -> None:
        self.signame = signal.Signals(signum).name
        self.epoch = epoch
        #: last.ckpt holds this very step (step checkpoints on), not the last epoch's end
        self.saved = saved
        super().__init__(f"stopped by {self.signame} in epoch {epoch} (step {step})")


class Diverged(FgvcError, RuntimeError):
    """The training loss stopped being finite (in any process)."""


class GracefulStop(pl.Callback):
    """Stop every process at the same training step after SIGTERM or Ctrl-C (see module doc).

    Args:
        timeout: seconds after the signal after which a process that has not stopped exits
            by itself (before a scheduler's SIGKILL, usually 30 s later).
    """

    def __init__(self, timeout: float = 25.0) -> None:
        self.timeout = timeout
        self.requested: int | None = None
        self._at = 0.0
        self._group: Any = None
        self._installed = False
        self._watchdog: threading.Timer | None = None
        # the last training step's loss finiteness (a device tensor, read a step later),
        # and that step's number, epoch and learning rates
        self._finite: torch.Tensor | None = None
        self._last: tuple[int, int, list[float]] | None = None
        self._children: list[subprocess.Popen] = []  # the launcher's, after an agreed stop
        # with step checkpoints: the agreed signal, until last.ckpt is saved; then the stop
        self._save_then_stop = 0
        self._stop_now = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.world_size > 1 and dist.is_initialized():
            self._group = dist.new_group(backend="gloo")  # collective: every rank is here

    # Installed once Lightning has put in its own SIGTERM handler (which synchronizes inside
    # the handler and can deadlock): from the sanity check on, or at the start of training.
    # Lightning's teardown puts back the handlers from before the fit.
    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer)

    def _install(self, trainer: pl.Trainer) -> None:
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        self._installed, self.requested = True, None
        self._save_then_stop = self._stop_now = 0
        for signum in _SIGNALS:
            signal.signal(signum, self._make_handler(trainer))

    def _make_handler(self, trainer: pl.Trainer) -> Any:
        def handler(signum: int, frame: FrameType | None) -> None:
            now = time.monotonic()
            # a second Ctrl-C stops at once; one arriving with the first is the same keypress
            # reaching this process twice (the terminal's, and a launcher's forwarding)
            if self.requested is not None and signum == signal.SIGINT and now - self._at > 1:
                raise KeyboardInterrupt
            if self.requested is not None:
                return
            self.requested, self._at = signum, now
            self._start_watchdog(signum)
            launcher = trainer.strategy.launcher
            if signum == signal.SIGTERM and hasattr(launcher, "kill"):
                # a scheduler may signal only the launcher; Ctrl-C reaches the whole group
                launcher.kill(signum)
            if trainer.is_global_zero:  # os.write: print() may be mid-write on this thread
                name = signal.Signals(signum).name
                os.write(
                    2,
                    f"\nfgvc: {name} received; stopping every process at the next training step "
                    f"(Ctrl-C again to stop at once)\n".encode(),
                )

        return handler

    def _start_watchdog(self, signum: int) -> None:
        def expire() -> None:
            os.write(
                2,
                f"fgvc: still running {self.timeout:.0f} s after {signal.Signals(signum).name}; "
                f"exiting (resume from last.ckpt with --ckpt_path last)\n".encode(),
            )
            os._exit(128 + signum)

        self._watchdog = threading.Timer(self.timeout, expire)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _stand_down(self) -> None:
        # every process agreed (or training ended): nothing is left that could hang
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            lrs = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]
            self._finite = torch.isfinite(loss.detach()).all()
            # global_step counts the step just taken; report it 0-based like Lightning's logs
            self._last = (trainer.global_step - 1, trainer.current_epoch, lrs)
        signum = self._save_then_stop
        if not signum:
            return
        # every process agreed on this step: save after it (all together), then stop
        saver = step_checkpoint(trainer)
        if saver is not None and can_save_inside_epoch(trainer):
            saver.save_inside_epoch(trainer, pl_module)
        elif not trainer.fit_loop.epoch_loop._num_ready_batches_reached():
            return  # validation or an accumulation follows: save after the next step
        # (the epoch's last batch: its epoch-end checkpoint is written before the next step)
        self._save_then_stop, self._stop_now = 0, signum

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._stop_now:  # agreed earlier, and last.ckpt saved since
            signum, self._stop_now = self._stop_now, 0
            self._stop_together(trainer)
            raise Stopped(signum, trainer.current_epoch, trainer.global_step, saved=True)
        if self._save_then_stop:  # agreed: this step is trained, then saved
            return
        signum = self._agree(trainer)
        if signum and step_checkpoint(trainer) is not None:
            self._stand_down()  # nothing can hang now: every process saves after this step
            self._save_then_stop = signum
        elif signum:
            self._stop_together(trainer)
            raise Stopped(signum, trainer.current_epoch, trainer.global_step)

    def check_weights(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Before a checkpoint inside an epoch (every process at the same step): raises
        :class:`Diverged` when the last loss or any weight is not finite in any process."""
        self._agree(trainer, pl_module)

    # before anything is evaluated or saved with weights that may have gone bad
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._agree(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._agree(trainer, pl_module)

    def _agree(self, trainer: pl.Trainer, weights: pl.LightningModule | None = None) -> int:
        """One all-reduce over every process: the signal any of them received (0: none).

        Raises :class:`Diverged` when any process's last loss was not finite, or (with
        ``weights``, once an epoch: a full scan) any of its parameters is not: a step can
        blow the weights up while its own loss was still finite.
        """
        finite, self._finite = self._finite, None
        bad = finite is not None and not bool(finite.item())
        if weights is not None and not bad:
            tensors = [*weights.parameters(), *weights.buffers()]  # BatchNorm statistics too
            params = [t.detach().isfinite().all() for t in tensors if t.is_floating_point()]
            bad = bool(params) and not bool(torch.stack(params).all().item())
        flag = torch.tensor([self.requested or 0, int(bad)], dtype=torch.int64)
        if self._group is not None:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        if flag[1].item():
            self._stop_together(trainer)
            raise Diverged(_diverged_message(trainer, self._last if bad else None))
        return int(flag[0].item())

    def _stop_together(self, trainer: pl.Trainer) -> None:
        """Every process agreed to stop: the launcher takes its children from Lightning's
        watcher (see the module doc), then all meet once more, so that no child can exit
        before that is done."""
        self._stand_down()
        procs = getattr(trainer.strategy.launcher, "procs", None)
        if isinstance(procs, list) and procs:
            self._children = list(procs)
            procs.clear()  # the watcher holds this very list: it sees no child and ends
        if self._group is not None:
            dist.barrier(group=self._group)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        # the launcher exits after its children (which stop by themselves; one stuck
        # ``timeout`` seconds is killed, as Lightning's watcher would have)
        children, self._children = self._children, []
        for child in children:
            try:
                child.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stand_down()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._stand_down()
        self._installed = False
        if self._group is not None:
            dist.destroy_process_group(self._group)
            self._group = None


def _diverged_message(trainer: pl.Trainer, last: tuple[int, int, list[float]] | None) -> str:
    where = "in another process"
    if last is not None:
        step, epoch, lrs = last
        rate = f" with learning rates up to {max(lrs):.3g}" if lrs else ""
        where = f"at step {step} (epoch {epoch}){rate}"
    last = next((c for c in trainer.checkpoint_callbacks if c.monitor is None), None)
    saved = getattr(last, "last_model_path", "") or getattr(last, "best_model_path", "")
    keep = f"; {saved} holds the last weights saved" if saved else ""
    return (
        f"training diverged: the loss or the weights stopped being finite {where}; stopped "
        f"without saving the broken weights"
        f"{keep} - lower model.lr (e.g. 10x) and train again"
    )
