"""Progress for logs: plain lines at a steady rate when the output is not a terminal.

Rich's live progress bar redraws the same screen lines many times a second; written to a
SLURM or nohup log file that becomes megabytes of escape codes. :class:`LineProgress` prints
one line every ``interval`` seconds during training and one per finished epoch and
evaluation instead. :func:`progress_bar` picks it, or Rich on a terminal.

Epochs are numbered from 0, as Lightning numbers them in checkpoint names
(``best-epoch003-...``), ``metrics.csv``, W&B and its own messages: ``epoch 3/99`` is the
fourth of 100 epochs (:func:`epoch_label`, on the Rich bar too).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar, RichProgressBar


def epoch_label(epoch: int, max_epochs: int | None) -> str:
    """``epoch <e>/<last>``, 0-based like the checkpoint names and ``metrics.csv``
    (``epoch <e>`` when the run is bounded by steps, not epochs)."""
    if max_epochs is not None and max_epochs > 0:
        return f"epoch {epoch}/{max_epochs - 1}"
    return f"epoch {epoch}"


class RichProgress(RichProgressBar):
    """Rich's live bar, its epochs labelled as everywhere else (:func:`epoch_label`)."""

    def _get_train_description(self, current_epoch: int) -> str:
        label = epoch_label(current_epoch, self.trainer.max_epochs).capitalize()
        return f"{label:{len(self.validation_description)}}"


def _format(metrics: dict[str, Any]) -> str:
    parts = []
    for key, value in metrics.items():
        if key == "v_num":
            continue
        number = float(value) if hasattr(value, "__float__") else value
        parts.append(f"{key} {number:.4g}" if isinstance(number, float) else f"{key} {number}")
    return "  ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
        if seconds >= 3600
        else (f"{seconds // 60}m{seconds % 60:02d}s")
    )


class LineProgress(ProgressBar):
    """One line every ``interval`` seconds of training, and one per epoch and evaluation.

    Args:
        interval: seconds between training lines (the first comes after ``interval``).
    """

    def __init__(self, interval: float = 30.0) -> None:
        super().__init__()
        self.interval = interval
        self._enabled = True
        self._epoch_start = 0.0
        self._last = 0.0
        self._done_at_start = 0  # batches of the epoch done before this process took it up

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _say(self, text: str) -> None:
        if self._enabled:
            print(text, file=sys.stdout, flush=True)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a run resumed inside an epoch (fgvc.train.resume) has no epoch start of its own
        self._epoch_start = self._last = time.monotonic()
        self._done_at_start = trainer.fit_loop.epoch_loop.batch_progress.current.completed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = self._last = time.monotonic()
        self._done_at_start = 0

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        done, total = batch_idx + 1, self.total_train_batches
        rate = (done - self._done_at_start) / max(now - self._epoch_start, 1e-9)
        left = ""
        if isinstance(total, int) and rate > 0:
            left = f"  {rate:.2f} it/s  epoch ends in {_duration((total - done) / rate)}"
        self._say(
            f"{epoch_label(trainer.current_epoch, trainer.max_epochs)}  step {done}/{total}  "
            f"{_format(self.get_metrics(trainer, pl_module))}{left}"
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        took = _duration(time.monotonic() - self._epoch_start)
        metrics = {
            k: v for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))
        }
        self._say(
            f"{epoch_label(trainer.current_epoch, trainer.max_epochs)} done in {took}  "
            f"{_format(metrics)}"
        )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate" and not trainer.sanity_checking:
            self._say(f"validation  {_format(self._stage_metrics(trainer, 'val/'))}")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._say(f"test  {_format(self._stage_metrics(trainer, 'test/'))}")

    @staticmethod
    def _stage_metrics(trainer: pl.Trainer, prefix: str) -> dict[str, Any]:
        return {k: v for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}


def progress_bar(interactive: bool | None = None) -> ProgressBar:
    """Rich's live bar on a terminal, :class:`LineProgress` otherwise (``interactive``: None
    asks whether stdout is a terminal)."""
    if interactive is None:
        interactive = sys.stdout.isatty()
    return RichProgress(leave=True) if interactive else LineProgress()
