"""fgvc explain: files written, agreement with fgvc predict, the maps against Grad-CAM's
definition and the trunk's geometry, --class, --force, unreadable images, usage errors."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from fgvc.commands.explain import main as explain_main
from fgvc.commands.main import main as fgvc_main
from fgvc.commands.predict import main as predict_main
from fgvc.deploy.bundle import load
from fgvc.deploy.explain import Explanation, cell_centres, explain_crops, explain_images
from fgvc.deploy.export import export_checkpoint
from fgvc.deploy.overlays import (
    CONTACT_SHEET,
    SUMMARY,
    contact_sheet,
    explain_bundle,
    overlay_names,
)
from fgvc.errors import FgvcError
from fgvc.models import NetSpec, build_model
from tests.tiny import CLASS_NAMES, IMAGE_SIZE


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_run):
    """(bundle folder, checkpoint, image folder) for a tiny trained model."""
    root = tmp_path_factory.mktemp("explain")
    _, _, ckpt, _ = tiny_run
    bundle = export_checkpoint(ckpt, root / "bundle", formats=["safetensors"])
    folder = root / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (50, 36, 3), dtype=np.uint8)).save(
        folder / "sub" / "b café.JPG", quality=95
    )
    return bundle, ckpt, folder


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = explain_main([*argv, "--no-progress"], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def predictions(images: list[str], model: Path) -> dict[str, list[dict]]:
    """fgvc predict's JSON top-3 (every class) by image."""
    out, err = io.StringIO(), io.StringIO()
    argv = [*images, "--model", str(model), "--topk", "3", "--format", "json", "--no-progress"]
    assert predict_main(argv, stdout=out, stderr=err) == 0, err.getvalue()
    return {p["image"]: p["top"] for p in json.loads(out.getvalue())["predictions"]}


def summary(out: Path) -> dict:
    return json.loads((out / SUMMARY).read_text(encoding="utf-8"))


@pytest.mark.parametrize("model", ["bundle", "ckpt"])
def test_outputs_agree_with_predict(setup, tmp_path, model):
    bundle, ckpt, folder = setup
    source = bundle if model == "bundle" else ckpt
    out = tmp_path / "out"
    code, stdout, err = run([str(folder), "--model", str(source), "-o", str(out)])
    assert code == 0, err
    names = ["001-a.png", "002-b_caf_.png"]  # folder order: a.png, sub/b café.JPG
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, CONTACT_SHEET, SUMMARY])
    document = summary(out)
    assert [e["file"] for e in document["images"]] == names and document["errors"] == []
    assert document["method"] == "gradcam" and document["target_layer"] == "backbone.layer4"
    truth = predictions([str(folder)], source)
    for entry in document["images"]:
        top = truth[entry["image"]][0]
        assert entry["class_index"] == entry["top1_index"] == top["class_index"]
        assert entry["class_name"] == top["class_name"] == CLASS_NAMES[top["class_index"]]
        assert entry["probability"] == pytest.approx(top["probability"], abs=1e-6)
        assert f"p={top['probability']:.3f}" in entry["caption"]
        assert f"{entry['file']}  {entry['class_name']}  p=" in stdout
    assert f"contact sheet: {out / CONTACT_SHEET}" in stdout

    # each PNG: the evaluation crop (enlarged to 192 px in blocks) beside its heat map
    crop = load(bundle).preprocessing.load(folder / "a.png").permute(1, 2, 0).numpy()
    picture = np.asarray(Image.open(out / names[0]).convert("RGB"))
    assert picture.shape[1] == 2 * 192 and picture.shape[0] > 192
    shown = cv2.resize(crop, (192, 192), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(picture[:192, :192], shown)
    assert not np.array_equal(picture[:192, 192:], shown)
    sheet = Image.open(out / CONTACT_SHEET)
    assert sheet.width == 2 * 224 and sheet.height > 224  # 2 tiles side by side


def hand_gradcam(net: torch.nn.Module, x: torch.Tensor, label: int) -> np.ndarray:
    """Grad-CAM by its definition (Selvaraju et al. 2017) at layer4: channels weighed by the
    spatial mean of the class logit's gradient, summed, ReLU, scaled to [0, 1]; then spread
    over the pixels bilinearly with cell j at pixel 16 j (np.interp, per axis)."""
    kept = {}

    def keep(module, inputs, output):
        output.retain_grad()
        kept["a"] = output

    handle = net.backbone.layer4.register_forward_hook(keep)
    try:
        net.zero_grad()
        net(x)[0, label].backward()
    finally:
        handle.remove()
    a, grad = kept["a"][0].detach(), kept["a"].grad[0]
    cam = torch.relu((grad.mean((1, 2))[:, None, None] * a).sum(0)).double().numpy()
    cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)
    pixels = np.arange(x.shape[-1])
    centres = 16.0 * np.arange(cam.shape[0])
    rows = np.stack([np.interp(pixels, centres, row) for row in cam])  # (h, S)
    return np.stack([np.interp(pixels, centres, col) for col in rows.T]).T  # (S, S)


