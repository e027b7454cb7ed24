"""EvalPreprocessing: validated, round-trips through dicts, describes itself, and is what
the DataModules evaluate with."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fgvc.data import AircraftDataModule, EvalPreprocessing
from fgvc.data.transforms import IMAGENET_MEAN, IMAGENET_STD, PRESETS, build_transforms
from tests.replicas import make_aircraft, pattern, write_jpeg


@pytest.mark.parametrize("preset", PRESETS)
def test_round_trip_and_resize_read_off_the_pipeline(preset):
    prep = EvalPreprocessing(96, preset, antialias=True, fast_decode=False, tta=True)
    as_dict = prep.to_dict()
    assert EvalPreprocessing.from_dict(as_dict) == prep
    # the derived text is the pipeline's own: the eval resize that build_transforms makes
    first = build_transforms(preset, False, 96, normalize=False, antialias=True).transforms[0]
    assert as_dict["resize"] == first.describe()
    assert "antialiased" in prep.describe() and "TTA on" in prep.describe()


def test_resize_policies_in_words():
    assert EvalPreprocessing(448, "aircraft").resize == "resize to 512x512, center crop 448x448"
    assert EvalPreprocessing(448, "cub").resize == "resize short side to 448, center crop 448x448"
    assert EvalPreprocessing(64, "cars").resize == "resize to 64x64"
    assert EvalPreprocessing(448, "generic").resize == (
        "resize short side to 512, center crop 448x448"
    )


@pytest.mark.parametrize(
    "values, message",
    [
        ({"image_size": "448", "preset": "cub"}, "image_size must be an integer >= 8"),
        ({"image_size": 4, "preset": "cub"}, "image_size must be an integer >= 8"),
        ({"image_size": 64, "preset": "imagenet-21k"}, "unknown preset"),
        ({"image_size": 64, "preset": "cub", "tta": "yes"}, "tta must be true or false"),
        ({"image_size": 64, "preset": "cub", "std": [0.2, 0.2, 0]}, "std must be 3 numbers"),
        ({"preset": "cub"}, "needs image_size and preset"),
    ],
)
def test_hand_edited_values_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        EvalPreprocessing.from_dict(values)


def test_batch_normalizes_with_its_own_statistics():
    image = torch.full((3, 8, 8), 255, dtype=torch.uint8)
    prep = EvalPreprocessing(8, "cars", mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    batch = prep.batch([image, torch.zeros_like(image)])
    assert batch.dtype == torch.float32 and batch.shape == (2, 3, 8, 8)
    torch.testing.assert_close(batch[0, :, 0, 0], torch.tensor([2.0, 1.0, 0.5]))
    torch.testing.assert_close(batch[1, :, 0, 0], torch.tensor([-2.0, -1.0, -0.5]))
    default = EvalPreprocessing(8, "cars")
    assert (default.mean, default.std) == (IMAGENET_MEAN, IMAGENET_STD)


def test_the_datamodule_evaluates_with_it_and_saves_it(tmp_path):
    make_aircraft(tmp_path)
    # the banner is cropped by the dataset (a property of its files), not by the preprocessing
    dm = AircraftDataModule(
        str(tmp_path), image_size=32, num_workers=0, antialias=True, crop_banner=False
    )
    assert dm.eval_preprocessing == EvalPreprocessing(32, "aircraft", antialias=True)
    assert dm.state_dict() == {"eval_preprocessing": dm.eval_preprocessing.to_dict()}
    dm.setup("fit")
    path, _ = dm.val_set.samples[0]
    expected, _ = dm.val_set[0]
    assert torch.equal(dm.eval_preprocessing.load(path), torch.as_tensor(expected))


def test_fast_decode_reads_large_jpegs_at_reduced_scale(tmp_path):
    path = tmp_path / "big.jpg"
    write_jpeg(path, pattern(400, 600, 1))
    fast = EvalPreprocessing(32, "cub")
    full = dataclasses.replace(fast, fast_decode=False)
    assert fast.decode_min_size == (32, 32) and full.decode_min_size is None
    a, b = fast.load(path), full.load(path)
    assert a.shape == b.shape == (3, 32, 32)
    difference = (a.int() - b.int()).abs().float()
    assert 0 < difference.mean() < 10 and np.isfinite(difference.numpy()).all()


def test_load_bytes_is_load_of_the_same_file(tmp_path):
    """An upload (``fgvc serve``) is prepared exactly as the file on disk; errors name it."""
    from PIL import Image

    from fgvc.errors import ImageDecodeError

    big, small = tmp_path / "big.jpg", tmp_path / "small.png"
    write_jpeg(big, pattern(400, 600, 1))  # decoded at reduced DCT scale
    Image.fromarray(pattern(40, 50, 2)).save(small)
    prep = EvalPreprocessing(32, "cub")
    for path in (big, small):
        assert prep.load_bytes(path.read_bytes(), path.name).equal(prep.load(path))
    with pytest.raises(ImageDecodeError, match="upload.bin"):
        prep.load_bytes(b"not an image", "upload.bin")


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("preset", PRESETS)
def test_prepare_without_albumentations_equals_the_pipeline(preset, antialias):
    """EvalPreprocessing resizes with the pure function (no albumentations for predict):
    the very pixels of the albumentations evaluation pipeline, for each preset."""
    rng = np.random.default_rng(3)
    prep = EvalPreprocessing(40, preset, antialias=antialias)
    for shape in ((61, 97, 3), (97, 61, 3), (40, 40, 3), (13, 200, 3)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        expected = prep.transform()(image=image)["image"]
        got = prep.prepare(image)
        assert got.dtype == torch.uint8 and torch.equal(got, expected), (preset, shape)
    assert prep.resize == prep.transform().transforms[0].describe()
