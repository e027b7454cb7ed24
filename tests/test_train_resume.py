"""fgvc.train.resume: ``checkpoint_every_n_steps`` saves ``last.ckpt`` inside epochs and at
a stop; a run stopped inside an epoch (SIGTERM, SIGKILL) and resumed with ``--ckpt_path
last`` ends with the uninterrupted run's weights, ``metrics.csv`` and batches - as users run
it (``fgvc fit`` in subprocesses, 2 gloo processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fgvc.commands.main import main
from tests.test_commands_train import read_metrics, subprocess_env, workdir, write_config

__all__ = ["workdir"]  # the fixture, shared with test_commands_train

RUN = Path("runs") / "tiny" / "version_0"


def tiny(folder: Path, devices: int = 2, every: int = 3, epochs: int = 2, **extra) -> Path:
    """18 training images, 2 a batch: 4 steps an epoch on 2 processes, 9 on one."""
    folder.mkdir(parents=True, exist_ok=True)
    strategy = {"strategy": "ddp"} if devices > 1 else {}
    cfg = write_config(folder, max_epochs=epochs, devices=devices, **strategy)
    config = yaml.safe_load(cfg.read_text())
    config["trainer"]["logger"] = config["trainer"]["logger"][:1]  # CSV only: quicker
    config["data"]["init_args"]["batch_size"] = 2
    config["checkpoint_every_n_steps"] = every
    recorder = {"class_path": "tests.cli_helpers.BatchRecorder", "init_args": {"record": "record"}}
    config["trainer"]["callbacks"] = [recorder, *extra.get("callbacks", [])]
    cfg.write_text(yaml.safe_dump(config))
    return cfg


def fit(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fgvc", "fit", "--config", "tiny.yaml", *args],
        cwd=folder,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def records(folder: Path, rank: int) -> list[list]:
    lines = (folder / "record" / f"rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def check_same_run(straight: Path, resumed: Path, ranks: int, redone: slice | None = None) -> None:
    """The resumed run ends as the uninterrupted one: weights bit for bit, every
    metrics.csv row, the best checkpoint, and each process's batches in order (with
    ``redone``: the uninterrupted run's batches of that slice trained twice, by the killed
    process after its checkpoint and again by the resumed one)."""
    done = torch.load(straight / RUN / "checkpoints" / "last.ckpt", weights_only=True)
    again = torch.load(resumed / RUN / "checkpoints" / "last.ckpt", weights_only=True)
    assert done["state_dict"].keys() == again["state_dict"].keys()
    for key, value in done["state_dict"].items():
        torch.testing.assert_close(again["state_dict"][key], value, rtol=0, atol=0, msg=key)
    assert read_metrics(resumed / RUN) == read_metrics(straight / RUN)
    best = sorted(p.name for p in (straight / RUN / "checkpoints").glob("best-*.ckpt"))
    assert sorted(p.name for p in (resumed / RUN / "checkpoints").glob("best-*.ckpt")) == best
    for rank in range(ranks):
        batches = records(straight, rank)
        if redone is not None:
            batches = batches[: redone.stop] + batches[redone.start :]
        assert records(resumed, rank) == batches


@pytest.mark.slow
def test_sigterm_inside_an_epoch_on_two_processes_resumes_exactly(workdir):
    """SIGTERM after batch 0 of epoch 0 (both processes): they train batch 1, save
    last.ckpt there (step 2, not an epoch's end), exit 143; a resume on another batch size
    is refused in one line, the resume as configured finishes - and equals the run that was
    never stopped (which saved inside epoch 0 at step 3 and epoch 1 at step 6)."""
    straight, broken = workdir / "straight", workdir / "broken"
    tiny(straight)
    stop = {"class_path": "tests.cli_helpers.SigtermAtStep", "init_args": {"batch": 0}}
    tiny(broken, callbacks=[stop])
    assert fit(straight).returncode == 0

    proc = fit(broken)
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert "stopped by SIGTERM in epoch 0 (step 2)" in proc.stderr
    assert "continue from this step with the same command and --ckpt_path last" in proc.stderr
    saved = torch.load(broken / RUN / "checkpoints" / "last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (0, 2)
    (loader,) = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader == {
        "batches": 2,
        "epoch_batches": 4,
        "batch_size": 2,
        "world_size": 2,
        "samples": 9,
    }
    metrics = saved["fgvc_mid_epoch"]["metrics"]  # every process's epoch so far
    assert len(metrics) == 2 and all(m["train_loss"]["updates"] == 2 for m in metrics)
    assert metrics[0]["train_loss"]["state"] != metrics[1]["train_loss"]["state"]
    assert [r[:2] for r in records(broken, 0)] == [[0, 0], [0, 1]]

    # the stopped run is not another run: the callback that stopped it goes
    config = yaml.safe_load((broken / "tiny.yaml").read_text())
    config["trainer"]["callbacks"] = config["trainer"]["callbacks"][:1]
    (broken / "tiny.yaml").write_text(yaml.safe_dump(config))
    refused = fit(broken, "--ckpt_path", "last", "--data.init_args.batch_size", "3")
    lines = [line for line in refused.stderr.splitlines() if line.startswith("fgvc")]
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr[-3000:]
    assert "saved inside an epoch by 2 process(es) x 2 images, this run has 2 x 3" in lines[0]
    assert not (broken / RUN / "config.resume-1.yaml").exists()  # refused before anything

    resumed = fit(broken, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    check_same_run(straight, broken, ranks=2)


@pytest.mark.slow
def test_a_kill_during_a_step_checkpoint_keeps_the_previous_one(workdir):
    """One process, last.ckpt every 2 steps: SIGKILLed while the second is being written
    (step 4); last.ckpt is step 2's, whole, and the run resumed from it equals the
    uninterrupted one (rows logged after step 2 and lost with the process included)."""
    straight, broken = workdir / "straight", workdir / "broken"
    tiny(straight, devices=1, every=2, epochs=1)
    tiny(broken, devices=1, every=2, epochs=1)
    assert fit(straight).returncode == 0
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from tests.fs_helpers import fit_killed_during_save as f; f()",
            *("fit", "--config", "tiny.yaml"),
        ],
        cwd=broken,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    folder = broken / RUN / "checkpoints"
    saved = torch.load(folder / "last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (0, 2)
    assert [p.name for p in folder.iterdir() if p.name.startswith(".last.ckpt.tmp-")]
    resumed = fit(broken, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
    check_same_run(straight, broken, ranks=1, redone=slice(2, 4))


@pytest.mark.parametrize("value", ["0", "-3"])
def test_a_step_count_below_one_is_one_line(workdir, capsys, value):
    cfg = write_config(workdir)
    assert main(["fit", "--config", str(cfg), "--checkpoint_every_n_steps", value]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fgvc")]
    assert len(err) == 1 and "checkpoint_every_n_steps must be" in err[0], err
    assert f"got {value}" in err[0] and not (workdir / "runs").exists()


def test_the_option_is_documented_in_fit_help(capsys):
    assert main(["fit", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--checkpoint_every_n_steps" in out and "inside an epoch" in out