def test_gradcam_is_its_definition_at_layer4(setup):
    bundle, _, folder = setup
    model = load(bundle)
    image = folder / "a.png"
    x = model.preprocessing.batch([model.preprocessing.load(image)])
    explanations, _ = explain_images(model, [image, image], target=[None, 2], progress=False)
    predicted, chosen = explanations
    assert chosen.class_index == 2 and chosen.top1_index == predicted.class_index
    for e in explanations:
        assert e.cam.shape == (IMAGE_SIZE, IMAGE_SIZE) and e.cam.max() == pytest.approx(1, 1e-5)
        np.testing.assert_allclose(e.cam, hand_gradcam(model.net, x, e.class_index), atol=1e-5)


def test_explain_crops_is_explain_images_of_the_prepared_images(setup):
    """What fgvc serve's /explain runs: crops already prepared, targets per image."""
    bundle, _, folder = setup
    model = load(bundle)
    images = [folder / "a.png", folder / "sub" / "b café.JPG"]
    crops = [model.preprocessing.load(p) for p in images]
    got = explain_crops(model, crops, ["a", "b"], target=[1, None])
    expected, _ = explain_images(model, images, target=[1, None], progress=False)
    for g, e, name in zip(got, expected, ["a", "b"]):
        assert g.image == name and g.class_index == e.class_index
        assert g.probability == pytest.approx(e.probability, abs=1e-6)
        np.testing.assert_array_equal(g.crop, e.crop)
        np.testing.assert_allclose(g.cam, e.cam, atol=1e-6)
    assert got[0].class_index == 1
    assert explain_crops(model, [], []) == []


def test_cell_centres_are_where_cells_look():
    """A trunk with box kernels answers a dot symmetrically about a cell's true centre: cell
    8 of a 256 px input looks at pixel 16 * 8 = 128, not at 136 (a plain resize's centre)."""
    trunk = build_model(
        NetSpec("resnet18", 3, "isqrt", 8, {"iterations": 3}, last_stride=1)
    ).backbone.eval()
    stride, offset = cell_centres(trunk)
    assert (stride, offset) == (16, 0.0)
    assert cell_centres(build_model(NetSpec("resnet50", 3, "gap", last_stride=2)).backbone) == (
        32,
        0.0,
    )
    with torch.no_grad():
        for m in trunk.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.reset_parameters()
        dots = []
        for column in (125, 131, 122, 134, 133, 139):  # 128 -+ 3, 128 -+ 6, 136 -+ 3
            image = torch.zeros(3, 256, 256)
            image[:, 128, column] = 1.0
            dots.append(image)
        response = trunk(torch.stack(dots))[:, :, 8, 8].sum(1).double().tolist()
    assert min(response) > 0
    assert response[0] == pytest.approx(response[1], rel=1e-4)
    assert response[2] == pytest.approx(response[3], rel=1e-4)
    assert abs(response[4] / response[5] - 1) > 0.05


