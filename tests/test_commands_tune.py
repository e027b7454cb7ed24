"""`fgvc tune`: a suggested model.lr from Lightning's learning-rate finder, its files, its
W&B run, and the test split never read."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from fgvc.commands.main import main
from fgvc.commands.tune import fit_command
from fgvc.data import SynthConfig, make_synthetic
from fgvc.errors import UsageError
from fgvc.runs import resume_point
from tests.test_commands_train import NUM_CLASSES, wandb_run_file, workdir, write_config
from tests.wandb_records import config_keys, history

__all__ = ["workdir"]  # the fixture, shared with test_commands_train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def break_the_test_split(workdir: Path) -> list[Path]:
    """The synthetic dataset written as the config would, its test images made garbage."""
    folder = make_synthetic(
        workdir / "data",
        SynthConfig(num_classes=NUM_CLASSES, train_per_class=8, test_per_class=2, image_size=40),
    )
    paths = dict(line.split() for line in (folder / "images.txt").read_text().splitlines())
    split = dict(
        line.split() for line in (folder / "train_test_split.txt").read_text().splitlines()
    )
    broken = [folder / "images" / paths[i] for i, train in split.items() if train == "0"]
    for path in broken:
        path.write_bytes(b"not a JPEG: the test split must not be read")
    return broken


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, (pattern, text)
    return float(match.group(1))


@pytest.fixture
def one_thread():
    """One intra-op thread: on a loaded 2-core machine two spinning threads per process
    made each tiny step ~7x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_tune_suggests_a_rate_from_the_training_split(workdir, capsys, one_thread):
    broken = break_the_test_split(workdir)
    cfg = write_config(workdir)
    # the authors' protocol validates on the (broken) test split: tune never reads it
    args = ["--config", str(cfg), "--data.init_args.val_split", "0", "--num_training", "20"]
    assert main(["tune", *args, "--min_lr", "1e-5", "--max_lr", "10"]) == 0
    out = capsys.readouterr().out
    found = number(r"steepest descent of the loss at base rate (\S+) ", out)
    model_lr = number(r"suggested model.lr: (\S+) for model.lr_batch_size 10", out)
    assert 1e-5 <= found <= 10
    # SGD scales linearly: a global batch of 4 runs model.lr x 4/10, the found rate
    assert model_lr == pytest.approx(found * 10 / 4, rel=1e-3)
    assert f"fgvc fit --config {cfg} --data.init_args.val_split 0 --model.lr {model_lr:.4g}" in out
    assert "batch-size finder: skipped on the CPU" in out

    folder = workdir / "runs" / "tiny" / "tune_0"
    assert f"plot: {folder / 'lr_find.png'}" in out
    png = (folder / "lr_find.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    with Image.open(folder / "lr_find.png") as image:
        image.verify()
    with open(folder / "lr_find.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(r["step"]) for r in rows] == list(range(len(rows))) and len(rows) == 20
    (chosen,) = [r for r in rows if r["suggested"] == "1"]
    assert float(chosen["lr"]) == pytest.approx(found, rel=1e-3)
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] == pytest.approx(1e-5) and lrs == sorted(lrs) and lrs[-1] <= 10
    for row in rows:  # every part at its multiple of the base rate (classifier x5)
        assert float(row["lr_classifier"]) == pytest.approx(5 * float(row["lr"]), rel=1e-12)
        assert float(row["lr_backbone"]) == float(row["lr_head"]) == float(row["lr"])
    summary = json.loads((folder / "lr_find.json").read_text())
    assert summary["found"] == float(chosen["lr"]) and summary["global_batch"] == 4
    assert summary["model_lr"] == pytest.approx(model_lr, rel=1e-3)
    assert summary["rule"] == "linear" and summary["steps"] == 20
    assert json.loads((folder / "run.json").read_text())["command"] == "tune"
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert saved["num_training"] == 20 and saved["data"]["init_args"]["val_split"] == 0

    # nothing left behind: no checkpoint, no temporary file, no run to resume
    runs = workdir / "runs"
    assert not list(runs.rglob("*.ckpt")) and not list(folder.glob(".*"))
    with pytest.raises(UsageError, match="no run of this config"):
        resume_point("last", runs, "tiny")
    for path in broken:  # the test split was not touched (and could not have been read)
        assert path.read_bytes().startswith(b"not a JPEG")

    # W&B (offline): the plot, the curve, the suggestion and the config
    run_file = wandb_run_file(workdir)
    logged = [row for row in history(run_file) if "tune/lr_find/_type" in row]
    assert logged and logged[0]["tune/lr_find/_type"] == "image-file"
    media = run_file.parent / "files" / logged[0]["tune/lr_find/path"]
    assert media.read_bytes() == png
    assert "tune/lr_find_curve/_type" in logged[0]
    assert {"lr", "lr_batch_size", "batch_size"} <= config_keys(run_file)
    assert "W&B run:" in out and "wandb sync" in out

    # a second search gets a folder of its own
    assert main(["tune", *args, "--trainer.logger", "false"]) == 0
    assert (workdir / "runs" / "fgvc" / "tune_0" / "lr_find.png").is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model.lr", "-1"], "fgvc tune: error: model.lr must be > 0, got -1.0"),
        (["--min_lr", "1", "--max_lr", "0.1"], "fgvc tune: error: --min_lr and --max_lr need"),
        (["--num_training", "5"], "fgvc tune: error: --num_training must be >= 20 steps, got 5"),
        (["--early_stop_threshold", "0.5"], "fgvc tune: error: --early_stop_threshold must be"),
        (["--min_lrr", "1e-6"], "fgvc tune: error: "),
    ],
)
def test_bad_values_are_one_line(workdir, capsys, extra, message):
    cfg = write_config(workdir)
    assert main(["tune", "--config", str(cfg), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    assert not list((workdir / "runs").rglob("tune_*"))  # no folder left for nothing


def test_the_suggested_command_drops_the_search_options():
    argv = [
        "--config", "c.yaml", "--min_lr=1e-6", "--max_lr", "2", "--model.lr", "0.1",
        "--num_training", "50", "--trainer.devices", "2", "--batch_size_finder", "false",
    ]  # fmt: skip
    assert (
        fit_command(argv, "0.0031")
        == "fgvc fit --config c.yaml --trainer.devices 2 --model.lr 0.0031"
    )
