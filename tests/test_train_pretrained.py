"""fgvc.train.pretrained: ``model.pretrained`` naming a run folder, an export bundle or its
weights file, resolved to the file ``fgvc export`` / ``fgvc.load`` would take; and the round
trip of the issue: a tiny ImageNet run of configs/imagenet_isqrt_r50.yaml fine-tuned with
configs/cub.yaml from its run folder and from its export."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch

from fgvc.commands.main import main
from fgvc.errors import CheckpointError
from fgvc.models import NetSpec, PretrainedFile
from fgvc.train.module import FGVCClassifier
from fgvc.train.pretrained import resolve_pretrained
from tests.replicas import make_cub
from tests.test_commands_train import REPO, workdir  # noqa: F401 - the fixture
from tests.test_data_datasets_imagenet import WNIDS, make_imagenet
from tests.tiny import CLASS_NAMES

# ---------------------------------------------------------------------------------------------
# resolution rules


def test_a_run_folder_gives_its_best_checkpoint(tiny_run):
    _, module, best, run = tiny_run  # best: what its ModelCheckpoint called best
    assert (run / "checkpoints" / "last.ckpt").is_file()  # newer, and not the one taken
    for given in (run, run.parent):  # a folder of runs means its newest run
        resolved = resolve_pretrained(str(given))
        assert isinstance(resolved, PretrainedFile)
        assert resolved.path == best and resolved.spec == module.spec
        assert (resolved.source, resolved.given) == ("run", str(given))
        assert str(run) in resolved.found


def test_a_fit_checkpoint_file_carries_its_network(tiny_run):
    _, module, best, _ = tiny_run
    resolved = resolve_pretrained(str(best))
    assert (resolved.path, resolved.spec, resolved.source) == (best, module.spec, "checkpoint")


def test_an_export_folder_and_its_weights_file(all_formats_bundle):
    bundle = all_formats_bundle  # every format: the weights must be told from model.onnx etc.
    recorded = NetSpec.from_mapping(json.loads((bundle / "model.json").read_text())["net"])
    resolved = resolve_pretrained(str(bundle))
    assert resolved.path == bundle / "model.safetensors" and resolved.spec == recorded
    assert (resolved.source, resolved.given) == ("export", str(bundle))
    direct = resolve_pretrained(str(bundle / "model.safetensors"))
    assert (direct.path, direct.spec, direct.given) == (resolved.path, recorded, None)
    assert resolve_pretrained(str(bundle / "model.onnx")) == str(bundle / "model.onnx")


def test_other_sources_pass_unchanged(tmp_path):
    plain = tmp_path / "weights.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, plain)
    foreign = tmp_path / "other-trainer.ckpt"  # a Lightning file of another program
    torch.save({"state_dict": {"net.weight": torch.zeros(1)}}, foreign)
    sources = [None, "imagenet", "imagenet:IMAGENET1K_V2", "isqrt-imagenet", str(plain)]
    sources += [str(foreign), str(tmp_path / "missing.pth"), plain]
    for source in sources:
        assert resolve_pretrained(source) is source


def _one_line_error(source) -> str:
    with pytest.raises(CheckpointError) as info:
        resolve_pretrained(str(source))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"model.pretrained {source}: ")
    return message


def test_folders_without_weights_are_one_line(tmp_path, all_formats_bundle):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no checkpoint found under" in _one_line_error(empty)
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    shutil.copy(all_formats_bundle / "model.json", incomplete)
    assert "has no weights file model.safetensors" in _one_line_error(incomplete)
    ambiguous = tmp_path / "ambiguous" / "checkpoints"
    ambiguous.mkdir(parents=True)
    for name in ("best-a.ckpt", "best-b.ckpt"):  # and no ModelCheckpoint state names either
        torch.save({"state_dict": {}}, ambiguous / name)
    assert "cannot tell the best checkpoint" in _one_line_error(ambiguous.parent)


# ---------------------------------------------------------------------------------------------
# what FGVCClassifier loads from them


def _fit_run(root: Path, module: FGVCClassifier) -> Path:
    """A run folder holding ``module`` as ``fgvc fit`` saves it (hyperparameters, ``model.``)."""
    run = root / "runs" / "pre" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    state = {f"model.{k}": v for k, v in module.model.state_dict().items()}
    ckpt = {"hyper_parameters": dict(module.hparams), "state_dict": state, "epoch": 0}
    torch.save(ckpt, run / "checkpoints" / "best-epoch000.ckpt")
    return run


def _gap_imagenet_module() -> FGVCClassifier:
    torch.manual_seed(0)
    module = FGVCClassifier(arch="resnet18", num_classes=4, representation="gap", reduce_dim=None)
    with torch.no_grad():  # trained-looking statistics, unlike a fresh network's
        for name, buf in module.model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
    return module


def test_a_gap_run_gives_an_isqrt_fine_tune_its_trunk_alone(tmp_path, caplog):
    gap = _gap_imagenet_module()
    run = _fit_run(tmp_path, gap)
    isqrt = {"arch": "resnet18", "num_classes": 3, "reduce_dim": 8}
    torch.manual_seed(5)
    fresh = FGVCClassifier(**isqrt).model.state_dict()
    torch.manual_seed(5)  # the same draws: head and classifier must be exactly these
    with caplog.at_level(logging.WARNING, logger="fgvc"):
        loaded = FGVCClassifier(**isqrt, pretrained=str(run)).model
    source = gap.model.state_dict()
    for key, value in loaded.state_dict().items():
        truth = source[key] if key.startswith("backbone.") else fresh[key]
        assert torch.equal(value, truth), key
    (line,) = [r.getMessage() for r in caplog.records if "trunk only" in r.getMessage()]
    assert "representation 'gap' (now 'isqrt')" in line
    record = loaded.pretrained_record.to_dict()
    assert record["loaded"] == "trunk" and record["given"] == str(run)


def test_a_classifier_for_other_classes_of_the_same_count_is_fresh(tiny_run):
    _, module, best, run = tiny_run
    truth = module.model.state_dict()
    spec = {"arch": "resnet18", "num_classes": 3, "reduce_dim": 8, "head": {"iterations": 3}}
    same = FGVCClassifier(**spec, class_names=CLASS_NAMES, pretrained=str(run)).model
    assert all(torch.equal(v, truth[k]) for k, v in same.state_dict().items())
    other = ["Laysan albatross", *CLASS_NAMES[1:]]  # one class is another bird
    with pytest.warns(UserWarning) as warned:
        net = FGVCClassifier(**spec, class_names=other, pretrained=str(run)).model
    (line,) = [str(w.message) for w in warned if "classifier" in str(w.message)]
    assert str(best) in line and "1 of 3 class names differ" in line
    assert "'Black-footed albatross' -> 'Laysan albatross'" in line
    for key, value in net.state_dict().items():
        if key.startswith("classifier."):
            assert not torch.equal(value, truth[key]), key
        else:
            assert torch.equal(value, truth[key]), key
    assert net.classifier.weight.abs().max() <= 1 / math.sqrt(net.classifier.in_features)
    assert net.pretrained_record.loaded == "all but the classifier"


@pytest.mark.parametrize("kind", ["run", "export"])
def test_another_trunk_is_refused_naming_both(tiny_run, all_formats_bundle, monkeypatch, kind):
    import fgvc.models.pretrained as pretrained

    def no_read(*args, **kwargs):
        raise AssertionError("a tensor was read")

    monkeypatch.setattr(pretrained, "read_checkpoint", no_read)
    source = tiny_run[3] if kind == "run" else all_formats_bundle
    with pytest.raises(CheckpointError) as info:
        FGVCClassifier(arch="resnet34", num_classes=3, reduce_dim=8, pretrained=str(source))
    message = str(info.value)
    assert "\n" not in message and str(source) in message
    assert "holds a resnet18 network" in message and "the config builds resnet34" in message


# ---------------------------------------------------------------------------------------------
# the round trip: ImageNet run -> its run folder / export -> fine-tune with a benchmark config

TINY = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.precision=32-true",
    "--trainer.max_epochs=1",
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--model.arch=resnet18",
    "--model.reduce_dim=8",
    "--data.init_args.image_size=32",
    "--data.init_args.batch_size=4",
    "--data.init_args.num_workers=0",
]


def _fine_tune(pretrained: Path, out: str, *extra: str) -> int:
    start = {"class_path": "tests.cli_helpers.SaveStartingWeights", "init_args": {"path": out}}
    cub = str(REPO / "configs" / "cub.yaml")
    few = ["--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"]
    return main(
        ["fit", "--config", cub, *TINY, *few, f"--trainer.default_root_dir={out}-runs"]
        + ["--data.init_args.root=data/cub", "--data.init_args.download=false"]
        + [f"--model.pretrained={pretrained}", "--trainer.callbacks", json.dumps([start]), *extra]
    )


@pytest.mark.slow
def test_an_imagenet_run_fine_tunes_on_cub_from_its_run_folder_and_export(workdir, capsys, caplog):  # noqa: F811, E501
    make_imagenet(workdir / "data" / "imagenet")
    classes = len(make_cub(workdir / "data" / "cub").classes)
    imagenet = str(REPO / "configs" / "imagenet_isqrt_r50.yaml")
    args = ["fit", "--config", imagenet, *TINY, "--trainer.default_root_dir=runs"]
    assert main([*args, "--model.milestones=[1]", "--data.init_args.root=data/imagenet"]) == 0
    run = Path("runs/imagenet_isqrt_r50/version_0")
    (best,) = (run / "checkpoints").glob("best-*.ckpt")  # the run's one best checkpoint
    raw = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    truth = {k[len("model.") :]: v for k, v in raw.items() if k.startswith("model.")}
    assert truth["classifier.weight"].shape[0] == len(WNIDS)
    # the export holds the same weights (what the second fine-tune reads)
    exported = safetensors.torch.load_file(str(run / "export" / "model.safetensors"))
    assert all(torch.equal(exported[k], v) for k, v in truth.items())
    capsys.readouterr()
    caplog.clear()

    for source, out in ((run, "from-run"), (run / "export", "from-export")):
        assert _fine_tune(source, out) == 0, capsys.readouterr().err[-2000:]
        start = torch.load(out, weights_only=True)
        assert start.keys() == truth.keys()
        for key, value in truth.items():
            if not key.startswith("classifier."):  # trunk and head: exactly the best weights
                assert torch.equal(start[key], value), (out, key)
        weight = start["classifier.weight"]  # fresh, for the replica's classes
        assert weight.shape == (classes, truth["classifier.weight"].shape[1])
        assert weight.abs().max() <= 1 / math.sqrt(weight.shape[1])
        (fine_run,) = Path(f"{out}-runs").glob("cub/version_0")
        record = json.loads((fine_run / "run.json").read_text())["pretrained"]
        expected_file = best if source == run else run / "export" / "model.safetensors"
        assert Path(record["file"]).resolve() == expected_file.resolve()
        kind = "run" if source == run else "export"
        assert (record["source"], record["given"]) == (kind, str(source))
        said = [r.getMessage() for r in caplog.records]  # the console lines of fgvc fit
        assert sum(m.startswith(f"model.pretrained: {expected_file}, ") for m in said) == 1
        assert sum(f"classifier has {len(WNIDS)} classes, the model {classes}" in m for m in said)
        caplog.clear()

    # another trunk: one line naming both archs and the file, before any training
    assert _fine_tune(run, "wrong-arch", "--model.arch=resnet34") != 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "holds a resnet18 network" in last and "builds resnet34" in last and str(best) in last
    assert not Path("wrong-arch").exists()  # the fit never started: no starting weights
    assert not [p for p in Path("wrong-arch-runs").rglob("*") if p.is_file()]  # nor a run


@pytest.mark.slow
def test_the_gap_imagenet_run_gives_an_isqrt_fine_tune_its_trunk(workdir, caplog):  # noqa: F811
    make_imagenet(workdir / "data" / "imagenet")
    make_cub(workdir / "data" / "cub")
    gap = str(REPO / "configs" / "imagenet_gap_r50.yaml")
    args = ["fit", "--config", gap, *TINY, "--trainer.default_root_dir=runs"]
    args += ["--model.reduce_dim=null", "--trainer.limit_train_batches=1"]
    assert main([*args, "--model.milestones=[1]", "--data.init_args.root=data/imagenet"]) == 0
    run = Path("runs/imagenet_gap_r50/version_0")
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    raw = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    assert not any(k.startswith("model.head.") for k in raw)  # GAP: no head weights
    caplog.clear()
    assert _fine_tune(run, "from-gap") == 0  # cub.yaml: iSQRT-COV, d=8 here
    start = torch.load("from-gap", weights_only=True)
    trunk = [k for k in start if k.startswith("backbone.")]
    assert trunk and all(torch.equal(start[k], raw[f"model.{k}"]) for k in trunk)
    assert start["head.conv.weight"].shape[0] == 8  # a fresh head and classifier
    said = [r.getMessage() for r in caplog.records if "trunk only" in r.getMessage()]
    assert len(said) == 1 and "representation 'gap' (now 'isqrt')" in said[0]
    (fine_run,) = Path("from-gap-runs").glob("cub/version_0")
    record = json.loads((fine_run / "run.json").read_text())["pretrained"]
    assert (record["source"], record["loaded"]) == ("run", "trunk")