def test_covariance_head_cancels_gradcam_weights():
    """Why layer4: at the head's reduced features the class score's gradient sums to zero
    over the positions (centred covariance), so Grad-CAM's channel weights vanish there."""
    torch.manual_seed(0)
    net = build_model(NetSpec("resnet18", 3, "isqrt", 8, {"iterations": 3})).eval()
    kept = {}

    def keep(name):
        def hook(module, inputs, output):
            output.retain_grad()
            kept[name] = output

        return hook

    handles = [net.head.relu.register_forward_hook(keep("head"))]
    handles.append(net.backbone.layer4.register_forward_hook(keep("layer4")))
    net(torch.randn(2, 3, 64, 64))[:, 1].sum().backward()
    for handle in handles:
        handle.remove()
    ratio = {
        k: (v.grad.mean((2, 3)).abs().mean() / v.grad.abs().mean()).item() for k, v in kept.items()
    }
    assert ratio["head"] < 1e-5
    assert ratio["layer4"] > 1e-2


@pytest.mark.parametrize("method", ["gradcam++", pytest.param("scorecam", marks=pytest.mark.slow)])
def test_other_methods(setup, capfd, method):
    bundle, _, folder = setup
    model = load(bundle)
    images = [folder / "a.png", folder / "sub" / "b café.JPG"]
    plain, _ = explain_images(model, images, progress=False)
    capfd.readouterr()
    other, errors = explain_images(model, images, method=method, progress=False)
    assert not errors and capfd.readouterr().err == ""  # the library's own bars stay quiet
    for a, b in zip(plain, other):
        assert b.method == method and b.class_index == a.class_index
        assert b.probability == a.probability
        assert b.cam.shape == a.cam.shape and 0 <= b.cam.min() and b.cam.max() <= 1 + 1e-6
        assert not np.allclose(a.cam, b.cam)


def test_class_option(setup, tmp_path):
    bundle, _, folder = setup
    image = str(folder / "a.png")
    truth = {e["class_index"]: e for e in predictions([image], bundle)[image]}
    top1 = max(truth.values(), key=lambda e: e["probability"])
    other = next(i for i in truth if i != top1["class_index"])
    for i, value in enumerate([CLASS_NAMES[other], str(other)]):
        out = tmp_path / f"out{i}"
        assert run([image, "--model", str(bundle), "-o", str(out), "--class", value])[0] == 0
        (entry,) = summary(out)["images"]
        assert entry["class_index"] == other and entry["class_name"] == CLASS_NAMES[other]
        assert entry["probability"] == pytest.approx(truth[other]["probability"], abs=1e-6)
        assert entry["top1_index"] == top1["class_index"]
        assert entry["top1_probability"] == pytest.approx(top1["probability"], abs=1e-6)
        assert "top-1: " in entry["caption"]
    for value in ("no such bird", "3", "-1"):
        out = tmp_path / "refused"
        code, _, err = run([image, "--model", str(bundle), "-o", str(out), "--class", value])
        assert code == 2 and not out.exists()
        assert err.count("\n") == 1 and f"--class {value!r} is not a class" in err


def test_refuses_non_empty_out_without_force(setup, tmp_path):
    bundle, _, folder = setup
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "001-a.png").write_bytes(b"old")
    argv = [str(folder / "a.png"), "--model", str(bundle), "-o", str(out)]
    code, _, err = run(argv)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("fgvc explain: error: --out") and "--force" in err
    assert sorted(p.name for p in out.iterdir()) == ["001-a.png", "keep.txt"]
    assert (out / "001-a.png").read_bytes() == b"old"
    assert run([*argv, "--force"])[0] == 0
    assert (out / "keep.txt").read_text() == "mine"
    assert Image.open(out / "001-a.png").format == "PNG"
    assert (out / CONTACT_SHEET).is_file() and (out / SUMMARY).is_file()


