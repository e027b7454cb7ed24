"""Decoding to RGB uint8: every mode, reduced-size decoding, clear errors."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

import fgvc.data.io as fgvc_io
from fgvc.data.io import (
    MAX_PIXELS_ENV,
    ImageDecodeError,
    ImageTooLargeError,
    decode_rgb,
    jpeg_header,
    load_rgb,
    max_image_pixels,
    png_header,
    read_rgb,
    reduction_factor,
)
from tests.replicas import pattern, write_jpeg

REPO = Path(__file__).resolve().parents[1]


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


# -- decompression bombs -----------------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png_bomb(path: Path, width: int, height: int) -> None:
    """A real black 1-bit grayscale PNG, compressed one row at a time (never held whole)."""
    compress = zlib.compressobj(9)
    row = b"\x00" + bytes((width + 7) // 8)  # filter byte "none", then the packed pixels
    idat = b"".join(compress.compress(row) for _ in range(height)) + compress.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def write_jpeg_claiming(path: Path, height: int, width: int, **save: object) -> None:
    """A small real JPEG whose SOF segment is patched to claim ``height x width``."""
    Image.fromarray(pattern(16, 16, 10)).convert(save.pop("mode", "RGB")).save(path, **save)
    data = bytearray(path.read_bytes())
    sof = min(data.find(marker) for marker in (b"\xff\xc0", b"\xff\xc2") if marker in data)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def png_bomb(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    write_png_bomb(path, 30000, 30000)
    return path


@pytest.fixture(autouse=True)
def _default_limit(monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)


@contextmanager
def decoders_refused(monkeypatch):
    """Any call into OpenCV's or Pillow's pixel decoding fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a pixel decoder was called")

    with monkeypatch.context() as patch:
        patch.setattr(cv2, "imdecode", refuse)
        patch.setattr(ImageFile.ImageFile, "load", refuse)
        yield


def _one_line_naming(err: Exception, path: Path, *parts: str) -> str:
    message = str(err)
    assert "\n" not in message and str(path) in message
    for part in parts:
        assert part in message, (part, message)
    return message


def test_png_bomb_is_refused_from_its_header(png_bomb, monkeypatch):
    assert png_bomb.stat().st_size < 200_000
    with monkeypatch.context() as patch:  # the replica is what it claims, says Pillow
        patch.setattr(Image, "MAX_IMAGE_PIXELS", None)
        assert Image.open(png_bomb).size == (30000, 30000)
    assert png_header(png_bomb.read_bytes()) == (30000, 30000)
    with decoders_refused(monkeypatch), pytest.raises(ImageTooLargeError) as info:
        read_rgb(png_bomb, min_size=(100, 100))
    assert isinstance(info.value, ImageDecodeError)  # existing handlers report it
    limit = f"{fgvc_io.DEFAULT_MAX_IMAGE_PIXELS:,}"
    _one_line_naming(info.value, png_bomb, "30000x30000", limit, f"{MAX_PIXELS_ENV}=900000000")


