"""fgvc export: bundle contents, verification against PyTorch, atomic writing, loading.

The checkpoint comes from the ``tiny_run`` fixture: a real (one-step) ``pl.Trainer.fit`` of
FGVCClassifier with a ModelCheckpoint callback and a DataModule that saves its
hyperparameters, so it has the structure ``fgvc fit`` writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file

import fgvc
import fgvc.deploy.formats.onnx_fp32 as onnx_fp32
import fgvc.deploy.verify as verify
from fgvc.commands.export import main as export_main
from fgvc.deploy.bundle import read_config, summary
from fgvc.deploy.export import export_checkpoint
from fgvc.deploy.formats import EXPORT_BATCH
from fgvc.errors import CheckpointError, ExportError, UsageError
from fgvc.export import load
from fgvc.runs import model_checkpoint_state
from tests.tiny import CLASS_NAMES, IMAGE_SIZE, make_two_epoch_run


@pytest.fixture(scope="module")
def bundle(tiny_run):
    """Exported through the CLI: --model best under --runs-root, default --out <run>/export."""
    root, _, _, run = tiny_run
    code = export_main(["--model", "best", "--runs-root", str(root / "runs")])
    assert code == 0
    return run / "export"


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_lightning_checkpoint_reads_with_weights_only(tiny_run):
    _, _, ckpt, _ = tiny_run
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["class_names"] == CLASS_NAMES
    assert checkpoint["datamodule_hyper_parameters"]["image_size"] == IMAGE_SIZE
    state = model_checkpoint_state(checkpoint)
    assert state["monitor"] == "val/top1" and Path(state["best_model_path"]) == ckpt


def test_bundle_files_and_weights_round_trip(tiny_run, bundle):
    _, module, _, _ = tiny_run
    assert listing(bundle) == {"model.json", "model.safetensors", "model.onnx"}
    saved = load_file(str(bundle / "model.safetensors"))
    own = module.model.state_dict()
    assert set(saved) == set(own)
    for key, value in own.items():
        assert torch.equal(saved[key], value), key


def test_model_json_describes_model_preprocessing_and_checkpoint(tiny_run, bundle):
    _, _, ckpt, _ = tiny_run
    config = json.loads((bundle / "model.json").read_text(encoding="utf-8"))
    assert config["fgvc_version"] == fgvc.__version__
    net = config["net"]
    assert (net["arch"], net["representation"], net["last_stride"]) == ("resnet18", "isqrt", 1)
    assert (net["reduce_dim"], net["head"], net["num_classes"]) == (8, {"iterations": 3}, 3)
    assert config["class_names"] == CLASS_NAMES
    prep = config["preprocessing"]
    assert (prep["image_size"], prep["preset"], prep["tta"]) == (IMAGE_SIZE, "cub", True)
    assert prep["resize"] == "resize short side to 32, center crop 32x32"
    assert prep["mean"] == [0.485, 0.456, 0.406] and prep["std"] == [0.229, 0.224, 0.225]
    expected = torch.load(ckpt, map_location="cpu", weights_only=True)
    state = model_checkpoint_state(expected)
    meta = config["checkpoint"]
    assert meta["file"] == ckpt.name and meta["epoch"] == expected["epoch"] == 0
    assert meta["monitor"] == "val/top1"
    assert meta["score"] == pytest.approx(float(state["best_model_score"]))
    verified = config["onnx"]["verify"]
    assert verified["max_abs_logit_diff"] <= 1e-3 and verified["top1_identical"]
    assert len(verified["batch_sizes"]) == 2
    assert EXPORT_BATCH not in verified["batch_sizes"]


def test_load_gives_the_lightning_modules_logits(tiny_run, bundle):
    _, module, _, _ = tiny_run
    loaded = load(bundle)
    assert not loaded.net.training and loaded.class_names == CLASS_NAMES
    assert loaded.spec == module.spec and loaded.preprocessing.image_size == IMAGE_SIZE
    x = images(3)
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(x), module(x), rtol=0, atol=1e-6)


def test_onnx_dynamic_batch_matches_pytorch(tiny_run, bundle):
    _, module, _, _ = tiny_run
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "images" and not isinstance(inp.shape[0], int)
    for n in (3, 5):  # neither the export batch (2) nor the check batches (4, 1)
        x = images(n, seed=n)
        (out,) = session.run(["logits"], {"images": x.numpy()})
        with torch.no_grad():
            ref = module(x).numpy()
        assert np.abs(out - ref).max() <= 1e-3
        assert (out.argmax(1) == ref.argmax(1)).all()


@pytest.mark.parametrize("corruption", ["offset", "swap_top1"])
def test_onnx_mismatch_fails_and_writes_nothing(
    tiny_run, tmp_path, monkeypatch, capsys, corruption
):
    _, _, ckpt, _ = tiny_run
    real = onnx_fp32.onnx_logits

    def corrupted(path, batch):
        out = real(path, batch)
        if corruption == "offset":  # same top-1, one logit 0.01 off
            return out + np.array([0.0, 0.01, 0.0], dtype=out.dtype)
        return out[:, ::-1].copy()  # another class wins

    monkeypatch.setattr(onnx_fp32, "onnx_logits", corrupted)
    out = tmp_path / "nested" / "bundle"
    if corruption == "offset":
        with pytest.raises(ExportError, match=r"disagrees with PyTorch: max \|logit diff"):
            export_checkpoint(ckpt, out)
    else:
        assert export_main(["--model", str(ckpt), "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert "top-1 differs" in err and "nothing was written" in err
    assert list(tmp_path.iterdir()) == []  # no bundle, no temp folder, no parent created


def _always_fails(*args, **kwargs):
    raise ExportError("exported model disagrees with PyTorch: forced")


def test_existing_folder_kept_without_force_and_on_failure(tiny_run, tmp_path, monkeypatch):
    _, _, ckpt, _ = tiny_run
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "model.json").write_text("{}")
    with pytest.raises(UsageError, match="--force"):
        export_checkpoint(ckpt, out, formats=("safetensors",))
    assert export_main(["--model", str(ckpt), "--out", str(out)]) == 2
    monkeypatch.setattr(verify, "compare_logits", _always_fails)
    with pytest.raises(ExportError):
        export_checkpoint(ckpt, out, formats=("safetensors", "torchscript"), force=True)
    assert listing(tmp_path) == {"out"} and listing(out) == {"notes.txt", "model.json"}
    assert (out / "model.json").read_text() == "{}"
    monkeypatch.undo()
    export_checkpoint(ckpt, out, formats=("safetensors",), force=True)
    assert listing(out) == {"notes.txt", "model.json", "model.safetensors"}
    assert (out / "notes.txt").read_text() == "mine"
    assert read_config(out)["class_names"] == CLASS_NAMES
    assert listing(tmp_path) == {"out"}


def test_legacy_exporter_fallback(tiny_run, tmp_path, monkeypatch):
    _, module, ckpt, _ = tiny_run

    def broken(*args, **kwargs):
        raise RuntimeError("dynamo exporter unavailable")

    legacy = onnx_fp32.ONNX_EXPORTERS[1]
    monkeypatch.setattr(onnx_fp32, "ONNX_EXPORTERS", [("torch.export (dynamo)", broken), legacy])
    out = export_checkpoint(ckpt, tmp_path / "b", formats=("safetensors", "onnx"))
    config = read_config(out)
    assert config["onnx"]["exporter"] == "torchscript (legacy)"
    assert config["onnx"]["verify"]["max_abs_logit_diff"] <= 1e-3
    x = images(3, seed=7)
    with torch.no_grad():
        ref = module(x)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"images": x.numpy()})[0], ref.numpy(), atol=1e-3)


def test_not_an_fgvc_checkpoint(tmp_path):
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="fgvc fit"):
        export_checkpoint(path, tmp_path / "b")
    assert export_main(["--model", str(path), "--out", str(tmp_path / "b")]) == 2
    assert listing(tmp_path) == {"plain.ckpt"}


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """(best checkpoint, last checkpoint) of a run whose first epoch (val/top1 1) beats its
    last (val/top1 0), with ``test_tta: false``."""
    return make_two_epoch_run(tmp_path_factory.mktemp("two-epochs"))


@pytest.mark.parametrize("which, epoch, score", [("best", 0, 1.0), ("last", 1, None)])
def test_model_json_score_is_the_exported_checkpoints_own(
    two_epochs, tmp_path, which, epoch, score
):
    """``score`` is the monitored value of the exported weights, never the best epoch's
    passed off as theirs: ``last.ckpt`` (val/top1 0 in its epoch) records none."""
    best, last = two_epochs
    ckpt = best if which == "best" else last
    assert best.name == "best-epoch000-top1_1.0000.ckpt" and last.name == "last.ckpt"
    out = export_checkpoint(ckpt, tmp_path / "bundle", formats=("safetensors",))
    config = read_config(out)
    meta = config["checkpoint"]
    assert (meta["file"], meta["epoch"], meta["monitor"]) == (ckpt.name, epoch, "val/top1")
    assert meta["score"] == score
    assert meta["best_score"] == 1.0  # the run's best when they were saved
    assert config["preprocessing"]["tta"] is False  # the run's test_tta
    assert load(out).preprocessing.tta is False
    shown = "val/top1 1.0000" if score is not None else "val/top1 n/a"
    assert f"checkpoint: {ckpt.name}, epoch {epoch}, {shown}" in summary(out)


def test_ckpt_is_a_deprecated_alias_of_model(tiny_run, tmp_path, capsys):
    _, _, ckpt, _ = tiny_run
    out = tmp_path / "b"
    args = ["--out", str(out), "--formats", "safetensors"]
    assert export_main(["--ckpt", str(ckpt), *args]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "warning:" in line] == [
        f"fgvc export: warning: --ckpt is deprecated, use --model {ckpt}"
    ]
    assert read_config(out)["checkpoint"]["path"] == str(ckpt.resolve())
    assert export_main(["--model", str(ckpt), *args, "--force"]) == 0
    assert "warning:" not in capsys.readouterr().err
    assert export_main(["--model", str(ckpt), "--ckpt", str(ckpt), *args]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "not allowed with argument" in line


def test_unknown_format_and_a_bundle_as_model_are_one_line(tiny_run, bundle, tmp_path, capsys):
    _, _, ckpt, _ = tiny_run
    out = tmp_path / "b"
    assert (
        export_main(["--model", str(ckpt), "--out", str(out), "--formats", "onnx", "tflite"]) == 2
    )
    assert capsys.readouterr().err.splitlines() == [
        "fgvc export: error: unknown export format 'tflite'; known formats: "
        "safetensors, onnx, pt2, onnx-int8, torchscript"
    ]
    assert export_main(["--model", str(bundle), "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"fgvc export: error: --model {bundle} is an export folder; ")
    assert not out.exists()


def test_every_format_is_verified_and_recorded(all_formats_bundle):
    """Each format's model.json entry: its file, exporter facts and a passed verification."""
    from fgvc.deploy.formats import FORMATS

    config = read_config(all_formats_bundle)
    assert listing(all_formats_bundle) == {"model.json", *(f.file for f in FORMATS)}
    assert config["files"] == {f.key: f.file for f in FORMATS}
    for fmt in FORMATS:
        verified = config[fmt.key]["verify"]
        assert config[fmt.key]["file"] == fmt.file
        assert verified["top1_agreement"] >= fmt.min_top1 and verified["tolerance"] == fmt.tolerance
        if fmt.tolerance is not None:
            assert verified["max_abs_logit_diff"] <= fmt.tolerance and verified["top1_identical"]
    assert config["pt2"]["exporter"] == "torch.export"
    text = summary(all_formats_bundle)
    for fmt in FORMATS:
        assert f"  {fmt.key}: " in text and fmt.file in text


def test_a_pt2_that_disagrees_fails_and_writes_nothing(tiny_run, tmp_path, monkeypatch):
    """A format whose loaded model gives other logits than PyTorch's: the whole export fails
    (the pt2 file went through torch.export.save and load; its module is corrupted after)."""
    import fgvc.deploy.formats.pt2 as pt2

    _, _, ckpt, _ = tiny_run
    real = pt2.torch_runner

    def shifted(module, device):
        run = real(module, device)
        return lambda x: run(x) + 2e-4  # over pt2's 1e-4, under ONNX's 1e-3

    monkeypatch.setattr(pt2, "torch_runner", shifted)
    with pytest.raises(ExportError, match=r"pt2 model model.pt2 disagrees with PyTorch"):
        export_checkpoint(ckpt, tmp_path / "b", formats=("pt2",))
    assert list(tmp_path.iterdir()) == []
