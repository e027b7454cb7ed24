"""Hostile but realistic inputs, through the commands as users type them: nothing run from a
foreign file, nothing of the user's lost, one line for every refusal."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fgvc.commands.main import main
from fgvc.commands.predict import main as predict_main
from fgvc.deploy.export import export_checkpoint
from tests.cli_helpers import CodePayload
from tests.test_commands_train import folder_config, subprocess_env, write_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for var in ("SLURM_NTASKS", "SLURM_JOB_NAME", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def one_error_line(capsys, prefix: str) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(prefix)]
    assert len(errors) == 1, lines
    return errors[0]


# -- 1. no code from planted checkpoints ------------------------------------------------------
def test_planted_hpc_checkpoints_never_run(workdir, capsys, monkeypatch):
    cfg = write_config(workdir, max_epochs=1)
    marker = workdir / "pwned"
    planted = workdir / "runs" / "hpc_ckpt_3.ckpt"
    planted.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "payload": CodePayload(marker)}, planted)

    assert main(["fit", "--config", str(cfg), "--ckpt_path", "hpc", "--weights_only", "false"]) == 2
    assert "--weights_only false is refused" in one_error_line(capsys, "fgvc fit: error:")
    assert main(["fit", "--config", str(cfg), "--ckpt_path", "hpc"]) == 2
    line = one_error_line(capsys, "fgvc fit: error:")
    assert "hpc_ckpt_3.ckpt" in line and "weights_only=True" in line
    # SLURM auto-requeue picks hpc_ckpt_* with no --ckpt_path at all: checked the same way
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    assert main(["validate", "--config", str(cfg)]) == 2
    assert "hpc_ckpt_3.ckpt" in one_error_line(capsys, "fgvc validate: error:")
    monkeypatch.delenv("SLURM_NTASKS")
    assert main(["fit", "--config", str(cfg), "--ckpt_path", "registry:me/model"]) == 2
    assert "registries are not supported" in one_error_line(capsys, "fgvc fit: error:")
    assert not marker.exists()


def test_random_bytes_are_not_called_an_unsafe_pickle(tmp_path, capsys):
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    assert main(["export", "--model", str(noise), "--out", str(tmp_path / "b")]) == 2
    line = one_error_line(capsys, "fgvc export: error:")
    assert "noise.ckpt: it is not a checkpoint" in line and "weights_only" not in line


# -- 2. predict's output: whole or not at all, always well-formed --------------------------------
@pytest.fixture
def odd_bundle(tiny_run, tmp_path):
    """The tiny run's bundle with class names a spreadsheet would run or a terminal break on."""
    _, _, ckpt, _ = tiny_run
    bundle = export_checkpoint(ckpt, tmp_path / "bundle", formats=("safetensors",))
    config = json.loads((bundle / "model.json").read_text())
    config["class_names"] = ["=1+1", "line\nbreak", "@SUM(A1)"]
    (bundle / "model.json").write_text(json.dumps(config))
    return bundle


def test_predict_output_is_atomic_escaped_and_formula_safe(odd_bundle, tmp_path, monkeypatch):
    images = tmp_path / "imgs"
    images.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    odd = os.fsdecode(b"caf\xe9 \x1b[31m.png")  # not UTF-8, with a terminal escape
    for name in (odd, "=cmd.png", "plain.png"):
        Image.fromarray(pixels).save(images / name)
    monkeypatch.chdir(images)
    out = tmp_path / "preds.csv"
    out.write_text("my earlier results\n")

    def run(*argv: str) -> int:
        return predict_main(list(argv), stdout=io.StringIO(), stderr=io.StringIO())

    # a failing run leaves the existing file as it was
    assert run("=cmd.png", "--model", str(tmp_path / "nothing"), "--results-file", str(out)) == 2
    assert out.read_text() == "my earlier results\n"
    argv = [odd, "=cmd.png", "plain.png", "--model", str(odd_bundle), "--topk", "3"]
    assert run(*argv, "--format", "csv", "--results-file", str(out), "--no-progress") == 0
    text = out.read_bytes().decode("utf-8")  # valid UTF-8, whatever the names
    assert "caf\\xe9 \\x1b[31m.png" in text and "\x1b" not in text
    assert "'=cmd.png" in text and "\n=cmd" not in text and ",=" not in text
    assert "'=1+1" in text and "'@SUM(A1)" in text and "line\\nbreak" in text
    table = tmp_path / "preds.txt"
    assert run(*argv, "-o", str(table), "--no-progress") == 0
    lines = table.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 * 4  # each image: its name and 3 ranks, one line each
    assert run(*argv, "--format", "json", "-o", str(tmp_path / "p.json"), "--no-progress") == 0
    document = json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))
    assert document["predictions"][0]["image"] == "caf\\xe9 \x1b[31m.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["bundle", "imgs", "p.json", "preds.csv", "preds.txt"]
    )  # no temporary file left


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["class_names"].pop(), "2 class_names for a network with 3 outputs"),
        (lambda c: c["preprocessing"].update(image_size="448"), "image_size must be an integer"),
        (lambda c: c.update(files={"weights": "../../etc/passwd"}), "must be a file name"),
        # sizes that would allocate 80-130 GB, or iterate for ever
        (lambda c: c["net"].update(reduce_dim=100_000), "reduce_dim must be at most 512"),
        (lambda c: c["net"].update(head={"iterations": 10**9}), "iterations must be at most 100"),
        (
            lambda c: c.update(net={**c["net"], "num_classes": 10**6}, class_names=["x"] * 10**6),
            "num_classes must be at most 100000",
        ),
    ],
)
def test_hand_edited_model_json_is_one_line(odd_bundle, tmp_path, capsys, edit, message):
    config = json.loads((odd_bundle / "model.json").read_text())
    edit(config)
    (odd_bundle / "model.json").write_text(json.dumps(config))
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(image)
    err = io.StringIO()
    code = predict_main([str(image), "--model", str(odd_bundle)], io.StringIO(), err)
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], lines


