"""``fgvc data check``: parse every split, decode every image on all cores, report."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fgvc.data.balance import IMBALANCE_WARN_RATIO, ClassBalance
from fgvc.data.base import ImageDataset
from fgvc.data.datasets import dataset_spec
from fgvc.data.io import ImageDecodeError, load_rgb


@dataclass
class CheckReport:
    """What ``check_dataset`` found; ``ok`` when nothing is wrong.

    Attributes:
        splits: images per split that could be read.
        images: distinct image files decoded.
        bad_files: one line per file that cannot be read or decoded, or is too large.
        problems: one line per split that cannot be read, or count that does not match.
        skipped: one line per entry a dataset left out (link loops, folder links, files in
            two classes, unreadable sub-folders...); these fail the check too.
        warnings: one line per doubtful finding that does not fail the check (class folders
            that differ only in letter case or Unicode normalization).
    """

    splits: dict[str, int] = field(default_factory=dict)
    images: int = 0
    bad_files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad_files and not self.problems and not self.skipped


def _splits(name: str, root: Path) -> Iterator[tuple[str, Callable[[], ImageDataset]]]:
    """``(label, make)`` for each split (and each of its ``check_options``) of ``name``."""
    spec = dataset_spec(name)
    for split in spec.split_names(root):
        for options in spec.check_options:
            label = "/".join((split, *map(str, options.values())))
            yield label, lambda split=split, options=options: spec.parser(root, split, **options)


def _decode(path: str) -> str | None:
    try:
        load_rgb(path)
    except ImageDecodeError as err:
        return str(err)
    return None


def check_dataset(
    name: str,
    root: str | os.PathLike,
    workers: int | None = None,
    log: Callable[[str], None] = print,
    max_imbalance: float = IMBALANCE_WARN_RATIO,
) -> CheckReport:
    """Parse all splits of dataset ``name`` under ``root`` and decode every image.

    Annotation errors, unreadable splits and published-count mismatches go to ``problems``;
    files that cannot be read or decoded, or exceed the pixel limit
    (:func:`fgvc.data.io.max_image_pixels`), to ``bad_files``; entries a dataset left out
    to ``skipped`` (one message each, naming the file). Each split's class histogram is
    logged; an imbalance ratio above ``max_imbalance`` is a warning
    (:mod:`fgvc.data.balance`).
    """
    report = CheckReport()
    paths: dict[str, None] = {}
    skipped: dict[str, None] = {}  # splits (aircraft levels) can share images
    root = Path(root).expanduser()
    for split, make in _splits(name, root):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # count mismatches are reported below
                dataset = make()
        except (OSError, ValueError) as err:
            report.problems.append(f"{split}: {err}")
            continue
        report.splits[split] = len(dataset)
        left_out = getattr(dataset, "skipped", [])
        skipped.update(dict.fromkeys(left_out))
        for message in getattr(dataset, "confusable", []):
            if message not in report.warnings:  # splits read with the same classes
                report.warnings.append(message)
        more = f", {len(left_out)} entries skipped" if left_out else ""
        log(f"{split}: {len(dataset)} images, {len(dataset.classes)} classes{more}")
        balance = ClassBalance.of(dataset.targets, dataset.classes)
        log("\n".join(f"  {line}" for line in balance.lines()))
        report.warnings += balance.warnings(split, max_imbalance)
        if dataset.count_problem and dataset.count_problem not in report.problems:
            report.problems.append(dataset.count_problem)
        paths.update(dict.fromkeys(path for path, _ in dataset.samples))
    report.skipped = list(skipped)
    report.images = len(paths)
    workers = workers or os.cpu_count() or 1
    log(f"decoding {report.images} images with {workers} processes ...")
    if workers == 1:
        results = list(map(_decode, paths))
    else:
        chunksize = max(1, min(64, len(paths) // workers // 4))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_decode, paths, chunksize=chunksize))
    report.bad_files = [message for message in results if message is not None]
    return report
