"""fgvc.load: predict on every kind of image as `fgvc predict` does on the files, the same
predictions from a bundle, a checkpoint and a run folder, one-line errors naming the image,
Grad-CAM as `explain_images` computes it."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fgvc
from fgvc.commands.predict import main as predict_main
from fgvc.deploy.bundle import load as load_bundle
from fgvc.deploy.classifier import Classifier, TopK
from fgvc.deploy.explain import explain_images
from fgvc.deploy.export import export_checkpoint
from fgvc.errors import ImageDecodeError, UsageError
from tests.test_deploy_predict import hand_tta
from tests.tiny import CLASS_NAMES

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_run):
    """(bundle, checkpoint, run folder, {name: image file}) of a tiny trained model."""
    root = tmp_path_factory.mktemp("classifier")
    _, _, ckpt, run = tiny_run
    bundle = export_checkpoint(ckpt, root / "bundle")
    rng = np.random.default_rng(1)
    files = {}
    for name, shape in (("a.png", (40, 48, 3)), ("b.png", (52, 36, 3)), ("grey.png", (40, 40))):
        files[name] = root / name
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(files[name])
    files["c.jpg"] = root / "c.jpg"  # large enough to be decoded at reduced scale from a file
    Image.fromarray(rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)).save(files["c.jpg"])
    return bundle, ckpt, run, files


def cli_probabilities(files: list[Path], model: Path, *flags: str) -> dict[str, list[float]]:
    """`fgvc predict --format json`: the probability of every class, by image."""
    out, err = io.StringIO(), io.StringIO()
    argv = [*map(str, files), "--model", str(model), "--topk", "9", "--format", "json"]
    assert predict_main([*argv, "--no-progress", *flags], stdout=out, stderr=err) == 0, err
    result = {}
    for pred in json.loads(out.getvalue())["predictions"]:
        probs = [0.0] * len(CLASS_NAMES)
        for entry in pred["top"]:
            probs[entry["class_index"]] = entry["probability"]
        result[pred["image"]] = probs
    return result


def by_class(top: TopK) -> list[float]:
    probs = [0.0] * len(CLASS_NAMES)
    for index, (name, p) in zip(top.indices, top):
        assert CLASS_NAMES[index] == name
        probs[index] = p
    return probs


def test_every_kind_of_image_gives_what_fgvc_predict_gives(setup):
    bundle, _, _, files = setup
    model = fgvc.load(bundle)
    png = files["a.png"]
    cli = cli_probabilities(list(files.values()), bundle, "--backend", "torch")
    onnx = cli_probabilities(list(files.values()), bundle)
    # files: the same decoding (a JPEG at reduced scale too), the same batch: the same numbers
    for top, path in zip(model.predict(list(files.values()), top_k=9), files.values()):
        assert top.image == str(path) and len(top) == len(CLASS_NAMES)
        np.testing.assert_allclose(by_class(top), cli[str(path)], atol=1e-6)
        np.testing.assert_allclose(by_class(top), onnx[str(path)], atol=1e-5)
        assert top.probabilities == sorted(top.probabilities, reverse=True)
    # the same PNG in memory, in every form
    pixels = np.array(Image.open(png).convert("RGB"))
    chw = torch.from_numpy(pixels).permute(2, 0, 1)
    forms = [str(png), png, Image.open(png), pixels, chw, Image.open(files["grey.png"])]
    forms += [np.asarray(Image.open(files["grey.png"]))]
    results = model.predict(forms, top_k=9)
    expected = [cli[str(png)]] * 5 + [cli[str(files["grey.png"])]] * 2
    for top, probs in zip(results, expected):
        np.testing.assert_allclose(by_class(top), probs, atol=1e-6)
    assert [t.image for t in results] == [str(png), str(png)] + [f"image {i}" for i in range(2, 7)]
    # a batch: (N, H, W, 3) arrays and (N, 3, H, W) tensors are N images
    for batch in (np.stack([pixels, pixels]), torch.stack([chw, chw])):
        got = [by_class(t) for t in model.predict(batch, top_k=9)]
        np.testing.assert_allclose(got, [by_class(results[3])] * 2, atol=1e-6)
    # RGBA: alpha dropped, as decoding files does
    rgba = np.concatenate([pixels, np.full(pixels.shape[:2] + (1,), 7, np.uint8)], axis=2)
    got = by_class(model.predict(rgba, top_k=9)[0])
    np.testing.assert_allclose(got, by_class(results[3]), atol=1e-6)
    # independent of fgvc's code: the network's own logits on the hand-made input, flip TTA
    _, expected_tta = hand_tta(bundle, png)
    assert model.preprocessing.tta
    np.testing.assert_allclose(by_class(results[3]), expected_tta, atol=1e-5)


def test_top_k_and_tta_as_asked(setup):
    bundle, _, _, files = setup
    model = fgvc.load(bundle)
    png = files["a.png"]
    (one,) = model.predict(png, top_k=2)  # one image: still a list
    assert len(one) == 2 and one.names == [name for name, _ in one]
    plain = model.predict(png, top_k=3, tta=False)[0]
    expected_plain, _ = hand_tta(bundle, png)
    np.testing.assert_allclose(by_class(plain), expected_plain, atol=1e-5)
    np.testing.assert_allclose(
        by_class(plain), cli_probabilities([png], bundle, "--no-tta")[str(png)], atol=1e-5
    )
    everything = model.predict(png, top_k=100)[0]
    assert sorted(everything.names) == sorted(CLASS_NAMES)
    assert sum(everything.probabilities) == pytest.approx(1, abs=1e-5)
    # many images across batches and threads: each its own result, in order
    many = [files["a.png"], files["b.png"]] * 5
    results = model.predict(many, top_k=3, batch_size=3, workers=2)
    assert [t.image for t in results] == [str(p) for p in many]
    np.testing.assert_allclose([by_class(t) for t in results[::2]], [by_class(results[0])] * 5)
    assert pickle.loads(pickle.dumps(one)) == one and pickle.loads(pickle.dumps(one)).image


def test_bundle_checkpoint_and_run_folder_give_the_same_predictions(setup):
    bundle, ckpt, run, files = setup
    images = [files["a.png"], files["c.jpg"]]
    reference = [by_class(t) for t in fgvc.load(bundle).predict(images, top_k=9)]
    for source in (ckpt, run, str(run)):
        model = fgvc.load(source)
        assert model.classes == CLASS_NAMES and model.backend == "torch"
        np.testing.assert_allclose(
            [by_class(t) for t in model.predict(images, top_k=9)], reference, atol=1e-6
        )
    onnx = fgvc.load(bundle, backend="onnx")
    assert onnx.backend == "onnx"
    np.testing.assert_allclose(
        [by_class(t) for t in onnx.predict(images, top_k=9)], reference, atol=1e-5
    )
    # the ONNX model's PyTorch network (for Grad-CAM) is the bundle's
    assert isinstance(onnx.net, torch.nn.Module) and not onnx.net.training
    assert fgvc.load(run).preprocessing == fgvc.load(bundle).preprocessing


def test_bad_images_are_one_line_naming_them(setup, tmp_path):
    bundle, _, _, files = setup
    model = fgvc.load(bundle)
    good = np.zeros((40, 40, 3), np.uint8)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    cases = [
        (good.astype(np.float32), "image 1: float32 pixels; give uint8"),
        (torch.rand(3, 40, 40), "image 1: a float32 tensor; predict takes uint8"),
        (torch.zeros(5, 40, 40, dtype=torch.uint8), "image 1: a tensor of shape (5, 40, 40)"),
        (np.zeros((40, 40, 2), np.uint8), "image 1: array of shape (40, 40, 2) is not an image"),
        (np.zeros((2, 100, 3), np.uint8), "image 1: 100x2 image, its long side more than"),
        (42, "image 1: int is not an image"),
        (tmp_path / "missing.png", f"{tmp_path / 'missing.png'}: cannot read image"),
        (broken, f"{broken}: cannot decode image"),
    ]
    for bad, message in cases:
        with pytest.raises(ImageDecodeError) as caught:
            model.predict([good, bad])
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
        skipped = model.predict([good, bad, good], on_error="skip")
        assert [len(t) > 0 for t in skipped] == [True, False, True]
        assert skipped[1].error.startswith(message) and skipped[0].error is None
    for call, message in [
        (lambda: model.predict([]), "no image given"),
        (lambda: model.predict(None), "a NoneType is not an image"),
        (lambda: model.predict(good, top_k=0), "top_k, batch_size and workers must be >= 1"),
        (lambda: model.predict(good, on_error="ignore"), "on_error='ignore'"),
        (lambda: model.explain(good, target="Nonesuch"), "target 'Nonesuch' is not a class"),
        (lambda: model.explain([good, good], target=[0]), "1 target classes for 2 images"),
    ]:
        with pytest.raises(UsageError, match=message.replace("(", r"\(")):
            call()


def test_a_folder_is_its_image_files_as_in_fgvc_predict(setup, tmp_path):
    bundle, _, _, files = setup
    model = fgvc.load(bundle)
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "b.png").write_bytes(files["b.png"].read_bytes())
    (folder / "a.png").write_bytes(files["a.png"].read_bytes())
    (folder / "notes.txt").write_text("not an image")
    (folder / "link").symlink_to(folder / "sub")  # a folder link: not followed, reported
    results = model.predict([folder, files["c.jpg"]], top_k=9, on_error="skip")
    cli = cli_probabilities([folder / "a.png", folder / "sub" / "b.png"], bundle)
    assert [Path(t.image).name for t in results] == ["a.png", "b.png", "link", "c.jpg"]
    for top in results[:2]:
        np.testing.assert_allclose(by_class(top), cli[top.image], atol=1e-5)
    assert "link" in results[2].error and not results[2] and results[3].error is None
    with pytest.raises(ImageDecodeError, match="link"):
        model.predict(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no image given"):
        model.predict(tmp_path / "empty")


def test_explain_returns_the_maps_explain_images_computes(setup, tmp_path):
    bundle, _, _, files = setup
    model = fgvc.load(bundle)
    png = files["a.png"]
    (reference,), _ = explain_images(load_bundle(bundle), [png], progress=False)
    pixels = np.asarray(Image.open(png).convert("RGB"))
    out = tmp_path / "maps"
    maps = model.explain([png, pixels], out=out)
    for explanation in maps:
        np.testing.assert_allclose(explanation.cam, reference.cam, atol=1e-5)
        np.testing.assert_array_equal(explanation.crop, reference.crop)
        assert explanation.class_name == reference.class_name
        assert explanation.probability == pytest.approx(reference.probability, abs=1e-6)
        assert explanation.overlay().shape == reference.crop.shape
    assert [e.position for e in maps] == [0, 1]
    written = json.loads((out / "explanations.json").read_text())
    assert [e["file"] for e in written["images"]] == ["001-a.png", "002-image_1.png"]
    assert (out / "contact_sheet.png").is_file() and (out / "001-a.png").is_file()
    # a chosen class by name; skipped images keep the others' positions
    chosen = model.explain([tmp_path / "missing.png", png], target=CLASS_NAMES[2], on_error="skip")
    assert [(e.position, e.class_name) for e in chosen] == [(1, CLASS_NAMES[2])]
    with pytest.raises(UsageError, match="not empty|non-empty|--force"):
        model.explain(png, out=out)  # nothing the user had is overwritten


def test_device_and_network(setup):
    bundle, _, _, _ = setup
    model = fgvc.load(bundle, device="cpu")
    assert isinstance(model, Classifier) and model.to("cpu") is model
    assert model.device == torch.device("cpu") and next(model.net.parameters()).device.type == "cpu"
    batch = model.preprocessing.batch([torch.zeros(3, 32, 32, dtype=torch.uint8)])
    with torch.no_grad():
        np.testing.assert_allclose(model.logits(batch), model.net(batch), atol=1e-6)
    assert "3 classes" in repr(model)


def test_import_fgvc_stays_light():
    code = "import sys, fgvc; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    from fgvc import load
    from fgvc.deploy.classifier import load as real

    assert load is real and fgvc.load is real and "load" in fgvc.__all__
    with pytest.raises(AttributeError, match="no attribute 'lod'"):
        fgvc.lod  # noqa: B018
