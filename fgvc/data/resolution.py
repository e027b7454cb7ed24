"""Progressive resizing: the training image side as a pure function of the epoch.

FFCV's ImageNet recipes (``libffcv/ffcv-imagenet``, ``train_imagenet.py``: ``get_resolution``
and ``rn50_configs/``) train on small random-resized crops first and ramp the side up late in
training, which makes most epochs cheaper at little cost in accuracy. The side of epoch ``e``
(0-based, Lightning's ``current_epoch``)::

    e <= start_epoch               start_size
    e >= end_epoch                 end_size
    in between                     start_size + (end_size - start_size) * (e - start_epoch)
                                   / (end_epoch - start_epoch), rounded to the nearest multiple
                                   of ``multiple`` (ties to even, as FFCV's ``np.round``) and
                                   kept within [start_size, end_size]

It depends on nothing but the epoch, so every process, every DataLoader worker and a resumed
run agree on it. Evaluation does not follow it: validation and test keep the DataModule's
evaluation preprocessing (its ``image_size``; FFCV validates at 256 after training at
160-192, as "Fixing the train-test resolution discrepancy" advises).

:class:`EpochSizedTransform` is the training pipeline that follows the schedule: the
training sampler sends each sample's epoch with its index and seed
(:class:`~fgvc.data.sampler.EpochSeededSampler`), and the dataset passes it on
(:meth:`~fgvc.data.base.ImageDataset.__getitem__`), so persistent workers change size with
the epoch too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any

import numpy as np
from pytorch_lightning.utilities import rank_zero_info

from fgvc.data.base import apply_transform
from fgvc.errors import ConfigError

#: the config key (``data.init_args.progressive_resize``) the messages name
OPTION = "data.init_args.progressive_resize"


@dataclass(frozen=True)
class ProgressiveResize:
    """The training side per epoch (see the module docstring).

    Attributes:
        start_size: side of the epochs up to and including ``start_epoch``.
        end_size: side from ``end_epoch`` on (``>= start_size``).
        start_epoch: last epoch at ``start_size`` (0-based).
        end_epoch: first epoch at ``end_size`` (``>= start_epoch``).
        multiple: the sides in between are multiples of this (FFCV: 32).

    Raises:
        ValueError: a value that is not an integer, a size below 8, ``start_size >
            end_size``, a negative epoch, ``start_epoch > end_epoch`` or ``multiple < 1``.
    """

    start_size: int
    end_size: int
    start_epoch: int
    end_epoch: int
    multiple: int = 32

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{OPTION}.{field.name} must be an integer, got {value!r}")
        checks = [
            (self.start_size >= 8, f"start_size must be >= 8, got {self.start_size}"),
            (
                self.end_size >= self.start_size,
                f"end_size {self.end_size} is below start_size {self.start_size}: the side "
                f"grows during training (swap them)",
            ),
            (self.start_epoch >= 0, f"start_epoch must be >= 0, got {self.start_epoch}"),
            (
                self.end_epoch >= self.start_epoch,
                f"end_epoch {self.end_epoch} is before start_epoch {self.start_epoch}",
            ),
            (self.multiple >= 1, f"multiple must be >= 1, got {self.multiple}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{OPTION}: {message}")

    @classmethod
    def from_config(cls, value: Mapping[str, Any]) -> ProgressiveResize:
        """The schedule of a config's mapping (its keys: the attributes; ``multiple`` may
        be left out).

        Raises:
            ValueError: an unknown or missing key, or a bad value (see the class).
        """
        if not isinstance(value, Mapping):
            raise ValueError(f"{OPTION} must be a mapping of sizes and epochs, got {value!r}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(value) - set(names))
        missing = [n for n in names if n not in value and n != "multiple"]
        if unknown or missing:
            what = f"unknown key(s) {unknown}" if unknown else f"missing key(s) {missing}"
            takes = f"{', '.join(names[:-1])} and {names[-1]} (default 32)"
            raise ValueError(f"{OPTION}: {what}; it takes {takes}")
        return cls(**dict(value))

    @property
    def largest(self) -> int:
        """The largest side of the schedule."""
        return self.end_size

    def size(self, epoch: int) -> int:
        """The training side of ``epoch`` (0-based)."""
        if epoch <= self.start_epoch:
            return self.start_size
        if epoch >= self.end_epoch:
            return self.end_size
        # exact arithmetic: a tie such as 176 / 32 = 5.5 is exactly one (round: half to even)
        fraction = Fraction(epoch - self.start_epoch, self.end_epoch - self.start_epoch)
        exact = self.start_size + (self.end_size - self.start_size) * fraction
        side = round(exact / self.multiple) * self.multiple
        return min(self.end_size, max(self.start_size, side))

    def check_epochs(self, max_epochs: int | None) -> None:
        """Refuse a ramp that a run of ``max_epochs`` epochs would not finish.

        Raises:
            ValueError: ``end_epoch`` is not an epoch of the run (``None`` or ``-1``:
                unlimited, nothing to check).
        """
        if max_epochs is None or max_epochs < 0:
            return
        if self.end_epoch > max_epochs - 1:
            raise ValueError(
                f"{OPTION}.end_epoch {self.end_epoch} is past the run's last epoch "
                f"{max_epochs - 1} (trainer.max_epochs {max_epochs}, epochs count from 0): the "
                f"ramp would not reach end_size {self.end_size}; lower end_epoch or train longer"
            )

    def plan(self, epochs: int) -> Iterator[tuple[int, int, int]]:
        """``(first epoch, last epoch, side)`` of each run of equal sides in ``epochs``."""
        first = 0
        for epoch in range(1, epochs + 1):
            if epoch == epochs or self.size(epoch) != self.size(first):
                yield first, epoch - 1, self.size(first)
                first = epoch

    def describe(self, epochs: int) -> str:
        """The plan in words, e.g. ``160 px in epochs 0-28, 192 px in epochs 29-39``."""
        parts = []
        for first, last, side in self.plan(epochs):
            span = f"epoch {first}" if first == last else f"epochs {first}-{last}"
            parts.append(f"{side} px in {span}")
        return ", ".join(parts)


class EpochSizedTransform:
    """A training pipeline whose output side follows a :class:`ProgressiveResize`.

    Called as ``transform(image)`` on an ``(H, W, 3)`` RGB ``uint8`` array; it runs the
    pipeline ``build(side)`` of the current epoch's side (built once per side, in the process
    that uses it). ``set_epoch`` chooses the epoch (0 until told); ``set_random_seed`` seeds
    the next sample's augmentation, whatever its side - so a sample's crop and flip depend on
    its seed and its epoch alone.

    Args:
        schedule: the side per epoch.
        build: ``side -> pipeline``, e.g. ``functools.partial(build_transforms, "imagenet",
            True)`` (picklable, so spawned workers can rebuild it).
    """

    def __init__(self, schedule: ProgressiveResize, build: Callable[[int], Any]) -> None:
        self.schedule = schedule
        self.build = build
        self.epoch = 0
        self.pinned: int | None = None
        self._seed: int | None = None
        self._pipelines: dict[int, Any] = {}

    @classmethod
    def for_run(
        cls,
        schedule: ProgressiveResize,
        build: Callable[[int], Any],
        max_epochs: int | None,
        eval_size: int,
    ) -> EpochSizedTransform:
        """The transform of a run of ``max_epochs`` epochs, whose plan is logged.

        Raises:
            ConfigError: the ramp ends after the run (:meth:`ProgressiveResize.check_epochs`).
        """
        try:
            schedule.check_epochs(max_epochs)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if max_epochs is not None and max_epochs > 0:
            rank_zero_info(
                f"progressive resizing: training images {schedule.describe(max_epochs)}; "
                f"evaluation at {eval_size} px"
            )
        return cls(schedule, build)

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the next samples."""
        self.epoch = int(epoch)

    def pin(self, side: int | None) -> None:
        """Make every sample ``side`` whatever the epoch (``None``: follow the epoch again).
        ``fgvc tune`` searches at the schedule's largest side: a batch that fits it fits
        every epoch."""
        self.pinned = side

    def set_random_seed(self, seed: int) -> None:
        """Seed of the next sample's augmentation (applied to the pipeline it uses)."""
        self._seed = seed

    @property
    def image_size(self) -> int:
        """The side of the current epoch (or the pinned one)."""
        return self.schedule.size(self.epoch) if self.pinned is None else self.pinned

    def pipeline(self, side: int | None = None) -> Any:
        """The pipeline that makes ``side`` (default: the current epoch's)."""
        side = self.image_size if side is None else side
        if side not in self._pipelines:
            self._pipelines[side] = self.build(side)
        return self._pipelines[side]

    def __call__(self, image: np.ndarray) -> Any:
        pipeline = self.pipeline()
        if self._seed is not None:
            pipeline.set_random_seed(self._seed)
            self._seed = None
        return apply_transform(pipeline, image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.schedule}, epoch={self.epoch})"
