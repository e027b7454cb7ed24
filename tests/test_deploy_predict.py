"""fgvc predict: folders with a corrupt image, CSV / JSON outputs, backends, flip TTA."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from fgvc.commands.predict import main as predict_main
from fgvc.data.io import load_rgb
from fgvc.data.preprocessing import EvalPreprocessing
from fgvc.data.transforms import PRESETS, build_transforms
from fgvc.deploy.export import export_checkpoint
from fgvc.deploy.predict import load_predictor, predict_files, top_k
from fgvc.export import load
from tests.tiny import CLASS_NAMES, IMAGE_SIZE


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_run):
    """(bundle folder, checkpoint, image folder) for a tiny trained model."""
    root = tmp_path_factory.mktemp("predict")
    _, _, ckpt, _ = tiny_run
    bundle = export_checkpoint(ckpt, root / "bundle")
    folder = root / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (50, 36, 3), dtype=np.uint8)).save(
        folder / "sub" / "b café.JPG", quality=95
    )
    half = rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE // 2, 3), dtype=np.uint8)
    symmetric = np.concatenate([half, half[:, ::-1]], axis=1)
    Image.fromarray(symmetric).save(folder / "sym.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return bundle, ckpt, folder


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = predict_main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def predict_json(argv: list[str]) -> dict:
    code, out, err = run([*argv, "--format", "json", "--no-progress"])
    assert code == 0, err
    return json.loads(out)


def probs_of(document: dict) -> dict[str, list[float]]:
    """Probabilities by image, indexed by class (needs --topk >= the number of classes)."""
    result = {}
    for pred in document["predictions"]:
        probs = [0.0] * len(CLASS_NAMES)
        for entry in pred["top"]:
            probs[entry["class_index"]] = entry["probability"]
        result[Path(pred["image"]).name] = probs
    return result


def test_folder_with_corrupt_image(setup, tmp_path):
    bundle, _, folder = setup
    target = tmp_path / "out.json"
    code, out, err = run(
        [str(folder), "--model", str(bundle), "--format", "json", "--results-file", str(target)]
    )
    assert code == 1 and out == ""
    skipped = [line for line in err.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and str(folder / "broken.jpg") in skipped[0]
    document = json.loads(target.read_text(encoding="utf-8"))
    names = [Path(p["image"]).name for p in document["predictions"]]
    assert names == ["a.png", "b café.JPG", "sym.png"]  # sorted, recursive; .txt ignored
    assert [Path(e["image"]).name for e in document["errors"]] == ["broken.jpg"]
    assert document["backend"] == "onnx"


def test_csv_and_json_carry_names_and_ordered_probabilities(setup):
    bundle, _, folder = setup
    images = [str(folder / "a.png"), str(folder / "sub" / "b café.JPG")]
    code, out, _ = run([*images, "--model", str(bundle), "--topk", "2", "--format", "csv"])
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["image"] for r in rows] == [images[0]] * 2 + [images[1]] * 2
    document = predict_json([*images, "--model", str(bundle), "--topk", "2"])
    assert document["topk"] == 2 and document["errors"] == []
    for pred, pair in zip(document["predictions"], (rows[:2], rows[2:])):
        probs = [e["probability"] for e in pred["top"]]
        assert [e["rank"] for e in pred["top"]] == [1, 2]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert all(CLASS_NAMES[e["class_index"]] == e["class_name"] for e in pred["top"])
        for entry, row in zip(pred["top"], pair):
            assert row["class_name"] == entry["class_name"]  # commas, quotes, unicode intact
            assert int(row["class_index"]) == entry["class_index"]
            assert float(row["probability"]) == pytest.approx(entry["probability"])
    # top-k beyond the classes: all of them, summing to 1
    everything = predict_json([images[0], "--model", str(bundle), "--topk", "10"])
    top = everything["predictions"][0]["top"]
    assert len(top) == 3 and sum(e["probability"] for e in top) == pytest.approx(1, abs=1e-5)
    assert {e["class_name"] for e in top} == set(CLASS_NAMES)
    code, table, _ = run([images[0], "--model", str(bundle), "--topk", "3"])
    assert code == 0 and all(name in table for name in CLASS_NAMES)


def test_backends_and_checkpoint_agree(setup):
    bundle, ckpt, folder = setup
    args = [str(folder / "a.png"), str(folder / "sym.png"), "--topk", "3"]
    onnx = predict_json([*args, "--model", str(bundle)])
    torch_ = predict_json([*args, "--model", str(bundle), "--backend", "torch"])
    from_ckpt = predict_json([*args, "--model", str(ckpt)])
    assert (onnx["backend"], torch_["backend"], from_ckpt["backend"]) == ("onnx", "torch", "torch")
    for other in (torch_, from_ckpt):
        for name, probs in probs_of(onnx).items():
            np.testing.assert_allclose(probs_of(other)[name], probs, atol=1e-5)


def hand_tta(bundle: Path, image: Path) -> tuple[np.ndarray, np.ndarray]:
    """Softmax of the plain logits and of the mean of image and mirror logits, by hand."""
    model = load(bundle).net
    transform = build_transforms("cub", train=False, image_size=IMAGE_SIZE)  # normalized
    x = transform(image=load_rgb(image))["image"][None]
    with torch.no_grad():
        plain = model(x)
        mirrored = model(torch.flip(x, dims=[3]))
    return plain.softmax(-1)[0].numpy(), ((plain + mirrored) / 2).softmax(-1)[0].numpy()


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_flip_tta(setup, backend):
    bundle, _, folder = setup
    args = [str(folder / "a.png"), str(folder / "sym.png"), "--model", str(bundle)]
    args += ["--topk", "3", "--backend", backend]
    plain = probs_of(predict_json([*args, "--no-tta"]))
    tta = probs_of(predict_json([*args, "--tta"]))
    assert probs_of(predict_json(args)) == tta  # the bundle's setting: the run's test_tta
    # a mirror-symmetric image: TTA changes nothing
    np.testing.assert_allclose(tta["sym.png"], plain["sym.png"], atol=1e-6)
    # otherwise: the softmax of the mean of both views' logits
    expected_plain, expected_tta = hand_tta(bundle, folder / "a.png")
    np.testing.assert_allclose(plain["a.png"], expected_plain, atol=1e-5)
    np.testing.assert_allclose(tta["a.png"], expected_tta, atol=1e-5)
    assert np.abs(expected_tta - expected_plain).max() > 1e-4  # the mirror does matter


def test_usage_errors_exit_2(setup, tmp_path):
    bundle, ckpt, folder = setup
    cases = [
        [str(tmp_path), "--model", str(bundle)],  # no image
        [str(folder), "--model", str(tmp_path / "nothing")],
        [str(folder), "--model", str(ckpt), "--backend", "onnx"],
        [str(folder), "--model", str(bundle), "--topk", "0"],
        [str(folder), "--model", str(bundle), "--results-file", str(tmp_path / "no" / "x.csv")],
        [str(folder), "--format", "xml"],
    ]
    for argv in cases:
        code, out, err = run(argv)
        assert code == 2 and out == "", argv
        assert "error" in err or "usage" in err, argv


def test_an_onnx_file_of_another_class_count_is_one_line(setup, tmp_path):
    bundle, _, folder = setup
    edited = tmp_path / "edited"
    shutil.copytree(bundle, edited)
    config = json.loads((edited / "model.json").read_text())
    config["net"]["num_classes"] = len(CLASS_NAMES) + 1  # model.onnx still gives 3 logits
    config["class_names"] = [*CLASS_NAMES, "Extra"]
    (edited / "model.json").write_text(json.dumps(config))
    for topk in ("5", "2"):  # a traceback in top-k; or, worse, names that are not the model's
        code, out, err = run([str(folder / "a.png"), "--model", str(edited), "--topk", topk])
        assert code == 2 and out == "", err
        assert err.splitlines() == [
            f"fgvc predict: error: {edited}: the model gives 3 outputs per image, but "
            f"model.json names 4 classes; export the checkpoint again (fgvc export) instead "
            f"of combining files of different bundles"
        ]


@pytest.mark.parametrize("fast_decode", [True, False])
def test_preprocessing_matches_the_datamodules_evaluation(tmp_path, fast_decode):
    """The preprocessing a bundle replays decodes and resizes large JPEGs exactly as
    validation did."""
    from fgvc.data import FolderDataModule
    from tests.replicas import pattern, write_jpeg

    for split in ("train", "val"):
        for k, name in enumerate(["a", "b"]):
            write_jpeg(tmp_path / split / name / "big.jpg", pattern(300, 400, 10 * k + len(split)))
    dm = FolderDataModule(
        str(tmp_path), image_size=IMAGE_SIZE, preset="cub", num_workers=0, fast_decode=fast_decode
    )
    dm.setup("fit")
    prep = dm.eval_preprocessing
    assert prep.fast_decode is fast_decode
    for index, (path, _) in enumerate(dm.val_set.samples):
        expected, _ = dm.val_set[index]
        assert torch.equal(prep.load(path), torch.as_tensor(expected)), path
    # the two decodes differ on these files, so the comparison above can tell them apart
    other = dataclasses.replace(prep, fast_decode=not fast_decode)
    path = dm.val_set.samples[0][0]
    assert not torch.equal(other.load(path), prep.load(path))


class KeepLogits(pl.Callback):
    """The logits each validation step returned (with flip TTA, as the run reports)."""

    def __init__(self) -> None:
        self.logits: list[torch.Tensor] = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_):
        self.logits.append(outputs["logits"].float())


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_bundle_predictions_equal_the_validation_step(tmp_path, preset):
    """Validate a network, export its checkpoint, predict the validation files from the
    bundle: every backend gives the validation step's probabilities."""
    from fgvc.data import FolderDataModule
    from fgvc.train.module import FGVCClassifier
    from tests.replicas import pattern, write_jpeg

    sizes = [(120, 90), (70, 130), (96, 96)]  # portrait, landscape, square; large enough
    for split in ("train", "val"):  # for reduced-scale decoding
        for label in ("a", "b"):
            for k, (h, w) in enumerate(sizes):
                write_jpeg(tmp_path / split / label / f"{k}.jpg", pattern(h, w, 7 * k + len(label)))
    dm = FolderDataModule(str(tmp_path), image_size=32, preset=preset, batch_size=4, num_workers=0)
    pl.seed_everything(0, verbose=False)
    module = FGVCClassifier("resnet18", 2, dm.classes, reduce_dim=8, head={"iterations": 3})
    keep = KeepLogits()
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=[keep],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.validate(module, datamodule=dm, verbose=False)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    bundle = export_checkpoint(tmp_path / "model.ckpt", tmp_path / "bundle")

    expected = torch.cat(keep.logits).softmax(-1)
    paths = [Path(p) for p, _ in dm.val_set.samples]
    for backend in ("onnx", "torch"):
        predictor = load_predictor(bundle, backend=backend, device="cpu")
        predictions, errors = predict_files(predictor, paths, topk=2, progress=False)
        assert errors == [] and [p.image for p in predictions] == [str(p) for p in paths]
        got = torch.zeros_like(expected)
        for row, pred in enumerate(predictions):
            for index, _, prob in pred.top:
                got[row, index] = prob
        torch.testing.assert_close(got, expected, rtol=0, atol=2e-5, msg=f"{preset} {backend}")


