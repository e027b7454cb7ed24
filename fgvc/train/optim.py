"""The recipe's optimization pieces: parameter groups and the learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import nn

#: The network's parts, each with its own learning-rate multiplier.
GROUPS = ("backbone", "head", "classifier")


def scaled_lr(lr: float, lr_batch_size: int, global_batch: int | None, rule: str) -> float:
    """The linear scaling rule (Goyal et al., 2017): ``lr`` is for ``lr_batch_size`` images a
    step; a step of ``global_batch`` images uses ``lr * global_batch / lr_batch_size``.
    ``rule="none"`` or an unknown global batch leave ``lr`` as it is."""
    if rule == "none" or not global_batch:
        return lr
    return lr * global_batch / lr_batch_size


def parameter_groups(
    net: nn.Module, lr: float, weight_decay: float, mults: Mapping[str, float]
) -> list[dict[str, Any]]:
    """Six groups: (backbone, head, classifier) x (decay, no decay).

    BatchNorm / GroupNorm weights and all biases get no weight decay; each group's rate is
    ``lr * mults[part]``, and ``group`` names the part (the schedule gates the backbone).
    """
    groups = []
    for name in GROUPS:
        module: nn.Module = getattr(net, name)
        decay, no_decay = [], []
        for sub in module.modules():
            for pname, param in sub.named_parameters(recurse=False):
                if not param.requires_grad:
                    continue
                is_norm = isinstance(sub, nn.modules.batchnorm._NormBase | nn.GroupNorm)
                (no_decay if is_norm or pname == "bias" else decay).append(param)
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
            (linear warmup over ``warmup_epochs``, then cosine to 0 at the last step) or
            ``"constant"``.
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
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