def test_png_bomb_is_never_decoded_in_a_fresh_process(png_bomb):
    """Peak memory stays flat (the decoded image would take 2.7 GB)."""
    code = textwrap.dedent(
        """
        import resource, sys
        from fgvc.data.io import ImageDecodeError, load_rgb
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_rgb(sys.argv[1])
        except ImageDecodeError as err:
            print(type(err).__name__)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != MAX_PIXELS_ENV}
    result = subprocess.run(
        [sys.executable, "-c", code, str(png_bomb)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "ImageTooLargeError"
    assert int(result.stdout.split()[-1]) < 50_000  # kB


@pytest.mark.parametrize(
    "save", [{}, {"mode": "L"}, {"mode": "CMYK"}, {"progressive": True}], ids=str
)
def test_jpeg_claiming_a_huge_size_is_refused(tmp_path, monkeypatch, save):
    path = tmp_path / "claims.jpg"
    write_jpeg_claiming(path, 30000, 40000, **save)
    with monkeypatch.context() as patch:
        patch.setattr(Image, "MAX_IMAGE_PIXELS", None)
        assert Image.open(path).size == (40000, 30000)
    with decoders_refused(monkeypatch), pytest.raises(ImageTooLargeError) as info:
        load_rgb(path)
    _one_line_naming(info.value, path, "40000x30000", "1,200,000,000 pixels")


def test_limit_from_environment_and_argument(tmp_path, monkeypatch):
    source = pattern(40, 56, 11)  # 2240 pixels
    path = tmp_path / "a.png"
    Image.fromarray(source).save(path)
    assert (load_rgb(path) == source).all()  # far below the default
    assert max_image_pixels() == fgvc_io.DEFAULT_MAX_IMAGE_PIXELS
    monkeypatch.setenv(MAX_PIXELS_ENV, "2239")
    with decoders_refused(monkeypatch), pytest.raises(ImageTooLargeError) as info:
        load_rgb(path)
    _one_line_naming(info.value, path, "56x40", f"{MAX_PIXELS_ENV}=2240 or more")
    monkeypatch.setenv(MAX_PIXELS_ENV, "2240")  # the limit itself is allowed
    assert (load_rgb(path) == source).all()
    monkeypatch.setenv(MAX_PIXELS_ENV, " 2.24e3 ")
    assert max_image_pixels() == 2240
    # the argument wins over the environment, both ways
    monkeypatch.setenv(MAX_PIXELS_ENV, "100")
    assert (read_rgb(path, max_pixels=2240)[0] == source).all()
    assert (decode_rgb(path.read_bytes(), max_pixels=0)[0] == source).all()  # 0: no limit
    monkeypatch.delenv(MAX_PIXELS_ENV)
    with pytest.raises(ImageTooLargeError) as info:
        read_rgb(path, max_pixels=1000)
    _one_line_naming(info.value, path, "max_pixels=2240 or more")
    # switched off through the environment, even below a lowered default
    monkeypatch.setattr(fgvc_io, "DEFAULT_MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageTooLargeError):
        load_rgb(path)
    for off in ("0", "none", "None"):
        monkeypatch.setenv(MAX_PIXELS_ENV, off)
        assert max_image_pixels() is None and (load_rgb(path) == source).all()


@pytest.mark.parametrize("value", ["lots", "-5", "1.5", "inf", "1e999"])
def test_unreadable_limit_is_a_one_line_error(tmp_path, monkeypatch, value):
    Image.fromarray(pattern(8, 8, 1)).save(tmp_path / "a.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, value)
    with pytest.raises(ValueError, match=f"^{MAX_PIXELS_ENV}=.*whole number") as info:
        load_rgb(tmp_path / "a.png")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="max_pixels"):
        load_rgb(tmp_path / "a.png", max_pixels=-1)


def test_pillow_formats_are_checked_before_decoding(tmp_path, monkeypatch):
    source = pattern(40, 40, 12)
    path = tmp_path / "a.bmp"
    Image.fromarray(source).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's guard off: ours holds
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with decoders_refused(monkeypatch), pytest.raises(ImageTooLargeError) as info:
        load_rgb(path)
    _one_line_naming(info.value, path, "40x40", "1,000 pixels")
    monkeypatch.setenv(MAX_PIXELS_ENV, "1600")
    assert (load_rgb(path) == source).all()


def test_pillow_own_bomb_guard_cannot_crash(tmp_path, monkeypatch):
    source = pattern(40, 40, 13)  # 1600 pixels
    path = tmp_path / "a.bmp"
    Image.fromarray(source).save(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "none")  # ours off: Pillow's is what trips
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 700)  # above twice that: Pillow raises
    with pytest.raises(ImageTooLargeError) as info:
        load_rgb(path)
    _one_line_naming(info.value, path, "PIL.Image.MAX_IMAGE_PIXELS")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # between: Pillow warns ...
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ... and a warning turned error is no crash either
        with pytest.raises(ImageTooLargeError):
            load_rgb(path)
    with pytest.warns(Image.DecompressionBombWarning):  # a mere warning: decoded
        assert (load_rgb(path) == source).all()


def test_images_under_the_limit_decode_as_before(tmp_path, monkeypatch):
    small = tmp_path / "small.png"
    write_png_bomb(small, 70, 9)  # the bomb writer makes real PNGs
    assert (load_rgb(small) == 0).all() and load_rgb(small).shape == (9, 70, 3)
    source = pattern(48, 64, 14)
    write_jpeg(tmp_path / "a.jpg", source)
    reference = cv2.cvtColor(cv2.imread(str(tmp_path / "a.jpg")), cv2.COLOR_BGR2RGB)
    monkeypatch.setenv(MAX_PIXELS_ENV, str(48 * 64))
    image, factor = read_rgb(tmp_path / "a.jpg")
    assert factor == 1 and (image == reference).all()
    reduced, factor = read_rgb(tmp_path / "a.jpg", min_size=(24, 32))
    assert factor == 2 and reduced.shape == (24, 32, 3)


def test_a_jpeg_hiding_its_size_behind_junk_bytes_is_still_measured():
    """FF 00 after SOI is junk to libjpeg, which reads on and finds the real frame header;
    a parser that jumps over it as a segment would check a fake small size instead."""
    import io as _io

    real = _io.BytesIO()
    Image.fromarray(np.zeros((400, 400, 3), np.uint8)).save(real, format="JPEG")
    body = real.getvalue()[2:-2]
    fake_sof = b"\xff\xc0\x00\x11\x08\x00\x08\x00\x08\x03" + bytes(9)
    crafted = b"\xff\xd8\xff\x00" + (len(body) + 2).to_bytes(2, "big") + body + fake_sof
    crafted += b"\xff\xd9"
    assert jpeg_header(crafted) is None  # not trusted: measured by the slower parser
    with pytest.raises(ImageDecodeError):
        decode_rgb(crafted, "crafted.jpg", max_pixels=1000)


@pytest.mark.parametrize("size", [(1, 5000), (5000, 1), (2, 41)])
def test_a_strip_is_refused_by_its_header_in_every_format(tmp_path, monkeypatch, size):
    height, width = size
    for name in ("strip.png", "strip.jpg", "strip.bmp"):
        path = tmp_path / name
        Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(path)
        with decoders_refused(monkeypatch), pytest.raises(ImageDecodeError) as info:
            read_rgb(path, min_size=(8, 8))
        assert str(info.value) == (
            f"{path}: {width}x{height} image, its long side more than 20 times its short side "
            f"(a strip, not a photograph: a center crop keeps nothing of it); crop or remove "
            f"it (fgvc data check lists all such files)"
        )
    Image.fromarray(np.full((2, 40, 3), 90, np.uint8)).save(tmp_path / "ok.png")
    assert load_rgb(tmp_path / "ok.png").shape == (2, 40, 3)  # 20 times: still a photograph
