"""fgvc.commands.main: the entry point's own options, its help, and what starting a command
imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import fgvc
from fgvc.commands.main import main
from tests.test_commands_train import REPO


def test_version_names_fgvc_and_its_libraries(capsys):
    for flag in ("--version", "-V"):
        assert main([flag]) == 0
        line = capsys.readouterr().out.strip()
        assert line.startswith(f"fgvc {fgvc.__version__} (torch {version('torch')}, ")
        assert f"pytorch-lightning {version('pytorch-lightning')}" in line
        assert f"timm {version('timm')}" in line and "Python 3." in line


def test_version_imports_no_library():
    """Instant, as a bug report's first line should be: neither torch nor Lightning load."""
    probe = (
        "import sys; from fgvc.commands.main import main; main(['--version']); "
        "print(sorted(m for m in ('torch', 'pytorch_lightning') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[-1] == "[]"


# Libraries that take a second or more to import and that no --help needs. Lightning itself
# imports torchvision and matplotlib, so fit is held only to fgvc's own choices.
HEAVY = (
    "pytorch_lightning",
    "lightning_fabric",
    "torchmetrics",
    "torchvision",
    "timm",
    "albumentations",
    "wandb",
    "onnx",
    "onnxruntime",
    "matplotlib",
    "scipy",
)
FGVC_CHOICES = ("timm", "albumentations", "wandb", "onnx", "onnxruntime")


def loaded_after(argv: list[str], cwd: Path = REPO) -> tuple[int, set[str], str]:
    """``fgvc <argv>`` in a fresh interpreter: (exit code, the HEAVY modules it imported,
    its stdout)."""
    probe = (
        "import contextlib, io, json, sys\n"
        "from fgvc.commands.main import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        f"    code = main({argv!r})\n"
        f"print(json.dumps([code, sorted(m for m in {HEAVY!r} if m in sys.modules), "
        "out.getvalue()]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    code, modules, stdout = json.loads(proc.stdout.splitlines()[-1])
    return code, set(modules), stdout


@pytest.mark.parametrize(
    "argv", [["predict", "--help"], ["explain", "--help"], ["export", "--help"],
             ["data", "check", "--help"], ["data", "--help"]]
)  # fmt: skip
def test_help_imports_no_heavy_library(argv):
    """``--help`` is built from names alone: no Lightning, torchvision, albumentations, timm,
    ONNX, W&B, matplotlib or SciPy is imported (each costs up to seconds)."""
    code, modules, stdout = loaded_after(argv)
    assert code == 0 and "usage: fgvc" in stdout
    assert modules == set()


@pytest.mark.slow
def test_fit_help_imports_only_what_lightning_does():
    code, modules, stdout = loaded_after(["fit", "--help"])
    assert code == 0 and "--config" in stdout and "--model.arch" in stdout
    assert "pytorch_lightning" in modules  # LightningCLI builds this help
    assert modules.isdisjoint(FGVC_CHOICES)


@pytest.mark.slow
def test_predict_on_an_onnx_bundle_imports_no_training_library(tiny_run, tmp_path):
    """Predicting with an ONNX bundle needs ONNX Runtime, not Lightning, torchvision (the
    network is not built), timm, albumentations (evaluation resizes without it), the onnx
    package (export only) or W&B."""
    from PIL import Image

    from fgvc.deploy.export import export_checkpoint

    bundle = export_checkpoint(tiny_run[2], tmp_path / "bundle")
    image = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(image)
    argv = ["predict", str(image), "--model", str(bundle), "--format", "csv", "--no-progress"]
    code, modules, stdout = loaded_after(argv)
    assert code == 0 and str(image) in stdout
    assert "onnxruntime" in modules
    forbidden = {"pytorch_lightning", "torchvision", "timm", "wandb", "onnx", "matplotlib"}
    forbidden.add("albumentations")
    assert modules.isdisjoint(forbidden), modules


def test_help_lists_every_exit_code(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    lines = text[text.index("exit codes") :].splitlines()
    for code in (0, 1, 2, 130, 137, 143):
        assert any(line.split()[:1] == [str(code)] for line in lines), code
    for flag in ("--model", "--out", "--workers", "--jobs", "--results-file"):
        assert flag in text
