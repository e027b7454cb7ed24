"""Class balance: counts, ratio, the most and least frequent classes, the text histogram and
what ``fgvc data check`` prints and warns about."""

from __future__ import annotations

import math
import re

import pytest

from fgvc.commands.data import main
from fgvc.data.balance import IMBALANCE_WARN_RATIO, ClassBalance, class_counts
from tests.replicas import make_folders

NAMES = ("ant", "bee", "cat", "dog", "eel", "fox")
COUNTS = (40, 3, 12, 25, 7, 20)


def test_counts_and_ratio():
    assert class_counts([2, 0, 2, 2], 4) == [1, 0, 3, 0]
    with pytest.raises(ValueError, match=r"label 4 outside \[0, 4\)"):
        class_counts([4], 4)
    balance = ClassBalance.of([c for c, n in enumerate(COUNTS) for _ in range(n)], NAMES)
    assert balance.counts == COUNTS
    assert balance.ratio == 40 / 3
    assert ClassBalance((5, 5), ("a", "b")).ratio == 1.0
    assert ClassBalance((5, 0, 1), ("a", "b", "c")).ratio == 5.0  # over classes with images
    assert ClassBalance((0, 0), ("a", "b")).ratio == 1.0
    most, least = balance.extremes(3)
    assert [NAMES[c] for c in most] == ["ant", "dog", "fox"]
    assert [NAMES[c] for c in least] == ["bee", "eel", "cat"]
    # ties: the two lists never share a class
    assert ClassBalance((5, 5, 5, 1), tuple("abcd")).extremes(3) == ([0, 1], [3, 2])


def test_histogram_bins_cover_every_class_once():
    balance = ClassBalance(COUNTS, NAMES)
    lines = balance.histogram(bins=4, width=10)
    # 38 counts (3..40) in 4 bins: width ceil(38 / 4) = 10 -> 3-12, 13-22, 23-32, 33-40
    parsed = [re.fullmatch(r"\s*(\d+)-(\d+) (#*)\s* (\d+)", line).groups() for line in lines]
    spans = [(int(lo), int(hi)) for lo, hi, _, _ in parsed]
    assert spans == [(3, 12), (13, 22), (23, 32), (33, 40)]
    tallies = [int(n) for *_, n in parsed]
    assert tallies == [sum(lo <= c <= hi for c in COUNTS) for lo, hi in spans] == [3, 1, 1, 1]
    bars = [len(bar) for _, _, bar, _ in parsed]
    assert bars[0] == 10 and bars[1:] == [math.ceil(10 / 3)] * 3  # longest bar: width
    assert ClassBalance((7, 7, 7), ("a", "b", "c")).histogram() == ["7-7 " + "#" * 24 + " 3"]


def test_summary_lines_and_warning():
    balance = ClassBalance(COUNTS, NAMES)
    lines = balance.lines()
    assert lines[0] == "images per class: min 3, median 16, max 40; imbalance ratio 13.3"
    assert lines[1] == "most frequent: ant (40), dog (25), fox (20)"
    assert lines[2] == "least frequent: bee (3), eel (7), cat (12)"
    assert lines[3] == "classes by images per class:"
    assert len(lines) == 4 + len(balance.histogram())
    (warning,) = balance.warnings("train")
    assert warning.startswith("train: imbalance ratio 13.3 > 10 (largest class 40 images, ")
    assert "sampler balanced" in warning and "\n" not in warning
    (warning,) = balance.warnings("test")
    assert "mean_class_acc" in warning and "sampler" not in warning
    assert balance.warnings("train", threshold=40 / 3) == []  # above, not at, the threshold
    assert ClassBalance((10, 1), ("a", "b")).warnings("train") == []  # ratio 10: the default
    assert IMBALANCE_WARN_RATIO == 10


def test_classes_without_images_are_listed_and_warned_about_in_training():
    balance = ClassBalance((4, 0, 4, 0), ("a", "b", "c", "d"))
    assert balance.missing == [1, 3] and balance.present == [0, 2]
    assert balance.lines() == [
        "images per class: min 4, median 4, max 4; imbalance ratio 1.0",
        "no images: 2 classes (b (0), d (0))",
        "classes by images per class:",
        "  4-4 " + "#" * 24 + " 2",
    ]
    assert balance.warnings("val") == []  # an evaluation split may hold a subset
    assert balance.warnings("train") == [
        "train: 2 classes have no training image (b (0), d (0)); they cannot be learned - add "
        "images or remove the classes"
    ]


def test_data_check_prints_the_histogram_and_warns(tmp_path, capsys):
    make_folders(tmp_path, {"train": {"a": 22, "b": 2, "c": 6}, "val": {"a": 2, "b": 2, "c": 2}})
    assert main(["check", "folder", "--root", str(tmp_path), "--workers", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    at = out.index("train: 30 images, 3 classes")
    assert out[at + 1] == "  images per class: min 2, median 6, max 22; imbalance ratio 11.0"
    assert out[at + 2] == "  most frequent: a (22)" and out[at + 3] == "  least frequent: b (2)"
    assert "  images per class: min 2, median 2, max 2; imbalance ratio 1.0" in out
    warnings = [line for line in out if line.startswith("warning: ")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: train: imbalance ratio 11.0")
    assert out[-1].endswith("- ok")  # a warning does not fail the check
    assert main(["check", "folder", "--root", str(tmp_path), "--max-imbalance", "12"]) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert main(["check", "folder", "--root", str(tmp_path), "--max-imbalance", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err == "fgvc data: error: --max-imbalance 0.5: a ratio, must be >= 1\n"
