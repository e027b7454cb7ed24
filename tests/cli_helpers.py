"""Callbacks that tests put into configs (importable by subprocesses as tests.cli_helpers),
and a pickle that runs code when loaded without ``weights_only``."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytorch_lightning as pl
import torch


class SigtermAtEpochEnd(pl.Callback):
    """Sends a signal (SIGTERM: a cluster scheduler preempting the job; SIGINT: Ctrl-C) to
    this process at the end of training epoch ``epoch``."""

    def __init__(self, epoch: int = 0, signame: str = "SIGTERM") -> None:
        self.epoch = epoch
        self.signum = getattr(signal, signame)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), self.signum)


class WarnAtEpochEnd(pl.Callback):
    """A real warning (Lightning's ``rank_zero_warn``) at the end of training epoch
    ``epoch``: what the chatter filters must let through."""

    def __init__(self, epoch: int = 0, message: str = "a real warning") -> None:
        self.epoch = epoch
        self.message = message

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from pytorch_lightning.utilities import rank_zero_warn

        if trainer.current_epoch == self.epoch:
            rank_zero_warn(self.message)


class SigtermAtStep(pl.Callback):
    """Sends SIGTERM (or ``signame``) to this process after training batch ``batch`` of epoch
    ``epoch`` (default the first: a run stopped before it saved any checkpoint)."""

    def __init__(self, batch: int = 0, epoch: int = 0, signame: str = "SIGTERM") -> None:
        self.batch = batch
        self.epoch = epoch
        self.signum = getattr(signal, signame)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)


class BatchRecorder(pl.Callback):
    """Appends ``[epoch, batch_idx, digest of the batch's images and labels]`` of every
    training batch to ``<record>/rank<R>.jsonl`` (``rank<R>.restart<N>.jsonl`` in torchrun's
    restart ``N``): which images each step trained on."""

    def __init__(self, record: str) -> None:
        self.record = Path(record)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import hashlib

        images, labels = batch
        digest = hashlib.sha256(images.cpu().numpy().tobytes() + labels.cpu().numpy().tobytes())
        self.record.mkdir(parents=True, exist_ok=True)
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        name = f"rank{trainer.global_rank}" + (f".restart{attempt}" if attempt != "0" else "")
        with open(self.record / f"{name}.jsonl", "a") as file:
            entry = [trainer.current_epoch, batch_idx, digest.hexdigest()[:16]]
            file.write(json.dumps(entry) + "\n")


class PoisonWeightsAtEpochEnd(pl.Callback):
    """After the last training step of epoch ``epoch``, puts a NaN into the first conv's
    weights: a step that blew the weights up while its own loss was still finite."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == trainer.num_training_batches - 1:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


class KillRankAtEpochEnd(pl.Callback):
    """SIGKILLs process ``rank`` at the end of training epoch ``epoch``, in the first attempt
    of a torchrun launch only (``TORCHELASTIC_RESTART_COUNT`` 0): a node lost mid-run."""

    def __init__(self, rank: int = 1, epoch: int = 0) -> None:
        self.rank = rank
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        first = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if first and trainer.global_rank == self.rank and trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class KillRankAtStep(pl.Callback):
    """SIGKILLs process ``rank`` after training batch ``batch`` of epoch ``epoch``, in the
    first attempt of a torchrun launch only: a node lost inside an epoch."""

    def __init__(self, rank: int = 1, epoch: int = 0, batch: int = 0) -> None:
        self.rank, self.epoch, self.batch = rank, epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        first = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        here = (trainer.global_rank, trainer.current_epoch, batch_idx)
        if first and here == (self.rank, self.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGKILL)


class CodePayload:
    """Pickles to a call that writes "pwned" to ``marker``: proof that loading ran code."""

    def __init__(self, marker: str | Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


class FailOnRank(pl.Callback):
    """Raises an fgvc error on process ``rank`` at the end of training epoch 0: one rank's
    failure (a corrupt image in its shard) while the others wait in a collective."""

    def __init__(self, rank: int = 1) -> None:
        self.rank = rank

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from fgvc.errors import ImageDecodeError

        if trainer.global_rank == self.rank:
            raise ImageDecodeError(f"/data/rank{self.rank}.jpg: cannot decode image (planted)")


class StopRecorder(pl.Callback):
    """Writes where each process stopped, ``<record>/rank<R>.json`` (epoch, global step,
    training batches per epoch, the exception), and lifts the stop's watchdog to
    ``watchdog_s``: a test's outcome must not depend on how fast a loaded machine is."""

    def __init__(self, record: str, watchdog_s: float = 3600.0) -> None:
        self.record = Path(record)
        self.watchdog_s = watchdog_s

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        from fgvc.train.interrupt import GracefulStop

        for callback in trainer.callbacks:
            if isinstance(callback, GracefulStop):
                callback.timeout = self.watchdog_s

    def on_exception(self, trainer, pl_module, exception) -> None:
        entry = {
            "rank": trainer.global_rank,
            "pid": os.getpid(),
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "batches": trainer.num_training_batches,
            "exception": type(exception).__name__,
            "message": str(exception),
        }
        self.record.mkdir(parents=True, exist_ok=True)
        (self.record / f"rank{trainer.global_rank}.json").write_text(json.dumps(entry))


class SignalOneRank(StopRecorder):
    """Process ``rank`` alone sends ``signame`` to itself after training batch ``batch`` of
    epoch ``epoch`` (a scheduler or a user signalling one task of a job)."""

    def __init__(
        self, record: str, rank: int = 1, epoch: int = 1, batch: int = 0, signame: str = "SIGTERM"
    ) -> None:
        super().__init__(record)
        self.rank, self.epoch, self.batch = rank, epoch, batch
        self.signum = getattr(signal, signame)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.global_rank, trainer.current_epoch, batch_idx) == (
            self.rank,
            self.epoch,
            self.batch,
        ):
            os.kill(os.getpid(), self.signum)


class AwaitSignal(StopRecorder):
    """Process 0, after training batch ``batch`` of epoch ``epoch``, writes
    ``<record>/ready`` and waits until a signal has reached it: the test sends the signal
    at a known point of training (the other processes wait in the next step's agreement)."""

    def __init__(self, record: str, epoch: int = 1, batch: int = 0) -> None:
        super().__init__(record)
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        from fgvc.train.interrupt import GracefulStop

        if (trainer.global_rank, trainer.current_epoch, batch_idx) != (0, self.epoch, self.batch):
            return
        (stop,) = [c for c in trainer.callbacks if isinstance(c, GracefulStop)]
        self.record.mkdir(parents=True, exist_ok=True)
        (self.record / "ready").touch()
        while stop.requested is None:  # the handler runs between these sleeps
            time.sleep(0.01)


class SaveStartingWeights(pl.Callback):
    """Saves the network's state dict as training starts (before any step): the weights a
    fine-tune started from."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = {k: v.detach().clone().cpu() for k, v in pl_module.model.state_dict().items()}
        torch.save(state, self.path)


class LogTrainLabels(pl.Callback):
    """Writes each training epoch's labels, batch by batch, to
    ``<folder>/rank<r>-epoch<e>.json`` (a dataset with one image a class: the images seen)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.batches: list[list[int]] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.batches = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches.append([int(v) for v in batch[1]])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"rank{trainer.global_rank}-epoch{trainer.current_epoch}.json"
        (self.folder / name).write_text(json.dumps(self.batches))
