"""Lightning's learning-rate and batch-size finders on fgvc's model and training data.

:func:`find_lr` runs :meth:`pytorch_lightning.tuner.Tuner.lr_find` (the range test of Smith,
2017: a few training steps at exponentially growing rates, the loss of each recorded,
smoothed) and converts its suggestion into the ``model.lr`` a config holds; :func:`find_batch_size`
runs :meth:`~pytorch_lightning.tuner.Tuner.scale_batch_size` (on GPU: the batch grows until
CUDA runs out of memory). Both train a copy of the run's state and put it back.

What fgvc adds around them:

* **Only the training split.** The finders see :class:`TrainSplit`, the DataModule's
  training samples (:meth:`~fgvc.data.datamodule.FGVCDataModule.setup_train_only`): no
  validation, and never the test split, which ``val_split: 0`` configs validate on.
* **The recipe's groups, proportionally.** Lightning's finder sets every parameter group to
  the same rate; :class:`ProportionalGroups` puts each group at its multiplier of it for the
  optimizer step (``lr_mult_backbone / head / classifier``), so the rate searched, recorded
  and suggested is the base rate ``model.lr`` scales to. The recipe's scheduler
  (:class:`~fgvc.train.optim.RecipeLR`) is set aside by Lightning during the search and put
  back after it.
* **Its suggestion on the axis it searched.** The steepest descent of the loss is taken
  against ``log10(lr)`` in the default exponential mode (:func:`steepest_descent`), and the
  smoothed curve's bias is corrected first (:func:`unbiased`).
* **Nothing left behind.** Lightning saves the state it restores as ``.lr_find_*.ckpt``
  (``.scale_batch_size_*.ckpt``) in the trainer's ``default_root_dir``: fgvc points that at
  the tune folder and removes any such file when the search ends, however it ends.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.tuner import Tuner
from pytorch_lightning.utilities import rank_zero_info

from fgvc.data.datamodule import FGVCDataModule
from fgvc.data.resolution import EpochSizedTransform
from fgvc.errors import FgvcError
from fgvc.train.module import FGVCClassifier
from fgvc.train.optim import lr_rule, unscaled_lr

#: the finders' temporary checkpoints (Lightning's names), removed when a search ends
TEMPORARY = (".lr_find_*.ckpt", ".scale_batch_size_*.ckpt")


class TrainSplit(pl.LightningDataModule):
    """The training samples of an :class:`FGVCDataModule` and nothing else: its training
    loader and device-side normalization, an empty validation (Lightning validates nothing).

    ``batch_size`` is the DataModule's: the batch-size finder sets it here.
    """

    def __init__(self, data: FGVCDataModule) -> None:
        super().__init__()
        self.data = data
        self.save_hyperparameters(dict(data.hparams))

    @property
    def batch_size(self) -> int:
        return self.data.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.data.batch_size = value

    def prepare_data(self) -> None:
        self.data.prepare_data()

    def setup(self, stage: str) -> None:
        self.data.trainer = self.trainer  # its loaders shard and seed by the trainer's epoch
        if self.data.train_set is None:
            self.data.setup_train_only()
        transform = self.data.train_set.transform
        if isinstance(transform, EpochSizedTransform):  # progressive resizing
            transform.pin(transform.schedule.largest)  # the batch must fit its last epochs
            rank_zero_info(
                f"progressive resizing: the search trains at the largest side, "
                f"{transform.schedule.largest} px"
            )

    def train_dataloader(self) -> Any:
        return self.data.train_dataloader()

    def val_dataloader(self) -> list:
        return []  # none: Lightning skips validation (the batch-size finder asks for one)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.data.on_after_batch_transfer(batch, dataloader_idx)


class ProportionalGroups:
    """While active, each optimizer step of ``model`` runs every parameter group at its
    part's multiplier of the group's rate (Lightning's finder gives them all the same one),
    and puts the rates back after the step, so that the finder records the base rate.

    A global optimizer hook (:func:`torch.optim.optimizer.register_optimizer_step_pre_hook`):
    Lightning builds the optimizer inside the search, after any callback could reach it.
    """

    def __init__(self, model: FGVCClassifier) -> None:
        self.mults = model.lr_multipliers()
        self._params = {id(p) for p in model.parameters()}
        self._saved: list[float] = []
        self._handles: list[Any] = []

    def _ours(self, optimizer: torch.optim.Optimizer) -> bool:
        groups = optimizer.param_groups
        return (
            bool(groups)
            and all("group" in g and g["params"] for g in groups)
            and (id(groups[0]["params"][0]) in self._params)
        )

    def _before(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._ours(optimizer):
            self._saved = [g["lr"] for g in optimizer.param_groups]
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * self.mults[group["group"]]

    def _after(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._ours(optimizer) and self._saved:
            for group, lr in zip(optimizer.param_groups, self._saved):
                group["lr"] = lr
            self._saved = []

    def __enter__(self) -> ProportionalGroups:
        from torch.optim.optimizer import (
            register_optimizer_step_post_hook,
            register_optimizer_step_pre_hook,
        )

        self._handles = [
            register_optimizer_step_pre_hook(self._before),
            register_optimizer_step_post_hook(self._after),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


@contextlib.contextmanager
def temporary_checkpoints_in(trainer: pl.Trainer, folder: Path) -> Iterator[None]:
    """Point the finders' temporary checkpoints at ``folder`` and remove them at the end."""
    before = trainer._default_root_dir  # the one place Lightning reads for them
    trainer._default_root_dir = str(folder)
    try:
        yield
    finally:
        trainer._default_root_dir = before
        for pattern in TEMPORARY:
            for path in folder.glob(pattern):
                path.unlink(missing_ok=True)


@dataclass
class LRSearch:
    """A learning-rate range test and the ``model.lr`` it suggests.

    Attributes:
        lrs, losses: the base rate of each step and the smoothed training loss after it
            (bias-corrected, :func:`unbiased`).
        index: the suggested step (:func:`steepest_descent`).
        found: the suggested base rate at :attr:`global_batch` (``lrs[index]``).
        model_lr: the ``model.lr`` for ``lr_batch_size`` that ``rule`` scales to ``found``.
        global_batch: images per optimizer step during the search.
        lr_batch_size, rule, optimizer: the config's ``model.lr_batch_size``, the scaling
            rule it resolves to and the optimizer.
        multipliers: each part's multiplier of the base rate.
        min_lr, max_lr, num_training, mode: what was searched.
    """

    lrs: list[float]
    losses: list[float]
    index: int
    found: float
    model_lr: float
    global_batch: int
    lr_batch_size: int
    rule: str
    optimizer: str
    multipliers: dict[str, float]
    min_lr: float
    max_lr: float
    num_training: int
    mode: str

    @property
    def stopped_early(self) -> bool:
        """The loss diverged before the last planned step."""
        return len(self.lrs) < self.num_training


def check_search(min_lr: float, max_lr: float, num_training: int, mode: str) -> None:
    """Raises ValueError (one line) for a search that cannot run or suggest anything."""
    if not (math.isfinite(min_lr) and math.isfinite(max_lr) and 0 < min_lr < max_lr):
        raise ValueError(f"--min_lr and --max_lr need 0 < min_lr < max_lr, got {min_lr}, {max_lr}")
    if num_training < 20:  # the suggestion skips the first 10 points and the last one
        raise ValueError(f"--num_training must be >= 20 steps, got {num_training}")
    if mode not in ("exponential", "linear"):
        raise ValueError(f"--mode must be exponential or linear, got {mode!r}")


def find_lr(
    trainer: pl.Trainer,
    model: FGVCClassifier,
    data: TrainSplit,
    min_lr: float,
    max_lr: float,
    num_training: int,
    mode: str = "exponential",
    early_stop_threshold: float | None = 4.0,
) -> LRSearch:
    """Run Lightning's learning-rate finder, pick the steepest descent of its corrected
    curve and convert that rate into ``model.lr`` (see the module doc).

    Raises:
        FgvcError: the search gave no suggestion (it diverged within a few steps, or every
            loss was non-finite).
    """
    hp = model.hparams
    start = trainer.global_step
    with ProportionalGroups(model):
        finder = Tuner(trainer).lr_find(
            model,
            datamodule=data,
            min_lr=min_lr,
            max_lr=max_lr,
            num_training=num_training,
            mode=mode,
            early_stop_threshold=early_stop_threshold,
            update_attr=False,
        )
    lrs = [float(x) for x in finder.results.get("lr", [])] if finder else []
    losses = unbiased(finder.results.get("loss", []), start) if finder else []
    index = steepest_descent(lrs, losses, mode)
    if index is None:
        finite = sum(math.isfinite(x) for x in losses)
        raise FgvcError(
            f"the learning-rate search gave no suggestion: {len(lrs)} steps, {finite} finite "
            f"losses (it needs at least 12); the loss diverged at once - lower --max_lr or "
            f"--min_lr, or check the data and model.pretrained"
        )
    batch = model.global_batch_size() or data.batch_size
    rule = lr_rule(hp.lr_scaling, hp.optimizer)
    return LRSearch(
        lrs=lrs,
        losses=losses,
        index=index,
        found=lrs[index],
        model_lr=unscaled_lr(lrs[index], hp.lr_batch_size, batch, rule),
        global_batch=batch,
        lr_batch_size=hp.lr_batch_size,
        rule=rule,
        optimizer=hp.optimizer,
        multipliers=model.lr_multipliers(),
        min_lr=min_lr,
        max_lr=max_lr,
        num_training=num_training,
        mode=mode,
    )


def steepest_descent(
    lrs: list[float], losses: list[float], mode: str, skip_begin: int = 10, skip_end: int = 1
) -> int | None:
    """The step where the loss falls fastest: Lightning's rule (``_LRFinder.suggestion``:
    the first ``skip_begin`` and last ``skip_end`` steps and non-finite losses left out, the
    minimum of the gradient), but in ``exponential`` mode the gradient is taken against
    ``log10(lr)``, the axis the rates are spaced on. Lightning 2.6 takes it against ``lr``
    itself (Lightning issue #21141, PR #21171), which divides each slope by its rate and so
    picks nearly the first rate at which the loss dips by noise (1e-7..1 on the demo config:
    5.9e-7 that way, 3.5e-3 this way; the config trains well at 2e-3). None: under two
    usable points."""
    steps = [i for i in range(skip_begin, len(losses) - skip_end) if math.isfinite(losses[i])]
    if len(steps) < 2:
        return None
    axis = [math.log10(lrs[i]) if mode == "exponential" else lrs[i] for i in steps]
    loss = torch.tensor([losses[i] for i in steps], dtype=torch.float64)
    slope = torch.gradient(loss, spacing=[torch.tensor(axis, dtype=torch.float64)])[0]
    return steps[int(torch.argmin(slope))]


#: the smoothing of Lightning's finder (``_LRCallback.beta``)
BETA = 0.98


def unbiased(smoothed: list[float], start: int = 0, beta: float = BETA) -> list[float]:
    """Lightning's smoothed losses with the exponential average's bias corrected for the
    number of losses it holds.

    Lightning divides the average of the first ``k + 1`` losses by ``1 - beta**(s + k + 2)``
    (``s + k + 1`` is the global step after the step, ``s`` the step the search started at)
    instead of ``1 - beta**(k + 1)``: its curve starts at half the loss and climbs over the
    first ~50 steps whatever the rate (Lightning issue #14167), which can hide the descent
    the suggestion looks for. Multiplying back gives the usual bias-corrected average (a
    constant loss gives a flat curve).
    """
    return [
        float(value) * (1 - beta ** (start + k + 2)) / (1 - beta ** (k + 1))
        for k, value in enumerate(smoothed)
    ]


@dataclass(frozen=True)
class BatchSearch:
    """The batch-size finder's answer: ``found`` images per device fit (``None``: it was
    skipped, for ``reason``); the learning-rate search ran at ``used``."""

    found: int | None
    configured: int
    used: int
    reason: str


def find_batch_size(
    trainer: pl.Trainer, model: FGVCClassifier, data: TrainSplit, max_val: int = 8192
) -> BatchSearch:
    """The largest per-device batch that trains without running out of GPU memory
    (Lightning's ``binsearch``, 5% margin), starting from the configured one. The batch is
    then put back to the configured one, or to the one found where the configured one does
    not fit."""
    configured = data.batch_size
    found = Tuner(trainer).scale_batch_size(
        model,
        datamodule=data,
        mode="binsearch",
        init_val=configured,
        max_val=max_val,
        batch_arg_name="batch_size",
    )
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    used = configured if found is None or found >= configured else found
    data.batch_size = used
    reason = "" if found is None or found >= configured else "the configured batch does not fit"
    return BatchSearch(found=found, configured=configured, used=used, reason=reason)


def batch_finder_skipped(trainer: pl.Trainer) -> str | None:
    """Why the batch-size finder does not run on this trainer (None: it runs)."""
    if trainer.strategy.root_device.type != "cuda":
        return (
            f"skipped on the {trainer.strategy.root_device.type.upper()}: it grows the batch "
            f"until CUDA runs out of memory, and without a GPU there is no such limit to find "
            f"(the batch would grow into swap)"
        )
    return None
