"""fgvc.train.interrupt: a signal stops every process at the same step, with the signal's
exit code and the resume point intact; a diverged fit stops at once, in one line, and
nothing broken is saved, exported or predicted with.

No outcome here depends on timing: signals are sent at known points of training (by a
callback, or by the test once a callback says it waits for one), the stop's watchdog is
lifted, and waits on processes have only a generous hang guard."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from fgvc.commands.main import main
from tests.test_commands_train import subprocess_env, workdir, write_config

__all__ = ["workdir"]  # the fixture, shared with test_commands_train


def all_finite(ckpt) -> bool:
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    return all(v.isfinite().all() for v in state.values() if v.is_floating_point())


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("fgvc")]


@pytest.mark.slow
def test_a_huge_learning_rate_stops_the_fit_in_one_line(workdir, capsys):
    cfg = write_config(workdir, max_epochs=3)
    assert main(["fit", "--config", str(cfg), "--model.lr", "1e6"]) == 1
    (line,) = error_lines(capsys)
    assert "training diverged" in line and "at step " in line and "lower model.lr" in line
    assert "learning rates up to" in line
    run = workdir / "runs" / "tiny" / "version_0"
    assert not (run / "export").exists()  # nothing exported
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        assert all_finite(ckpt), ckpt  # nothing non-finite saved, as best or last


@pytest.mark.slow
def test_weights_gone_bad_at_an_epoch_end_are_never_saved(workdir, capsys):
    """The last step of epoch 1 leaves NaN weights with a finite loss: the fit stops before
    validating or saving them; epoch 0's checkpoints stay, whole and finite."""
    cfg = write_config(workdir, max_epochs=3)
    poison = (
        '[{"class_path": "tests.cli_helpers.PoisonWeightsAtEpochEnd", "init_args": {"epoch": 1}}]'
    )
    assert main(["fit", "--config", str(cfg), "--trainer.callbacks", poison]) == 1
    (line,) = error_lines(capsys)
    assert "training diverged" in line and "epoch 1" in line and "last.ckpt holds" in line
    run = workdir / "runs" / "tiny" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0 and all_finite(last)
    for ckpt in (run / "checkpoints").glob("best-*.ckpt"):
        assert "epoch000" in ckpt.name and all_finite(ckpt)

    # a non-finite checkpoint from elsewhere is refused by export (and so by predict)
    checkpoint = torch.load(last, weights_only=True)
    key = next(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point())
    checkpoint["state_dict"][key].view(-1)[0] = float("inf")
    torch.save(checkpoint, workdir / "diverged.ckpt")
    out = ["--out", str(workdir / "exported")]
    assert main(["export", "--model", str(workdir / "diverged.ckpt"), *out]) == 2
    (line,) = error_lines(capsys)
    assert "non-finite weights" in line and key.removeprefix("model.") in line
    assert not (workdir / "exported").exists()
    assert (
        main(
            [
                "predict",
                str(next((workdir / "data").rglob("*.jpg"))),
                "--model",
                str(workdir / "diverged.ckpt"),
            ]
        )
        == 2
    )
    (line,) = error_lines(capsys)
    assert "non-finite weights" in line


# ---------------------------------------------------------------------------------------------
# signals under DDP (2 gloo processes)


