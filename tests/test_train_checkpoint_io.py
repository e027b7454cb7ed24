"""Checkpoints written whole (fgvc.train.checkpoint_io), down to `fgvc fit` on a filesystem
that fills up, and killed in the middle of a save with ``$TMPDIR`` on another filesystem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fgvc.commands.main import main
from fgvc.errors import DiskFullError
from fgvc.runs import best_checkpoint_in_run, find_latest_run, read_fit_checkpoint
from fgvc.train.checkpoint_io import AtomicCheckpointIO, AtomicCheckpoints
from fgvc.train.cli import build_cli
from tests.fs_helpers import fill, small_filesystem
from tests.test_commands_train import subprocess_env, write_config

CSV_ONLY = "[{class_path: fgvc.train.loggers.CSVLogger, init_args: {save_dir: %s, name: tiny}}]"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_full_filesystem_keeps_the_previous_checkpoint(tmp_path):
    """Lightning's save copies from ``$TMPDIR`` onto the file: a full disk truncates it."""
    io = AtomicCheckpointIO()
    with small_filesystem(tmp_path / "small", "1m") as small:
        last = small / "checkpoints" / "last.ckpt"
        io.save_checkpoint({"epoch": 0, "w": torch.zeros(1000)}, last)
        fill(small)
        with pytest.raises(DiskFullError) as failed:
            io.save_checkpoint({"epoch": 1, "w": torch.zeros(300_000)}, last)
        assert torch.load(last, weights_only=True)["epoch"] == 0
        assert hidden(last.parent) == []
        assert str(last) in str(failed.value) and f"filesystem at {small} is full" in str(
            failed.value
        )


def test_fit_installs_the_atomic_checkpoint_io_even_with_other_plugins(workdir):
    args = ["--config", str(write_config(workdir)), "--trainer.logger", "false"]
    cli = build_cli(args, run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    # a user's --trainer.plugins list replaces the default one: the callback puts it back
    plugins = "lightning_fabric.plugins.environments.LightningEnvironment"
    cli = build_cli([*args, "--trainer.plugins", plugins], run=False)
    guard = next(c for c in cli.trainer.callbacks if isinstance(c, AtomicCheckpoints))
    guard.setup(cli.trainer, cli.model, "fit")
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    # and inside a wrapper such as AsyncCheckpointIO
    plugins = "pytorch_lightning.plugins.io.AsyncCheckpointIO"
    cli = build_cli([*args, "--trainer.plugins", plugins], run=False)
    guard = next(c for c in cli.trainer.callbacks if isinstance(c, AtomicCheckpoints))
    guard.setup(cli.trainer, cli.model, "fit")
    assert isinstance(cli.trainer.strategy.checkpoint_io.checkpoint_io, AtomicCheckpointIO)
    cli.trainer.strategy.checkpoint_io.teardown()


@pytest.mark.slow
def test_fit_on_a_full_disk_stops_in_one_line_and_keeps_whole_checkpoints(workdir, capsys):
    """A checkpoint is ~90 MB here: a 135 MB filesystem takes the first best checkpoint,
    then fills up during ``last.ckpt``."""
    cfg = write_config(workdir, max_epochs=1)
    with small_filesystem(workdir / "small", "135m") as small:
        runs = small / "runs"
        code = main(["fit", "--config", str(cfg), "--trainer.logger", CSV_ONLY % runs])
        err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        run = runs / "tiny" / "version_0"
        assert code == 1
        assert err == [
            f"fgvc fit: error: cannot write {run / 'checkpoints' / 'last.ckpt'}: the filesystem "
            f"at {small} is full (no space left on device or quota exceeded); nothing was "
            f"written - free some space there or write elsewhere"
        ]
        # every *.ckpt there is whole, and nothing hidden is left behind
        (best,) = (run / "checkpoints").iterdir()
        assert best.name.startswith("best-epoch000-") and read_fit_checkpoint(best).epoch == 0
        assert best_checkpoint_in_run(run) == best
        # `fgvc export --ckpt best` takes that one: on the full filesystem, one line ...
        filler = fill(small)
        args = ["--model", "best", "--runs-root", str(runs), "--formats", "safetensors"]
        assert main(["export", *args]) == 1
        (err,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert err.startswith(f"fgvc export: error: cannot write {run / 'export'}: the ")
        assert "is full" in err and not (run / "export").exists() and hidden(run) == []
        # ... with room, the bundle
        filler.unlink()
        assert main(["export", *args]) == 0
        written = json.loads((run / "export" / "model.json").read_text())
        assert Path(written["checkpoint"]["path"]) == best.resolve()


@pytest.mark.slow
def test_a_kill_during_the_last_checkpoint_save_keeps_the_previous_one(workdir):
    """``$TMPDIR`` on another filesystem (Lightning's save then copies onto ``last.ckpt``):
    the fit is SIGKILLed while its second ``last.ckpt`` is on its way."""
    cfg = write_config(workdir, max_epochs=2)
    with small_filesystem(workdir / "other-fs", "400m") as other_fs:
        assert os.stat(other_fs).st_dev != os.stat(workdir).st_dev
        killed = subprocess.run(
            [
                sys.executable,
                "-c",
                "from tests.fs_helpers import fit_killed_during_save as f; f()",
                *("fit", "--config", str(cfg), "--trainer.logger", CSV_ONLY % (workdir / "runs")),
            ],
            cwd=workdir,
            env={**subprocess_env(), "TMPDIR": str(other_fs)},
            capture_output=True,
            text=True,
        )
    assert killed.returncode == -9, killed.stderr[-2000:]
    run = find_latest_run(workdir / "runs")
    folder = run / "checkpoints"
    assert read_fit_checkpoint(folder / "last.ckpt").epoch == 0  # the previous one, whole
    (left,) = hidden(folder)  # the new one's beginning, hidden and never taken for a checkpoint
    assert left.startswith(".last.ckpt.tmp-") and not left.endswith(".ckpt")
    assert best_checkpoint_in_run(run).name.startswith("best-epoch000")
    # the next save in that folder removes what the killed process left
    AtomicCheckpointIO().save_checkpoint({"epoch": 9}, folder / "other.ckpt")
    assert hidden(folder) == []
