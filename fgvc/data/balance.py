"""Class balance of a split: images per class, its summary and a compact text histogram.

``fgvc data check`` prints :meth:`ClassBalance.lines` for every split and warns when the
imbalance ratio (the largest class count over the smallest) exceeds
:data:`IMBALANCE_WARN_RATIO`; the DataModule hands :func:`class_counts` of its training
split to the loss (``model.loss: weighted | logit_adjusted``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: imbalance ratio (largest / smallest class) above which ``fgvc data check`` warns: past
#: about an order of magnitude, plain cross-entropy visibly favours the frequent classes
IMBALANCE_WARN_RATIO = 10.0
#: bars of the text histogram at most, and the width of the longest bar
HISTOGRAM_BINS = 8
BAR_WIDTH = 24


def class_counts(targets: Iterable[int], num_classes: int) -> list[int]:
    """Images per class in label order (0 for a class without images).

    Raises:
        ValueError: a label outside ``[0, num_classes)``.
    """
    counts = [0] * num_classes
    for label in targets:
        if not 0 <= label < num_classes:
            raise ValueError(f"label {label} outside [0, {num_classes})")
        counts[label] += 1
    return counts


@dataclass(frozen=True)
class ClassBalance:
    """Images per class of one split.

    Attributes:
        counts: images per class, in label order.
        classes: class names in label order.
    """

    counts: tuple[int, ...]
    classes: tuple[str, ...]

    @classmethod
    def of(cls, targets: Iterable[int], classes: Sequence[str]) -> ClassBalance:
        """The balance of a split from its labels and class names."""
        return cls(tuple(class_counts(targets, len(classes))), tuple(classes))

    @property
    def ratio(self) -> float:
        """Imbalance ratio: largest over smallest class count (``inf`` when a class has no
        image, 1.0 for a perfectly balanced split)."""
        low, high = min(self.counts, default=0), max(self.counts, default=0)
        return high / low if low else math.inf

    def extremes(self, k: int = 3) -> tuple[list[int], list[int]]:
        """Labels of the ``k`` most and the ``k`` least frequent classes (ties: label order)."""
        order = sorted(range(len(self.counts)), key=lambda c: (-self.counts[c], c))
        k = min(k, len(order) // 2) if len(order) > 1 else len(order)
        rare = sorted(range(len(self.counts)), key=lambda c: (self.counts[c], c))
        return order[:k], rare[:k]

    def histogram(self, bins: int = HISTOGRAM_BINS, width: int = BAR_WIDTH) -> list[str]:
        """Classes by image count: one line per bin of counts, ``lo-hi  bar  classes``.

        Bins are integer ranges of equal width covering ``[min, max]``, at most ``bins`` of
        them; the longest bar is ``width`` characters, and any non-empty bin shows one.
        """
        if not self.counts:
            return []
        low, high = min(self.counts), max(self.counts)
        step = max(1, math.ceil((high - low + 1) / bins))
        edges = list(range(low, high + 1, step))
        tally = [0] * len(edges)
        for count in self.counts:
            tally[(count - low) // step] += 1
        most = max(tally)
        label = max(len(f"{e}-{min(e + step - 1, high)}") for e in edges)
        lines = []
        for edge, n in zip(edges, tally):
            span = f"{edge}-{min(edge + step - 1, high)}"
            bar = "#" * (math.ceil(n * width / most) if n else 0)
            lines.append(f"{span:>{label}} {bar:<{width}} {n}")
        return lines

    def lines(self, k: int = 3) -> list[str]:
        """The summary ``fgvc data check`` prints: min / median / max images per class and
        the ratio, the most and least frequent classes, and the histogram."""
        if not self.counts:
            return ["no classes"]
        median = statistics.median(self.counts)
        ratio = "inf (a class has no image)" if math.isinf(self.ratio) else f"{self.ratio:.1f}"
        top, rare = self.extremes(k)

        def named(labels: list[int]) -> str:
            return ", ".join(f"{self.classes[c]} ({self.counts[c]})" for c in labels)

        out = [
            f"images per class: min {min(self.counts)}, median {median:g}, max "
            f"{max(self.counts)}; imbalance ratio {ratio}"
        ]
        if top and self.ratio != 1.0:
            out += [f"most frequent: {named(top)}", f"least frequent: {named(rare)}"]
        out.append("classes by images per class:")
        return out + [f"  {line}" for line in self.histogram()]

    def warning(self, split: str, threshold: float = IMBALANCE_WARN_RATIO) -> str | None:
        """A one-line warning when the imbalance ratio exceeds ``threshold``, else None; its
        hint is for training (``split`` names a training split) or for evaluation."""
        if self.ratio <= threshold:
            return None
        hint = (
            "consider data.init_args.sampler balanced or model.loss logit_adjusted, and "
            "--model.monitor val/mean_class_acc"
            if "train" in split
            else "top-1 on it is dominated by the largest classes; --model.monitor "
            "val/mean_class_acc weighs every class equally"
        )
        return (
            f"{split}: imbalance ratio {self.ratio:.1f} > {threshold:g} (largest class "
            f"{max(self.counts)} images, smallest {min(self.counts)}); {hint}"
        )
