"""Decoding to RGB uint8: every mode, reduced-size decoding, clear errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from fgvc.data.io import ImageDecodeError, jpeg_header, load_rgb, read_rgb, reduction_factor
from tests.replicas import pattern, write_jpeg


def _assert_rgb(image, shape):
    assert image.dtype == np.uint8 and image.shape == (*shape, 3) and image.flags.c_contiguous


def test_rgb_jpeg_matches_source_and_pillow(tmp_path):
    source = pattern(40, 56, 1)
    write_jpeg(tmp_path / "a.jpg", source)
    image = load_rgb(tmp_path / "a.jpg")
    _assert_rgb(image, (40, 56))
    assert np.abs(image.astype(int) - source).mean() < 2.0
    pillow = np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB")).astype(int)
    assert np.abs(image.astype(int) - pillow).max() <= 2


def test_grayscale_jpeg_becomes_three_equal_channels(tmp_path):
    source = pattern(30, 20, 2)
    gray = np.asarray(Image.fromarray(source).convert("L")).astype(int)
    write_jpeg(tmp_path / "g.jpg", source, mode="L")
    image = load_rgb(tmp_path / "g.jpg")
    _assert_rgb(image, (30, 20))
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    assert np.abs(image[..., 0].astype(int) - gray).mean() < 2.0


def test_cmyk_jpeg_decodes_to_the_original_colours(tmp_path):
    source = pattern(32, 32, 3)
    write_jpeg(tmp_path / "c.jpg", source, mode="CMYK", quality=100)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    image = load_rgb(tmp_path / "c.jpg")
    _assert_rgb(image, (32, 32))
    assert np.abs(image.astype(int) - source).mean() < 3.0


def test_png_modes(tmp_path):
    source = pattern(20, 24, 4)
    alpha = np.full((20, 24, 1), 77, np.uint8)
    Image.fromarray(np.concatenate([source, alpha], -1), "RGBA").save(tmp_path / "rgba.png")
    palette = Image.fromarray(source).quantize(colors=16)
    palette.save(tmp_path / "p.png")
    Image.fromarray(source[..., 0]).convert("LA").save(tmp_path / "la.png")
    deep = source.astype(np.uint16) * 257 + 3  # 16 bit, low byte not zero
    cv2.imwrite(str(tmp_path / "rgb16.png"), deep[..., ::-1])
    cv2.imwrite(str(tmp_path / "gray16.png"), deep[..., 1])

    assert (load_rgb(tmp_path / "rgba.png") == source).all()
    assert (load_rgb(tmp_path / "p.png") == np.asarray(palette.convert("RGB"))).all()
    assert (load_rgb(tmp_path / "la.png") == source[..., :1].repeat(3, -1)).all()
    assert (load_rgb(tmp_path / "rgb16.png") == source).all()
    assert (load_rgb(tmp_path / "gray16.png") == source[..., 1:2].repeat(3, -1)).all()
    for name in ("rgba", "p", "la", "rgb16", "gray16"):
        _assert_rgb(load_rgb(tmp_path / f"{name}.png"), (20, 24))


def test_other_formats_go_through_pillow(tmp_path):
    source = pattern(16, 16, 5)
    Image.fromarray(source).save(tmp_path / "a.bmp")
    Image.fromarray(source).convert("CMYK").save(tmp_path / "a.tiff")
    assert (load_rgb(tmp_path / "a.bmp") == source).all()
    assert (
        load_rgb(tmp_path / "a.tiff") == np.asarray(Image.open(tmp_path / "a.tiff").convert("RGB"))
    ).all()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing", "header_only"])
def test_undecodable_files_raise_naming_the_file(tmp_path, damage):
    write_jpeg(tmp_path / "ok.jpg", pattern(64, 64, 6))
    data = (tmp_path / "ok.jpg").read_bytes()
    path = tmp_path / f"{damage}.jpg"
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"this is not an image at all" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "header_only":
        path.write_bytes(data[:200])
    with pytest.raises(ImageDecodeError) as info:
        load_rgb(path)
    assert str(path) in str(info.value)


def test_jpeg_header_reads_size_and_components(tmp_path):
    write_jpeg(tmp_path / "rgb.jpg", pattern(33, 47, 7))
    write_jpeg(tmp_path / "gray.jpg", pattern(33, 47, 7), mode="L")
    write_jpeg(tmp_path / "cmyk.jpg", pattern(33, 47, 7), mode="CMYK")
    Image.fromarray(pattern(33, 47, 7)).save(tmp_path / "prog.jpg", progressive=True)
    for name, components in (("rgb", 3), ("gray", 1), ("cmyk", 4), ("prog", 3)):
        assert jpeg_header((tmp_path / f"{name}.jpg").read_bytes()) == (33, 47, components)
    assert jpeg_header(b"\x89PNG\r\n\x1a\n") is None


def test_reduction_factor():
    assert reduction_factor(853, 1280, None) == 1
    assert reduction_factor(853, 1280, (512, 512)) == 1  # 853 / 2 < 512: full decode
    assert reduction_factor(853, 1280, (256, 256)) == 2
    assert reduction_factor(853, 1280, (100, 100)) == 8
    assert reduction_factor(500, 500, (250, 250)) == 2


def test_reduced_decoding_is_a_good_downscale(tmp_path):
    source = pattern(240, 320, 8)
    write_jpeg(tmp_path / "big.jpg", source)
    image, factor = read_rgb(tmp_path / "big.jpg", min_size=(100, 150))
    assert factor == 2 and image.shape == (120, 160, 3)
    reference = cv2.resize(source, (160, 120), interpolation=cv2.INTER_AREA)
    assert np.abs(image.astype(int) - reference).mean() < 2.5
    full, factor = read_rgb(tmp_path / "big.jpg", min_size=(200, 150))
    assert factor == 1 and full.shape == (240, 320, 3)
    # CMYK JPEGs are never decoded reduced (Pillow path) but still decode
    write_jpeg(tmp_path / "cmyk.jpg", source, mode="CMYK")
    image, factor = read_rgb(tmp_path / "cmyk.jpg", min_size=(50, 50))
    assert factor == 1 and image.shape == (240, 320, 3)


def test_exif_orientation_is_ignored_like_pillow(tmp_path):
    source = pattern(20, 40, 9)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(source).save(tmp_path / "rotated.jpg", quality=95, exif=exif)
    image = load_rgb(tmp_path / "rotated.jpg")
    assert image.shape == (20, 40, 3)  # stored orientation, not the displayed one
    pillow = np.asarray(Image.open(tmp_path / "rotated.jpg").convert("RGB")).astype(int)
    assert np.abs(image.astype(int) - pillow).max() <= 2
    reduced, factor = read_rgb(tmp_path / "rotated.jpg", min_size=(10, 20))
    assert factor == 2 and reduced.shape == (10, 20, 3)
