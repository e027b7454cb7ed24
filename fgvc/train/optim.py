"""The recipe's optimization pieces: parameter groups and the learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fgvc.models.trunks.norms import no_decay_parameter_names
from fgvc.train.losses import LOSSES

#: The network's parts, each with its own learning-rate multiplier.
GROUPS = ("backbone", "head", "classifier")
#: ``model.scheduler`` values (:class:`Schedule`).
SCHEDULERS = ("step", "cosine", "triangular", "constant")
#: Where ``"triangular"`` starts, as a fraction of the peak rate (FFCV's ``get_cyclic_lr``).
TRIANGULAR_START = 1e-4


#: ``lr_scaling`` values: a rule, or ``auto`` (the optimizer's: :data:`AUTO_RULE`).
LR_SCALINGS = ("auto", "linear", "sqrt", "none")
#: The usual rule per optimizer: linear for SGD (Goyal et al., 2017), the square root of the
#: batch ratio for Adam-family optimizers (Malladi et al., 2022; Granziol et al., 2022).
AUTO_RULE = {"sgd": "linear", "adamw": "sqrt"}


def lr_rule(scaling: str, optimizer: str) -> str:
    """The rule ``lr_scaling`` means for ``optimizer`` (``auto`` resolved)."""
    return AUTO_RULE.get(optimizer, "linear") if scaling == "auto" else scaling


def scaled_lr(lr: float, lr_batch_size: int, global_batch: int | None, rule: str) -> float:
    """``lr`` is for ``lr_batch_size`` images a step; a step of ``global_batch`` images uses
    ``lr * ratio`` (``"linear"``) or ``lr * sqrt(ratio)`` (``"sqrt"``), ratio = global_batch /
    lr_batch_size. ``"none"`` or an unknown global batch leave ``lr`` as it is."""
    if rule == "none" or not global_batch:
        return lr
    ratio = global_batch / lr_batch_size
    return lr * (math.sqrt(ratio) if rule == "sqrt" else ratio)


def unscaled_lr(found: float, lr_batch_size: int, global_batch: int | None, rule: str) -> float:
    """The ``model.lr`` that :func:`scaled_lr` turns into ``found`` at ``global_batch``: what
    a config must hold for a run at that batch to use the rate ``found`` (``fgvc tune``)."""
    return found / scaled_lr(1.0, lr_batch_size, global_batch, rule)


def parameter_groups(
    net: nn.Module,
    lr: float,
    weight_decay: float,
    mults: Mapping[str, float],
    decay_all: bool = False,
) -> list[dict[str, Any]]:
    """Six groups: (backbone, head, classifier) x (decay, no decay).

    Every norm layer's parameters (BatchNorm, GroupNorm, LayerNorm, ... of any trunk or
    head) and all biases get no weight decay, and so do those a trunk's library lists (timm's
    position embeddings and class tokens): :func:`fgvc.models.trunks.norms.
    no_decay_parameter_names` - unless ``decay_all``, which decays every parameter as the
    authors' code does (then there are no no-decay groups). Each group's rate is
    ``lr * mults[part]``, and ``group`` names the part (the schedule gates the backbone).
    """
    groups = []
    for name in GROUPS:
        module: nn.Module = getattr(net, name)
        skip = set() if decay_all else no_decay_parameter_names(module)
        decay, no_decay = [], []
        for pname, param in module.named_parameters():
            if param.requires_grad:
                (no_decay if pname in skip else decay).append(param)
        for params, wd, tag in ((decay, weight_decay, ""), (no_decay, 0.0, "_no_decay")):
            if params:
                groups.append(
                    {
                        "params": params,
                        "lr": lr * mults[name],
                        "weight_decay": wd,
                        "name": f"{name}{tag}",
                        "group": name,
                    }
                )
    return groups


class Schedule:
    """Learning-rate factor per optimizer step (picklable, so checkpoints carry it).

    Args:
        kind: ``"step"`` (multiply by ``gamma`` at each milestone epoch), ``"cosine"``
            (linear warmup over ``warmup_epochs``, then cosine to 0 at the last step),
            ``"triangular"`` (linear from :data:`TRIANGULAR_START` at step 0 to 1 at
            ``warmup_epochs``, then linear to 0 at the end of the last epoch: FFCV's
            ImageNet schedule, their ``cyclic``, peak at epoch 2) or ``"constant"``.
        steps_per_epoch: optimizer steps in one epoch.
        total_steps: optimizer steps in the whole run.
        frozen_epochs: epochs during which the factor is 0 (backbone groups only).
    """

    def __init__(
        self,
        kind: str,
        steps_per_epoch: int,
        total_steps: int,
        milestones: list[int],
        gamma: float,
        warmup_epochs: float,
        frozen_epochs: int = 0,
    ) -> None:
        self.kind = kind
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_steps = max(1, total_steps)
        self.milestones = sorted(milestones)
        self.gamma = gamma
        self.warmup_steps = round(warmup_epochs * self.steps_per_epoch)
        self.frozen_epochs = frozen_epochs

    def __call__(self, step: int) -> float:
        epoch = step // self.steps_per_epoch
        if epoch < self.frozen_epochs:
            return 0.0
        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            return self.gamma ** sum(epoch >= m for m in self.milestones)
        if self.kind == "triangular" and step < self.warmup_steps:
            return TRIANGULAR_START + (1.0 - TRIANGULAR_START) * step / self.warmup_steps
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        if self.kind == "triangular":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))


class RecipeLR(torch.optim.lr_scheduler.LambdaLR):
    """``LambdaLR`` over :class:`Schedule` s whose checkpoint holds only its position.

    A resumed run must follow the schedule its *current* config describes (more epochs, a
    new global batch and so a new rate, another weight decay), not the one pickled into the
    checkpoint: Lightning restores the optimizer's groups and ``LambdaLR`` its lambdas and
    base rates, which made the added epochs of a longer run train at rate 0. Here the state
    is the step reached and the steps per epoch it was counted in; loading it keeps this
    run's schedules and base rates, converts the position to this run's steps per epoch
    (same epoch, same fraction of it), and puts the configured settings (rate at that step,
    weight decay, momentum, ...) back into the optimizer's groups.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedules: list[Schedule]) -> None:
        # the groups as configured: the optimizer's own state, once loaded, is the old run's
        self.configured = [
            {k: v for k, v in group.items() if k not in ("params", "lr", "initial_lr")}
            for group in optimizer.param_groups
        ]
        self.steps_per_epoch = schedules[0].steps_per_epoch
        self.resumed_from: tuple[int, int] | None = None  # (old step, old steps per epoch)
        super().__init__(optimizer, schedules)

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_epoch": self.last_epoch,
            "_step_count": self._step_count,
            "steps_per_epoch": self.steps_per_epoch,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        step = int(state_dict["last_epoch"])
        # a LambdaLR's full state (fgvc before 0.5): its lambdas know their steps per epoch
        lambdas = state_dict.get("lr_lambdas") or [{}]
        old_per_epoch = int(
            state_dict.get("steps_per_epoch")
            or (lambdas[0] or {}).get("steps_per_epoch")
            or self.steps_per_epoch
        )
        self.resumed_from = (step, old_per_epoch)
        self.last_epoch = convert_step(step, old_per_epoch, self.steps_per_epoch)
        self._step_count = self.last_epoch + 1
        for group, configured, base, schedule in zip(
            self.optimizer.param_groups, self.configured, self.base_lrs, self.lr_lambdas
        ):
            group.update(configured)
            group["initial_lr"] = base
            group["lr"] = base * schedule(self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def convert_step(step: int, old_per_epoch: int, new_per_epoch: int) -> int:
    """The step of a schedule with ``new_per_epoch`` steps an epoch at the same point of
    training (epoch and fraction of it) as ``step`` of one with ``old_per_epoch``."""
    if old_per_epoch == new_per_epoch:
        return step
    epoch, within = divmod(step, max(1, old_per_epoch))
    return epoch * new_per_epoch + round(within * new_per_epoch / max(1, old_per_epoch))


def check_recipe(hp: Mapping[str, Any]) -> None:
    """One-line errors for ``model:`` values that would silently train nonsense.

    Raises:
        ValueError: the first bad value, named, with its range.
    """
    mults = (hp["lr_mult_backbone"], hp["lr_mult_head"], hp["lr_mult_classifier"])
    lr, momentum, gamma = hp["lr"], hp["momentum"], hp["gamma"]
    weight_decay, warmup_epochs = hp["weight_decay"], hp["warmup_epochs"]
    label_smoothing, optimizer, scheduler = hp["label_smoothing"], hp["optimizer"], hp["scheduler"]
    checks = [
        (lr > 0, f"model.lr must be > 0, got {lr}"),
        (
            isinstance(hp["lr_batch_size"], int) and hp["lr_batch_size"] >= 1,
            f"model.lr_batch_size must be an integer >= 1, got {hp['lr_batch_size']!r}",
        ),
        (
            hp["lr_scaling"] in LR_SCALINGS,
            f"model.lr_scaling must be one of {', '.join(LR_SCALINGS)}, got {hp['lr_scaling']!r}",
        ),
        (0 <= momentum < 1, f"model.momentum must be in [0, 1), got {momentum}"),
        (weight_decay >= 0, f"model.weight_decay must be >= 0, got {weight_decay}"),
        (all(m >= 0 for m in mults), f"model.lr_mult_* must be >= 0, got {mults}"),
        (0 < gamma <= 1, f"model.gamma must be in (0, 1], got {gamma}"),
        (warmup_epochs >= 0, f"model.warmup_epochs must be >= 0, got {warmup_epochs}"),
        (
            0 <= label_smoothing < 1,
            f"model.label_smoothing must be in [0, 1), got {label_smoothing}",
        ),
        (hp["freeze_backbone_epochs"] >= 0, "model.freeze_backbone_epochs must be >= 0"),
        (
            hp["loss"] in LOSSES,
            f"model.loss {hp['loss']!r}: choose one of {', '.join(LOSSES)}",
        ),
        (
            hp["logit_adjust_tau"] >= 0,
            f"model.logit_adjust_tau must be >= 0, got {hp['logit_adjust_tau']}",
        ),
        (optimizer in ("sgd", "adamw"), f"model.optimizer must be sgd or adamw, got {optimizer!r}"),
        (
            scheduler in SCHEDULERS,
            f"model.scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
