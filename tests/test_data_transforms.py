"""Transform presets against the authors' torchvision preprocessing; device-side helpers."""

from __future__ import annotations

import math

import albumentations as A
import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from fgvc.data import CUB200, FGVCAircraft
from fgvc.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ResizeCrop,
    build_transforms,
    decode_min_size,
    hflip_tta,
    normalize_images,
)
from tests.replicas import BANNER_RGB, make_aircraft, make_cub, pattern

SIZE = 64
IMAGE = pattern(90, 130, 11)  # landscape, not a multiple of anything
PORTRAIT = pattern(130, 90, 12)


def authors_eval(preset: str, size: int = SIZE) -> T.Compose:
    """The authors' evaluation pipelines (datasets.md table), written with torchvision;
    ``generic``: the usual ImageNet evaluation (short side to S / 0.875, center crop)."""
    geometry = {
        "cub": [T.Resize(size), T.CenterCrop(size)],
        "aircraft": [T.Resize((round(size * 512 / 448),) * 2), T.CenterCrop(size)],
        "cars": [T.Resize((size, size))],
        "generic": [T.Resize(math.ceil(size / 0.875)), T.CenterCrop(size)],
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
#: what is compared with the authors: OpenCV bilinear for the papers' presets, and the
#: antialiased kernel (Pillow's) for those and ``generic``
PARITY = [
    *[(preset, False) for preset in ("cub", "cars", "aircraft")],
    *[(preset, True) for preset in ("cub", "cars", "aircraft", "generic")],
]


def differs_from_the_authors(
    preset: str, antialias: bool, source: np.ndarray, image: np.ndarray | None = None
) -> list[str]:
    """What exceeds the observed agreement with the authors' pipeline on ``source`` (ours
    gets ``image``, by default the same): at most one grey level anywhere, and on average
    about 0.003-0.004 (OpenCV bilinear on the cropped region) or about 1e-5 (antialiased,
    Pillow's kernel) in normalized units."""
    image = source if image is None else image
    ours = build_transforms(preset, False, SIZE, antialias=antialias)(image=image)["image"]
    theirs = authors_eval(preset)(Image.fromarray(source))
    assert ours.shape == theirs.shape
    diff = (ours - theirs).abs()
    problems = []
    if diff.max() > GREY_LEVEL + 1e-6:
        problems.append(f"max {float(diff.max()):.4f}")
    if diff.mean() >= (2e-4 if antialias else 0.005):
        problems.append(f"mean {float(diff.mean()):.5f}")
    return problems


@pytest.mark.parametrize("preset, antialias", PARITY)
@pytest.mark.parametrize("source", [IMAGE, PORTRAIT], ids=["landscape", "portrait"])
def test_eval_reproduces_the_authors_pipeline(preset, antialias, source):
    assert differs_from_the_authors(preset, antialias, source) == []


@pytest.mark.parametrize("preset, antialias", PARITY)
@pytest.mark.parametrize("shift", ["column", "row"])
@pytest.mark.parametrize("source", [IMAGE, PORTRAIT], ids=["landscape", "portrait"])
def test_a_one_pixel_shift_is_told_apart_from_the_authors_pipeline(
    preset, antialias, shift, source
):
    """The tolerances above are tight enough to catch a crop one source pixel off."""
    shifted = np.ascontiguousarray(source[:, 1:] if shift == "column" else source[1:])
    assert differs_from_the_authors(preset, antialias, source, shifted) != []


def test_an_image_of_the_target_size_is_cropped_not_resampled():
    image = pattern(SIZE, SIZE + 20, 3)  # cub: the short side is already S
    out = build_transforms("cub", False, SIZE, normalize=False)(image=image)["image"]
    assert torch.equal(out, torch.from_numpy(image[:, 10 : 10 + SIZE]).permute(2, 0, 1))
    square = pattern(SIZE, SIZE, 4)
    out = build_transforms("cars", False, SIZE, normalize=False)(image=square)["image"]
    assert torch.equal(out, torch.from_numpy(square).permute(2, 0, 1))


def test_defaults_are_the_papers_448_and_opencv_bilinear():
    default = build_transforms("cub", False, SIZE)(image=IMAGE)["image"]
    assert torch.equal(
        default, build_transforms("cub", False, SIZE, antialias=False)(image=IMAGE)["image"]
    )
    assert not torch.equal(
        default, build_transforms("cub", False, SIZE, antialias=True)(image=IMAGE)["image"]
    )
    assert build_transforms("cub", False)(image=IMAGE)["image"].shape == (3, 448, 448)
    assert decode_min_size("cub", False) == (448, 448)
    assert ResizeCrop(size=(8, 8)).antialias is False
    assert build_transforms("cars", False, 8)(image=IMAGE)["image"].shape == (3, 8, 8)  # smallest
    with pytest.raises(ValueError, match="image_size must be an integer >= 8, got 7"):
        build_transforms("cars", False, 7)


@pytest.mark.parametrize("preset", ["cub", "aircraft", "cars"])
def test_pipelines_serialize_and_come_back_equal(preset):
    """albumentations' to_dict / from_dict keeps every ResizeCrop argument."""
    pipeline = build_transforms(preset, False, SIZE, normalize=False, antialias=True)
    step = A.to_dict(pipeline)["transform"]["transforms"][0]
    own = pipeline.transforms[0]
    assert step["__class_fullname__"] == "fgvc.data.resize_crop.ResizeCrop"
    assert {k: step[k] for k in ("size", "shortest_side", "crop", "antialias")} == {
        "size": own.size,
        "shortest_side": own.shortest_side,
        "crop": own.crop,
        "antialias": True,
    }
    again = A.from_dict(A.to_dict(pipeline))
    assert torch.equal(again(image=IMAGE)["image"], pipeline(image=IMAGE)["image"])


def test_resize_crop_describes_itself():
    assert ResizeCrop(shortest_side=73, crop=(64, 48)).describe() == (
        "resize short side to 73, center crop 64x48"
    )
    assert ResizeCrop(size=(80, 60)).describe() == "resize to 80x60"
    assert ResizeCrop(size=(73, 74), crop=(64, 64)).describe() == (
        "resize to 73x74, center crop 64x64"
    )


def test_resize_crop_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="exactly one of size and shortest_side"):
        ResizeCrop()
    with pytest.raises(ValueError, match="exactly one of size and shortest_side"):
        ResizeCrop(size=(8, 8), shortest_side=8)
    too_large = ResizeCrop(size=(40, 10), crop=(20, 20))  # too wide, tall enough
    with pytest.raises(ValueError, match=r"crop \(20, 20\) is larger than the resized image 40x10"):
        too_large(image=IMAGE)


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
    with pytest.raises(TypeError, match="expects uint8 or float images, got torch.int32"):
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


@pytest.mark.parametrize("shape", [(1, 20), (20, 1), (1, 100), (1, 1)])
def test_a_crop_under_one_source_pixel_keeps_that_pixel(shape):
    """A 1-pixel-high image: the crop covers 0.875 source pixels, which rounding could make
    an empty region (OpenCV's resize then fails)."""
    image = np.arange(shape[0] * shape[1] * 3, dtype=np.uint8).reshape(*shape, 3)
    for side, crop in ((512, 448), (256, 224)):
        out = ResizeCrop(shortest_side=side, crop=(crop, crop)).apply(image)
        assert out.shape == (crop, crop, 3)
        middle = image[shape[0] // 2, shape[1] // 2]
        assert (out[crop // 2, crop // 2] == middle).all()  # the pixel under the crop
