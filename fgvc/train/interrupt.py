"""Ctrl-C and SIGTERM during ``fit``: every process stops at the same step, nothing hangs.

A signal may reach each process at a different moment (a scheduler preempting the job, a
terminal's Ctrl-C, Lightning's launcher forwarding it to its children). A process that acts
on it alone - saving a checkpoint, which synchronizes, or leaving - would wait forever for
the others. So the signal handler only takes note (and forwards the signal to the processes
this one launched); at the start of every training step all processes agree, with one small
all-reduce on a CPU (gloo) group that never touches the GPU stream, whether any of them was
signalled, and if so they all raise :class:`Stopped` at that same step.

Nothing is saved mid-epoch: the run continues exactly from the ``last.ckpt`` of the last
completed epoch (``fgvc fit --ckpt_path last``), which Lightning writes atomically, so it is
intact whatever happens. A process that has not reached a training step ``timeout`` seconds
after the signal (stuck, or in a long evaluation) exits by itself. A second Ctrl-C stops at
once.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.utilities.exceptions import SIGTERMException

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(SIGTERMException):
    """Training stopped on a signal, at the same step in every process."""

    def __init__(self, signum: int, epoch: int, step: int) -> None:
        self.signame = signal.Signals(signum).name
        self.epoch = epoch
        super().__init__(f"stopped by {self.signame} in epoch {epoch} (step {step})")


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

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        flag = torch.tensor([self.requested or 0], dtype=torch.int64)
        if self._group is not None:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        if flag.item():
            self._stand_down()
            raise Stopped(int(flag.item()), trainer.current_epoch, trainer.global_step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stand_down()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._stand_down()
        self._installed = False
        if self._group is not None:
            dist.destroy_process_group(self._group)
            self._group = None
