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
    """Images per class of one split. The figures (min, median, max, ratio, extremes,
    histogram) are over the classes that have images; those without are listed apart
    (an evaluation split may hold a subset of the classes; a training split may not).

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
    def present(self) -> list[int]:
        """Labels of the classes with at least one image."""
        return [c for c, n in enumerate(self.counts) if n]

    @property
    def missing(self) -> list[int]:
        """Labels of the classes without images."""
        return [c for c, n in enumerate(self.counts) if not n]

    @property
    def ratio(self) -> float:
        """Imbalance ratio: largest over smallest count of the classes with images (1.0 for
        a balanced split, or one without images)."""
        counts = [self.counts[c] for c in self.present]
        return max(counts) / min(counts) if counts else 1.0

    def extremes(self, k: int = 3) -> tuple[list[int], list[int]]:
        """Labels of the (at most) ``k`` most and ``k`` least frequent classes with images,
        two disjoint lists (ties: label order)."""
        order = sorted(self.present, key=lambda c: (-self.counts[c], c))
        k = min(k, len(order) // 2)
        rest = sorted(order[k:], key=lambda c: (self.counts[c], c))
        return order[:k], rest[:k]

    def histogram(self, bins: int = HISTOGRAM_BINS, width: int = BAR_WIDTH) -> list[str]:
        """Classes by image count: one line per bin of counts, ``lo-hi  bar  classes``.

        Bins are integer ranges of equal width covering ``[min, max]`` of the classes with
        images, at most ``bins`` of them; the longest bar is ``width`` characters.
        """
        counts = [self.counts[c] for c in self.present]
        if not counts:
            return []
        low, high = min(counts), max(counts)
        step = max(1, math.ceil((high - low + 1) / bins))
        edges = list(range(low, high + 1, step))
        tally = [0] * len(edges)
        for count in counts:
            tally[(count - low) // step] += 1
        spans = [f"{edge}-{min(edge + step - 1, high)}" for edge in edges]
        label = max(len(span) for span in spans)
        return [
            f"{span:>{label}} {'#' * math.ceil(n * width / max(tally)):<{width}} {n}"
            for span, n in zip(spans, tally)
        ]

    def lines(self, k: int = 3) -> list[str]:
        """The summary ``fgvc data check`` prints: min / median / max images per class and
        the ratio, the most and least frequent classes, the classes without images, and
        the histogram."""
        counts = [self.counts[c] for c in self.present]
        out = []
        if counts:
            out.append(
                f"images per class: min {min(counts)}, median {statistics.median(counts):g}, "
                f"max {max(counts)}; imbalance ratio {self.ratio:.1f}"
            )
        top, rare = self.extremes(k)
        if top and self.ratio > 1.0:
            out += [f"most frequent: {self._named(top)}", f"least frequent: {self._named(rare)}"]
        if self.missing:
            out.append(f"no images: {len(self.missing)} classes ({self._named(self.missing)})")
        if counts:
            out.append("classes by images per class:")
        return out + [f"  {line}" for line in self.histogram()]

    def _named(self, labels: list[int], at_most: int = 5) -> str:
        names = [f"{self.classes[c]} ({self.counts[c]})" for c in labels[:at_most]]
        return ", ".join(names + (["..."] if len(labels) > at_most else []))

    def warnings(self, split: str, threshold: float = IMBALANCE_WARN_RATIO) -> list[str]:
        """One-line warnings: an imbalance ratio above ``threshold``; for a training split
        (its name holds ``train``), classes without training images. The hints are for
        training or for evaluation accordingly."""
        training = "train" in split
        out = []
        if self.ratio > threshold:
            counts = [self.counts[c] for c in self.present]
            hint = (
                "consider data.init_args.sampler balanced or model.loss logit_adjusted, and "
                "--model.monitor val/mean_class_acc"
                if training
                else "top-1 on it is dominated by the largest classes; --model.monitor "
                "val/mean_class_acc weighs every class equally"
            )
            out.append(
                f"{split}: imbalance ratio {self.ratio:.1f} > {threshold:g} (largest class "
                f"{max(counts)} images, smallest {min(counts)}); {hint}"
            )
        if training and self.missing:
            out.append(
                f"{split}: {len(self.missing)} classes have no training image "
                f"({self._named(self.missing)}); they cannot be learned - add images or "
                f"remove the classes"
            )
        return out