def processes_running(marker: str) -> list[int]:
    """Pids whose command line contains ``marker`` (from /proc: no tool needed)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline:
                pids.append(int(entry.name))
    return pids


def with_callback(cfg: Path, class_path: str, **init_args) -> Path:
    config = yaml.safe_load(cfg.read_text())
    config["trainer"]["callbacks"] = [{"class_path": class_path, "init_args": init_args}]
    cfg.write_text(yaml.safe_dump(config))
    return cfg


def wait_for(path: Path, procs: list[subprocess.Popen]) -> None:
    """Until ``path`` exists (a callback wrote it); fails if a process ended first. The
    deadline only guards against a hang."""
    deadline = time.monotonic() + 600
    while not path.exists():
        ended = [p.returncode for p in procs if p.poll() is not None]
        assert not ended, f"a process ended ({ended}) before {path.name}"
        assert time.monotonic() < deadline, f"no {path.name} after 600 s"
        time.sleep(0.1)


def check_stopped_together(record: Path, ranks: int, epoch: int, batch: int) -> dict:
    """Every process recorded the same stop: the step after training batch ``batch`` of
    epoch ``epoch`` (the next step's agreement); returns rank 0's record."""
    entries = [json.loads((record / f"rank{r}.json").read_text()) for r in range(ranks)]
    assert [e["rank"] for e in entries] == list(range(ranks))
    (batches,) = {e["batches"] for e in entries}
    steps = {e["global_step"] for e in entries}
    assert steps == {epoch * batches + batch + 1}, entries  # the same step, the next one
    assert {e["epoch"] for e in entries} == {epoch}
    assert {e["exception"] for e in entries} == {"Stopped"}, entries
    return entries[0]


def check_resume_point(run: Path, epoch: int) -> None:
    """last.ckpt is the last completed epoch's, whole and loadable."""
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == epoch - 1 and saved["state_dict"]
    assert all(v.isfinite().all() for v in saved["state_dict"].values() if v.is_floating_point())
    assert not list(run.glob("checkpoints/*.tmp*")) and not (run / "export").exists()


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_both_at_the_same_step(workdir):
    """Two processes launched as a scheduler does (each its own ``LOCAL_RANK``); SIGTERM
    reaches rank 1 alone, after its first step of epoch 1: both stop at the next step, each
    exits 143, and last.ckpt holds epoch 0."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = write_config(workdir, devices=2, strategy="ddp", max_epochs=4)
    config = yaml.safe_load(cfg.read_text())
    config["trainer"]["logger"] = config["trainer"]["logger"][:1]  # CSV only: quicker
    cfg.write_text(yaml.safe_dump(config))
    record = workdir / "record"
    with_callback(cfg, "tests.cli_helpers.SignalOneRank", record=str(record), rank=1, epoch=1)
    procs = []
    for rank in (0, 1):
        env = {
            **subprocess_env(),
            **{"LOCAL_RANK": str(rank), "NODE_RANK": "0", "WORLD_SIZE": "2"},
            **{"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
        }
        log = open(workdir / f"rank{rank}.log", "w")  # noqa: SIM115 - closed below
        command = [sys.executable, "-m", "fgvc", "fit", "--config", str(cfg)]
        procs.append((subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=log), log))
    try:
        codes = [proc.wait(timeout=600) for proc, _ in procs]
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
            log.close()
    logs = [(workdir / f"rank{r}.log").read_text() for r in (0, 1)]
    assert codes == [143, 143], logs[0][-2000:] + logs[1][-2000:]
    zero = check_stopped_together(record, 2, epoch=1, batch=0)
    assert zero["message"].startswith("stopped by SIGTERM in epoch 1")
    assert "stopped by SIGTERM" in logs[0] and "--ckpt_path last" in logs[0]
    check_resume_point(workdir / "runs" / "tiny" / "version_0", epoch=1)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm-to-launcher", "ctrl-c-to-group"])
def test_interrupt_under_ddp_stops_every_process(workdir, how):
    """2 gloo processes started by Lightning's launcher; the signal comes while process 0
    is in epoch 1's first step (a callback waits for it there): both stop at the next step,
    the launcher exits last with the signal's exit code, and last.ckpt holds epoch 0."""
    cfg = write_config(workdir, devices=2, strategy="ddp", max_epochs=40)
    record = workdir / "record"
    with_callback(cfg, "tests.cli_helpers.AwaitSignal", record=str(record), epoch=1)
    with open(workdir / "err.txt", "w") as err, open(workdir / "out.txt", "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fgvc", "fit", "--config", str(cfg)],
            cwd=workdir,
            env=subprocess_env(),
            stdout=out,
            stderr=err,
            start_new_session=True,  # its own process group, like a terminal job
        )
        try:
            wait_for(record / "ready", [proc])
            assert len(processes_running(str(cfg))) == 2  # the launcher and rank 1
            if how == "sigterm-to-launcher":
                os.kill(proc.pid, signal.SIGTERM)
            else:
                os.killpg(proc.pid, signal.SIGINT)
            code = proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    stderr = (workdir / "err.txt").read_text()
    name = "SIGTERM" if how == "sigterm-to-launcher" else "SIGINT"
    # not -9: Lightning's watcher would SIGKILL the launcher once rank 1 had exited 143
    assert code == 128 + getattr(signal, name), stderr[-2000:]
    assert processes_running(str(cfg)) == [], "a process outlived the launcher"
    check_stopped_together(record, 2, epoch=1, batch=0)
    assert f"stopped by {name}" in stderr and "--ckpt_path last" in stderr
    check_resume_point(workdir / "runs" / "tiny" / "version_0", epoch=1)