# -- 6. runs started together ----------------------------------------------------------------------
@pytest.mark.slow
def test_two_fits_started_together_get_their_own_folders(workdir):
    cfg = write_config(workdir, max_epochs=1)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "fgvc", "fit", "--config", str(cfg)],
            cwd=workdir,
            env=subprocess_env(),
            stdout=subprocess.DEVNULL,
            stderr=open(workdir / f"err{k}.txt", "w"),  # noqa: SIM115 - the child owns it
        )
        for k in range(2)
    ]
    codes = [proc.wait(timeout=600) for proc in procs]
    assert codes == [0, 0], [(workdir / f"err{k}.txt").read_text()[-2000:] for k in range(2)]
    runs = sorted((workdir / "runs" / "tiny").iterdir())
    assert [r.name for r in runs] == ["version_0", "version_1"]
    for run in runs:
        assert (run / "config.yaml").is_file() and (run / "export" / "model.json").is_file()
        assert (run / "checkpoints" / "last.ckpt").is_file()
        epochs = [r.split(",")[0] for r in (run / "metrics.csv").read_text().splitlines()]
        assert len(epochs) > 1  # its own metrics, not interleaved with the other's


# -- 7./8. found before training, in one line ------------------------------------------------------
def test_bad_splits_and_configs_are_one_line_before_anything_runs(workdir, capsys):
    cfg = folder_config(workdir, {"a": 2, "b": 2, "c": 2}, max_epochs=1)
    shutil.copytree(workdir / "folders" / "val" / "c", workdir / "folders" / "val" / "zebra")
    assert main(["fit", "--config", str(cfg)]) == 2
    line = one_error_line(capsys, "fgvc fit: error:")
    assert "zebra" in line and "training split lacks" in line
    shutil.rmtree(workdir / "folders" / "val" / "zebra")
    odd = os.path.join(os.fsencode(workdir / "folders" / "train"), b"caf\xe9")
    os.mkdir(odd)
    shutil.copy(workdir / "folders" / "train" / "a" / "img_001.jpg", os.path.join(odd, b"x.jpg"))
    assert main(["fit", "--config", str(cfg)]) == 2
    assert "caf\\xe9" in one_error_line(capsys, "fgvc fit: error:")
    assert not (workdir / "runs" / "tiny").exists()  # nothing started

    (workdir / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    assert main(["fit", "--config", "binary.yaml"]) == 2
    assert "not a text (YAML) file" in one_error_line(capsys, "fgvc fit: error:")
    config = yaml.safe_load(write_config(workdir).read_text())
    config["data"] = {"init_args": {"root": "data"}}  # no class_path
    (workdir / "noclass.yaml").write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", "noclass.yaml"]) == 2
    assert "needs a class_path" in one_error_line(capsys, "fgvc fit: error:")
    config = yaml.safe_load(write_config(workdir).read_text())
    config["trainer"]["logger"][1]["init_args"]["save_dir"] = "/proc/fgvc-logs"
    (workdir / "badlog.yaml").write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", "badlog.yaml"]) == 2
    line = one_error_line(capsys, "fgvc fit: error:")
    assert "WandbLogger save_dir /proc/fgvc-logs" in line and "Namespace" not in line


def run_unprivileged(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """``fgvc`` as a user whom permissions bind (CI runs as root, which they would not)."""
    return subprocess.run(
        ["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
         sys.executable, "-m", "fgvc", *args],
        cwd=workdir, env=subprocess_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_read_only_folders_are_one_line_and_left_as_they_were(workdir, tiny_run):
    _, _, ckpt, _ = tiny_run
    cfg = write_config(workdir, max_epochs=1)
    locked = workdir / "locked"
    (locked / "old-bundle").mkdir(parents=True)
    (locked / "old-bundle" / "model.json").write_text("{}")
    (workdir / "runs").mkdir()
    for folder in (locked / "old-bundle", locked, workdir / "runs"):
        folder.chmod(0o555)
    try:
        fit = run_unprivileged(workdir, "fit", "--config", str(cfg))
        into = run_unprivileged(workdir, "export", "--model", str(ckpt), "--out", "locked/new")
        force = run_unprivileged(
            workdir, "export", "--model", str(ckpt), "--out", "locked/old-bundle", "--force"
        )
    finally:
        for folder in (locked / "old-bundle", locked, workdir / "runs"):
            folder.chmod(0o755)
    for proc, prog in ((fit, "fgvc fit"), (into, "fgvc export"), (force, "fgvc export")):
        errors = [line for line in proc.stderr.splitlines() if line.startswith(f"{prog}: error:")]
        assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
    assert "runs" in fit.stderr and "choose a writable folder" in fit.stderr
    assert sorted(p.name for p in locked.iterdir()) == ["old-bundle"]
    assert sorted(p.name for p in (locked / "old-bundle").iterdir()) == ["model.json"]
    assert (locked / "old-bundle" / "model.json").read_text() == "{}"
    assert list((workdir / "runs").iterdir()) == []