def test_unreadable_images_are_skipped(setup, tmp_path):
    bundle, _, folder = setup
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.png").write_bytes((folder / "a.png").read_bytes())
    (mixed / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    missing = tmp_path / "missing.png"
    out = tmp_path / "out"
    code, _, err = run([str(mixed), str(missing), "--model", str(bundle), "-o", str(out)])
    assert code == 1
    lines = err.splitlines()
    assert any("skipped" in line and str(mixed / "broken.jpg") in line for line in lines)
    assert any("skipped" in line and str(missing) in line for line in lines)
    assert lines[-1] == (
        "fgvc explain: error: 2 of 3 images could not be read (listed above); 1 explained"
    )
    document = summary(out)
    assert [e["file"] for e in document["images"]] == ["001-a.png"]
    assert {Path(e["image"]).name for e in document["errors"]} == {"broken.jpg", "missing.png"}
    # nothing readable: nothing written
    out = tmp_path / "none"
    code, _, err = run([str(mixed / "broken.jpg"), "--model", str(bundle), "-o", str(out)])
    assert code == 1 and not out.exists()
    assert err.splitlines()[-1].startswith("fgvc explain: error: none of the 1 images")


def test_usage_errors(setup, tmp_path):
    bundle, _, folder = setup
    image = str(folder / "a.png")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    out = str(tmp_path / "out")
    cases = [
        [image, "--model", str(bundle)],  # no --out
        [image, "--model", str(bundle), "-o", out, "--method", "lime"],
        [image, "--model", str(bundle), "-o", out, "--batch-size", "0"],
        [str(tmp_path / "nothing.png"), "--model", str(bundle), "-o", out],
        [image, "--model", str(tmp_path / "no-model"), "-o", out],
        [image, "--model", str(bundle), "-o", str(a_file)],
    ]
    for argv in cases:
        code, stdout, err = run(argv)
        assert code == 2, (argv, err)
        assert err.count("\n") == 1 and err.startswith("fgvc explain: error: "), err
        assert stdout == "" and not Path(out).exists()


def test_explain_bundle_for_the_end_of_fit(setup, tmp_path):
    bundle, _, folder = setup
    images = [folder / "a.png", tmp_path / "gone.png", folder / "sub" / "b café.JPG"]
    out = tmp_path / "run" / "version_0" / "explain"
    written = explain_bundle(bundle, images, out, device="cpu")
    assert written.folder == out and written.contact_sheet == out / CONTACT_SHEET
    assert [p.name for p in written.overlays] == ["001-a.png", "003-b_caf_.png"]
    assert all(p.is_file() for p in [*written.overlays, written.contact_sheet, written.summary])
    assert [Path(e.image).name for e in written.explanations] == ["a.png", "b café.JPG"]
    assert [p.name for p, _ in written.errors] == ["gone.png"]
    caption = written.explanations[0].caption
    assert caption.startswith(written.explanations[0].class_name) and "a.png" in caption
    with pytest.raises(FgvcError, match="none of the 1 images"):
        explain_bundle(bundle, [tmp_path / "gone.png"], tmp_path / "empty")
    assert not (tmp_path / "empty").exists()


def test_registered_command(capsys):
    assert fgvc_main(["--help"]) == 0
    assert "explain" in capsys.readouterr().out
    assert fgvc_main(["explain", "--help"]) == 0
    assert "--class" in capsys.readouterr().out


def test_captions_overlay_and_sheet_layout():
    crop = np.zeros((32, 32, 3), np.uint8)
    cam = np.zeros((32, 32), np.float32)
    cam[:16, :16] = 1
    e = Explanation("a/x\ny.png", crop, cam, 1, "line\nbreak", 0.25, 0, "=top", 0.5, "gradcam")
    assert e.caption_lines == ["line\\nbreak  p=0.250", "top-1: =top  p=0.500", "x\\ny.png"]
    empty = dataclasses.replace(e, cam=np.zeros_like(cam), class_index=0, position=1)
    assert empty.caption_lines[1] == "gradcam: no positive evidence"
    overlay = e.overlay()  # JET: red where the map is 1, blue where it is 0
    assert overlay[4, 4, 0] > 200 > overlay[4, 4, 2]
    assert overlay[28, 28, 2] > 200 > overlay[28, 28, 0]
    sheet = contact_sheet([e, e, empty], tile=100)
    assert sheet.width == 200 and sheet.height > 200  # 2 columns, 2 rows
    assert overlay_names([e, empty]) == ["001-x_y.png", "002-x_y.png"]