def test_top_k_pairs_each_class_with_its_own_probability():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.25, 0.15, 0.6]], dtype=torch.float64)
    names = ["a", "b", "c"]
    assert top_k(probs, 2, names) == [
        [(1, "b", 0.6), (2, "c", 0.3)],
        [(0, "a", 0.5), (2, "c", 0.3)],
        [(2, "c", 0.6), (0, "a", 0.25)],
    ]
    assert top_k(probs[:1], 1, names) == [[(1, "b", 0.6)]]
    assert [e[0] for e in top_k(probs[2:], 3, names)[0]] == [2, 0, 1]


@pytest.mark.parametrize("source", ["bundle-onnx", "bundle-torch", "checkpoint"])
def test_each_backend_gives_the_softmax_of_the_networks_logits(setup, tiny_run, source):
    """Against the trained LightningModule itself (not the bundle's network), in float64:
    the top-2 (of 3) classes, in order, each with its own probability."""
    bundle, ckpt, folder = setup
    _, module, _, _ = tiny_run
    model, backend = {
        "bundle-onnx": (bundle, "onnx"),
        "bundle-torch": (bundle, "torch"),
        "checkpoint": (ckpt, "torch"),
    }[source]
    predictor = load_predictor(model, backend=backend, device="cpu")
    assert predictor.backend == backend
    paths = [folder / "a.png", folder / "sub" / "b café.JPG", folder / "sym.png"]
    predictions, errors = predict_files(predictor, paths, topk=2, tta=False, progress=False)
    assert errors == [] and [p.image for p in predictions] == [str(p) for p in paths]

    prep = EvalPreprocessing(IMAGE_SIZE, "cub")  # what the tiny run's DataModule records
    with torch.no_grad():
        logits = module(prep.batch([prep.load(p) for p in paths])).double()
    expected = logits.exp() / logits.exp().sum(-1, keepdim=True)
    for pred, row in zip(predictions, expected):
        order = sorted(range(3), key=lambda c: -float(row[c]))[:2]
        assert [index for index, _, _ in pred.top] == order, pred
        assert [name for _, name, _ in pred.top] == [CLASS_NAMES[c] for c in order]
        for index, _, prob in pred.top:
            assert prob == pytest.approx(float(row[index]), abs=2e-6), (pred.image, index)
    gaps = expected.sort(-1).values.diff(dim=-1)
    assert gaps.min() > 1e-4  # distinct probabilities: a mix-up would show


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_the_library_default_tta_is_the_bundles_setting(setup, tmp_path, backend):
    """predict_files(tta=None) flips as the bundle's model.json says, whichever it says:
    the bundle as exported (the run's test_tta, on) and a copy with it turned off."""
    bundle, _, folder = setup
    off = tmp_path / "bundle-no-tta"
    shutil.copytree(bundle, off)
    meta = json.loads((off / "model.json").read_text(encoding="utf-8"))
    assert meta["preprocessing"]["tta"] is True  # the tiny run's test_tta
    meta["preprocessing"]["tta"] = False
    (off / "model.json").write_text(json.dumps(meta), encoding="utf-8")
    paths = [folder / "a.png", folder / "sub" / "b café.JPG"]

    def probs(predictor, tta):
        predictions, errors = predict_files(predictor, paths, topk=3, tta=tta, progress=False)
        assert errors == []
        return [[p for _, _, p in pred.top] for pred in predictions]

    for source, setting in ((bundle, True), (off, False)):
        predictor = load_predictor(source, backend=backend, device="cpu")
        assert predictor.preprocessing.tta is setting
        assert probs(predictor, None) == probs(predictor, setting), source
        assert probs(predictor, None) != probs(predictor, not setting)  # the flip matters


