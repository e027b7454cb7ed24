"""Preset numbers against the sizes written out by hand (integer arithmetic)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from fgvc.data.datasets import presets
from fgvc.data.presets import GENERIC, Preset
from fgvc.data.transforms import build_transforms, decode_min_size, resize_side


@pytest.mark.parametrize("size", [8, 100, 223, 224, 299, 448, 449, 511])
def test_sides_equal_the_hand_formulas(size):
    assert resize_side("cub", size) == size
    assert resize_side("cars", size) == size
    assert resize_side("aircraft", size) == (size * 512 * 2 + 448) // (2 * 448)  # round half up
    assert resize_side("generic", size) == -(-size * 8 // 7)  # ceil(S / 0.875), exactly


def test_reference_sizes_of_the_papers():
    assert resize_side("aircraft", 448) == 512 and resize_side("generic", 224) == 256


def test_every_dataset_preset_builds_train_and_eval_pipelines():
    for name, numbers in presets().items():
        for train in (True, False):
            pipeline = build_transforms(name, train, image_size=32, normalize=False)
            out = pipeline(image=np.zeros((40, 50, 3), np.uint8))["image"]
            assert tuple(out.shape) == (3, 32, 32), name
        random_crop = decode_min_size(name, True, 32) is None
        assert random_crop == numbers.random_resized_crop


def test_bad_numbers_are_refused():
    with pytest.raises(ValueError, match="resize must be"):
        Preset("long_side")
    with pytest.raises(ValueError, match="ratio must be a Fraction >= 1"):
        Preset("square", Fraction(1, 2))
    with pytest.raises(ValueError, match="unknown transform preset 'nope'"):
        build_transforms("nope", False)
    assert presets()["generic"] is GENERIC
