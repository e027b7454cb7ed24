"""fgvc/train/quiet.py, seen from a real `fgvc fit` and its resume: the chatter of Lightning
and wandb is gone, a real warning still shows, and every place that numbers epochs (the
progress lines, checkpoint names, metrics.csv, the checkpoint itself, the resume line)
agrees (0-based, fgvc/train/progress.py)."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_commands_train import REPO, write_config

#: what the issue found drowning the useful lines, and the like (none may appear)
CHATTER = (
    "💡 Tip",
    "litlogger",
    "litmodels",
    "The anonymous setting has no effect",
    "Images sizes do not match",
    "Total FLOPs: 0",
    "dirpath has changed",
    "exists and is not empty",
    "LeafSpec",
    "TPU available: False",
    "to estimate number of stepping batches",
    "Tracking run with wandb",
    "wandb leet",
    "Run history",
    "Run summary",
    "Adding directory to artifact",
)
REAL = "a real warning from the test's callback"


def fit(folder: Path, *args: str) -> str:
    """``fgvc fit`` in a child process as a user runs it (wandb's own printing on: no
    WANDB_SILENT), its stdout and stderr together."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONPATH=str(REPO), WANDB_MODE="offline")
    proc = subprocess.run(
        [sys.executable, "-m", "fgvc", "fit", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_fit_and_resume_say_what_matters_once_with_one_epoch_numbering(tmp_path):
    cfg = write_config(tmp_path, max_epochs=3, enable_model_summary=True)
    warn = f'[{{"class_path": "tests.cli_helpers.WarnAtEpochEnd", "init_args": {{"epoch": 1, "message": "{REAL}"}}}}]'  # noqa: E501
    first = fit(tmp_path, "--config", str(cfg), "--trainer.callbacks", warn)
    run = tmp_path / "runs" / "tiny" / "version_0"
    # resumed by the run folder's absolute path (the config names it relatively)
    second = fit(
        tmp_path, "--config", str(cfg), "--trainer.max_epochs", "4", "--ckpt_path", str(run)
    )
    for output in (first, second):
        found = [c for c in CHATTER if c in output]
        assert not found, found
    assert REAL in first  # a real warning passes
    assert re.search(r"Total FLOPs: [1-9]", first)  # counted, not 0
    assert "W&B run tiny (offline" in first  # where the W&B run is, from fgvc

    # one epoch numbering: progress lines, metrics.csv, checkpoint names and contents
    done = [re.findall(r"^epoch (\d+)/(\d+) done in", o, re.M) for o in (first, second)]
    assert done == [[("0", "2"), ("1", "2"), ("2", "2")], [("3", "3")]]
    assert "continuing with epoch 3/3 on" in second
    with open(run / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/top1")]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    scores = [float(r["val/top1"]) for r in rows]
    (best,) = (run / "checkpoints").glob("best-*.ckpt")  # one best, the resume kept its score
    epoch = int(re.match(r"best-epoch(\d+)-", best.name).group(1))
    assert epoch == scores.index(max(scores))
    assert f"top1_{max(scores):.4f}" in best.name
    assert torch.load(best, weights_only=True)["epoch"] == epoch
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 3