def layout(source: Path, folder: Path, keep: set[str]) -> Path:
    """A copy of the bundle ``source`` with only the format keys ``keep`` (files and
    model.json entries): the layouts of older exports and of partial ones."""
    shutil.copytree(source, folder)
    config = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    for key, name in list(config["files"].items()):
        if key not in keep:
            (folder / name).unlink()
            del config["files"][key]
            config.pop(key, None)
    (folder / "model.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def _probs(argv: list[str]) -> tuple[str, dict[str, list[float]], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        document = predict_json(argv)
    deprecations = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    return document["backend"], probs_of(document), deprecations


@pytest.mark.parametrize(
    "keep, backend, expected",
    [
        ({"weights", "pt2"}, "auto", "pt2"),  # fgvc export --formats pt2
        ({"pt2"}, "auto", "pt2"),  # no weights at all: the pt2 alone
        ({"weights"}, "auto", "torch"),  # no optional format
        ({"weights", "torchscript"}, "auto", "torch"),  # the old TorchScript layout
        ({"weights", "torchscript"}, "torchscript", "torchscript"),
        ({"torchscript"}, "auto", "torchscript"),  # nothing else to run
        ({"weights", "onnx-int8"}, "auto", "torch"),  # int8 only when asked for
        ({"weights", "onnx-int8"}, "onnx-int8", "onnx-int8"),
        ({"weights", "onnx", "pt2"}, "pt2", "pt2"),
    ],
)
def test_bundle_layouts_predict(setup, all_formats_bundle, tmp_path, keep, backend, expected):
    """fgvc predict on bundles holding some of the formats: auto picks ONNX, then pt2, then
    the weights; TorchScript's deprecation warning only where TorchScript runs."""
    reference, _, folder = setup
    bundle = layout(all_formats_bundle, tmp_path / "bundle", keep)
    args = [str(folder / "a.png"), str(folder / "sym.png"), "--topk", "3"]
    _, truth, _ = _probs([*args, "--model", str(reference), "--backend", "torch"])
    got_backend, got, deprecations = _probs([*args, "--model", str(bundle), "--backend", backend])
    assert got_backend == expected
    assert bool(deprecations) == (expected == "torchscript"), deprecations
    atol = 2e-2 if expected == "onnx-int8" else 1e-5
    for name, probs in truth.items():
        np.testing.assert_allclose(got[name], probs, atol=atol)
        assert np.argmax(got[name]) == np.argmax(probs)


def test_a_format_the_bundle_lacks_is_one_line(setup, all_formats_bundle, tmp_path):
    _, ckpt, folder = setup
    bundle = layout(all_formats_bundle, tmp_path / "bundle", {"weights", "onnx"})
    for backend in ("pt2", "torchscript"):
        code, out, err = run([str(folder / "a.png"), "--model", str(bundle), "--backend", backend])
        assert code == 2 and out == ""
        file = {"pt2": "model.pt2", "torchscript": "model.torchscript.pt"}[backend]
        assert err.splitlines() == [
            f"fgvc predict: error: {bundle} has no {file} ({backend}); export it with fgvc "
            f"export --formats {backend}, or use --backend auto"
        ]
    code, _, err = run([str(folder / "a.png"), "--model", str(ckpt), "--backend", "pt2"])
    assert code == 2 and "checkpoints run with --backend torch" in err
    assert len(err.splitlines()) == 1
