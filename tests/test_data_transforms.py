"""Transform presets against the authors' torchvision preprocessing; device-side helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from fgvc.data import CUB200, FGVCAircraft
from fgvc.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_transforms,
    decode_min_size,
    hflip_tta,
    normalize_images,
)
from tests.replicas import BANNER_RGB, make_aircraft, make_cub, pattern

SIZE = 64
IMAGE = pattern(90, 130, 11)  # landscape, not a multiple of anything


def authors_eval(preset: str, size: int = SIZE) -> T.Compose:
    """The authors' evaluation pipelines (datasets.md table), written with torchvision."""
    geometry = {
        "cub": [T.Resize(size), T.CenterCrop(size)],
        "aircraft": [T.Resize((round(size * 512 / 448),) * 2), T.CenterCrop(size)],
        "cars": [T.Resize((size, size))],
    }[preset]
    return T.Compose([*geometry, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


@pytest.mark.parametrize("preset", ["cub", "cars", "aircraft", "generic"])
@pytest.mark.parametrize("train", [True, False])
def test_shapes_and_dtypes(preset, train):
    normalized = build_transforms(preset, train, SIZE)(image=IMAGE)["image"]
    raw = build_transforms(preset, train, SIZE, normalize=False)(image=IMAGE)["image"]
    assert normalized.shape == raw.shape == (3, SIZE, SIZE)
    assert normalized.dtype == torch.float32 and raw.dtype == torch.uint8
    assert -2.2 < normalized.min() and normalized.max() < 2.7


#: one grey level after normalization (the smallest std divides it most)
GREY_LEVEL = 1 / 255 / min(IMAGENET_STD)


def differs_from_the_authors(preset: str, antialias: bool, image: np.ndarray) -> list[str]:
    """What exceeds the observed agreement with the authors' pipeline on ``IMAGE``: at most
    one grey level anywhere, and on average about 0.003-0.004 (OpenCV bilinear on the
    cropped region) or about 1e-5 (antialiased, Pillow's kernel) in normalized units."""
    ours = build_transforms(preset, False, SIZE, antialias=antialias)(image=image)["image"]
    theirs = authors_eval(preset)(Image.fromarray(IMAGE))
    assert ours.shape == theirs.shape
    diff = (ours - theirs).abs()
    problems = []
    if diff.max() > GREY_LEVEL + 1e-6:
        problems.append(f"max {float(diff.max()):.4f}")
    if diff.mean() >= (2e-4 if antialias else 0.005):
        problems.append(f"mean {float(diff.mean()):.5f}")
    return problems


@pytest.mark.parametrize("preset", ["cub", "cars", "aircraft"])
@pytest.mark.parametrize("antialias", [False, True])
def test_eval_reproduces_the_authors_pipeline(preset, antialias):
    assert differs_from_the_authors(preset, antialias, IMAGE) == []


@pytest.mark.parametrize("preset", ["cub", "cars", "aircraft"])
@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("shift", ["column", "row"])
def test_a_one_pixel_shift_is_told_apart_from_the_authors_pipeline(preset, antialias, shift):
    """The tolerances above are tight enough to catch a crop one source pixel off."""
    shifted = np.ascontiguousarray(IMAGE[:, 1:] if shift == "column" else IMAGE[1:])
    assert differs_from_the_authors(preset, antialias, shifted) != []


@pytest.mark.parametrize("preset", ["cub", "cars", "aircraft"])
def test_training_is_eval_plus_random_flip(preset):
    evaluation = build_transforms(preset, False, SIZE)(image=IMAGE)["image"]
    train = build_transforms(preset, True, SIZE, seed=3)
    flipped = unflipped = 0
    for _ in range(24):
        out = train(image=IMAGE)["image"]
        if torch.equal(out, evaluation):
            unflipped += 1
        else:
            assert torch.equal(out, evaluation.flip(-1))
            flipped += 1
    assert flipped >= 4 and unflipped >= 4


def test_training_randomness_is_seeded():
    a = build_transforms("generic", True, SIZE, seed=5)
    b = build_transforms("generic", True, SIZE, seed=5)
    c = build_transforms("generic", True, SIZE, seed=6)
    outs_a = [a(image=IMAGE)["image"] for _ in range(4)]
    outs_b = [b(image=IMAGE)["image"] for _ in range(4)]
    outs_c = [c(image=IMAGE)["image"] for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(outs_a, outs_b))
    assert not all(torch.equal(x, y) for x, y in zip(outs_a, outs_c))
    assert not all(torch.equal(outs_a[0], x) for x in outs_a[1:])  # crops differ per call


def test_device_normalization_equals_worker_normalization():
    for preset in ("cub", "generic"):
        on_cpu = build_transforms(preset, False, SIZE)(image=IMAGE)["image"]
        raw = build_transforms(preset, False, SIZE, normalize=False)(image=IMAGE)["image"]
        batch = normalize_images(torch.stack([raw, raw]))
        assert batch.dtype == torch.float32
        torch.testing.assert_close(batch[0], on_cpu, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(normalize_images(raw), on_cpu, atol=1e-5, rtol=1e-5)
        assert normalize_images(on_cpu) is on_cpu  # float input: already normalized
    with pytest.raises(TypeError):
        normalize_images(torch.zeros(1, 3, 2, 2, dtype=torch.int32))


def test_hflip_tta_averages_image_and_mirror():
    torch.manual_seed(0)
    weight = torch.randn(5, 3 * 8 * 8)

    def forward(x):
        return x.flatten(1) @ weight.T

    x = torch.randn(2, 3, 8, 8)
    expected = (forward(x) + forward(x.flip(-1))) / 2
    torch.testing.assert_close(hflip_tta(forward, x), expected)
    torch.testing.assert_close(hflip_tta(forward, x.flip(-1)), expected)  # mirror-invariant
    assert not torch.allclose(forward(x), expected)


def test_decode_min_size():
    assert decode_min_size("aircraft", True, 448) == (512, 512)
    assert decode_min_size("cub", False, 448) == (448, 448)
    assert decode_min_size("cars", True, 224) == (224, 224)
    assert decode_min_size("generic", True, 224) is None
    assert decode_min_size("generic", False, 224) == (256, 256)


def test_bad_arguments():
    with pytest.raises(ValueError, match="preset"):
        build_transforms("birds", True)
    with pytest.raises(ValueError, match="image_size"):
        build_transforms("cub", True, image_size=0)


def test_datasets_take_the_pipelines_directly(tmp_path):
    make_cub(tmp_path / "cub")
    make_aircraft(tmp_path / "air")
    cub = CUB200(tmp_path / "cub", "train", transform=build_transforms("cub", True, 32))
    air = FGVCAircraft(tmp_path / "air", "test", transform=build_transforms("aircraft", False, 32))
    for dataset in (cub, air):
        image, label = dataset[0]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert isinstance(label, int)
    # the banner is cropped before the transform: no red rows at the bottom of the crop
    raw = FGVCAircraft(
        tmp_path / "air", "test", transform=build_transforms("cars", False, 32, normalize=False)
    )
    image, _ = raw[0]
    assert (
        np.abs(image[:, -2:].permute(1, 2, 0).numpy().astype(int) - BANNER_RGB).max(-1).min() > 40
    )
