"""Training that goes nowhere says so: three warnings, each once a run, with its numbers and
a concrete hint, and the gradient norm of every parameter group in the logs.

* **The loss does not move**: after ``stall_epochs`` epochs the training loss is within
  ``stall_tolerance`` of the first epoch's (the authors' users' "loss doesn't change").
* **Train and validation part ways**: train top-1 above val top-1 by more than ``gap`` for
  ``gap_epochs`` epochs in a row ("100% train, 50% test on my data").
* **The gradients explode**: a group's gradient norm above ``explode_factor`` times its median
  so far.

Epoch figures are the ones Lightning already computed (no extra synchronization); gradient
norms are taken only on logging steps (``trainer.log_every_n_steps``), where the loggers read
values anyway.
"""

from __future__ import annotations

import statistics
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn


class TrainingHealth(pl.Callback):
    """Warn about a stalled loss, a train/val gap and exploding gradients (see module doc).

    Args:
        stall_epochs: epochs after which an unmoved loss is reported.
        stall_tolerance: relative change of the epoch loss that counts as not moving.
        gap: train top-1 minus val top-1 (fractions) that counts as parting ways.
        gap_epochs: consecutive epochs of such a gap before it is reported.
        explode_factor: a gradient norm this many times its group's median so far.
    """

    def __init__(
        self,
        stall_epochs: int = 3,
        stall_tolerance: float = 0.01,
        gap: float = 0.3,
        gap_epochs: int = 3,
        explode_factor: float = 100.0,
    ) -> None:
        self.stall_epochs = stall_epochs
        self.stall_tolerance = stall_tolerance
        self.gap = gap
        self.gap_epochs = gap_epochs
        self.explode_factor = explode_factor
        self._losses: list[float] = []
        self._gaps = 0
        self._norms: dict[str, list[float]] = {}
        self._warned: set[str] = set()

    # saved with every checkpoint: a resumed run (at an epoch's end or inside one) goes on
    # with the loss and gradient history of the run so far, and warns once in all
    def state_dict(self) -> dict[str, Any]:
        return {
            "losses": list(self._losses),
            "gaps": self._gaps,
            "norms": {k: list(v) for k, v in self._norms.items()},
            "warned": sorted(self._warned),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._losses = [float(v) for v in state_dict.get("losses", [])]
        self._gaps = int(state_dict.get("gaps", 0))
        self._norms = {k: [float(x) for x in v] for k, v in state_dict.get("norms", {}).items()}
        self._warned = set(state_dict.get("warned", []))

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            rank_zero_warn(message)

    # ------------------------------------------------------------------ epoch figures
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        loss = _value(metrics.get("train/loss_epoch", metrics.get("train/loss")))
        if loss is not None:
            self._losses.append(loss)
        if len(self._losses) > self.stall_epochs:
            first, now = self._losses[0], self._losses[-1]
            if abs(now - first) <= self.stall_tolerance * max(abs(first), 1e-12):
                lrs = sorted({g["lr"] for opt in trainer.optimizers for g in opt.param_groups})
                self._warn_once(
                    "stall",
                    f"the training loss has not moved in {len(self._losses)} epochs ({first:.4g} "
                    f"-> {now:.4g}) at learning rates {', '.join(f'{lr:.3g}' for lr in lrs)}: "
                    f"the rate is likely too low (try model.lr 10x), or the backbone frozen "
                    f"(model.freeze_backbone_epochs); check too that the labels match the images",
                )
        train, val = _value(metrics.get("train/top1")), _value(metrics.get("val/top1"))
        if train is None or val is None:
            return
        self._gaps = self._gaps + 1 if train - val > self.gap else 0
        if self._gaps >= self.gap_epochs:
            self._warn_once(
                "gap",
                f"train top-1 {train:.3f} against val top-1 {val:.3f} for {self._gaps} epochs: "
                f"the network learns the training images, not the classes - add regularization "
                f"(model.label_smoothing 0.1, model.weight_decay 10x, stronger augmentation), "
                f"or check that validation images look like the training ones",
            )

    # --------------------------------------------------------------- gradient norms
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        if (trainer.global_step + 1) % max(1, trainer.log_every_n_steps):
            return
        norms = group_grad_norms(optimizer)
        if not norms:
            return
        pl_module.log_dict({f"grad_norm/{k}": v for k, v in norms.items()}, on_step=True)
        for name, norm in norms.items():
            history = self._norms.setdefault(name, [])
            if len(history) >= 3 and norm > self.explode_factor * statistics.median(history):
                self._warn_once(
                    "explode",
                    f"the gradient norm of {name} jumped to {norm:.3g}, "
                    f"{norm / statistics.median(history):.0f}x its median so far "
                    f"({statistics.median(history):.3g}) at step {trainer.global_step}: lower "
                    f"model.lr, or clip gradients (--trainer.gradient_clip_val 1.0)",
                )
            history.append(norm)


def group_grad_norms(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The L2 norm of each named parameter group's gradients (groups sharing a ``group``
    name, as fgvc's decay / no-decay halves do, are taken together)."""
    squares: dict[str, torch.Tensor] = {}
    for index, group in enumerate(optimizer.param_groups):
        grads = [p.grad for p in group["params"] if p.grad is not None]
        if not grads:
            continue
        name = str(group.get("group", group.get("name", index)))
        total = torch.stack(torch._foreach_norm(grads)).float().square().sum()
        squares[name] = squares[name] + total if name in squares else total
    return {name: float(total.sqrt()) for name, total in squares.items()}


def _value(metric: Any) -> float | None:
    if isinstance(metric, torch.Tensor) and metric.numel() == 1:
        metric = float(metric)
    return float(metric) if isinstance(metric, (int, float)) else None
