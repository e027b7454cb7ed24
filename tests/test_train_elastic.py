"""fgvc.train.elastic: a torchrun launch with --max-restarts survives a killed process -
the restarted processes meet again and continue the run from its last.ckpt."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import torch

from tests.test_commands_train import read_metrics, subprocess_env, workdir, write_config

__all__ = ["workdir"]  # the fixture, shared with test_commands_train

KILL = (
    '[{"class_path": "tests.cli_helpers.KillRankAtEpochEnd", "init_args": {"rank": 1, "epoch": 1}}]'
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def step_records(workdir, name: str) -> list[list]:
    return [json.loads(line) for line in (workdir / "record" / name).read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("rendezvous", "inside_epoch"),
    # c10d is the README template's rendezvous; it restarts inside an epoch (step
    # checkpoints), static at an epoch's end: each rendezvous and each resume point once
    [("static", False), ("c10d", True)],
    ids=["static", "c10d-inside-an-epoch"],
)
def test_a_killed_process_is_restarted_and_the_run_continues(workdir, rendezvous, inside_epoch):
    """2 gloo processes; rank 1 is SIGKILLed at the end of epoch 1 (before that epoch's
    checkpoint): torchrun restarts both, which continue the same run folder from epoch 0's
    last.ckpt and finish it - every epoch in metrics.csv once, one run folder. With step
    checkpoints (every 2 of the 4 steps an epoch, README's torchrun template) the kill comes
    after step 7, inside epoch 1, and the restart continues from step 6: epoch 1's third
    batch, the same images the killed attempt had there."""
    cfg = write_config(workdir, max_epochs=3, devices=2, strategy="ddp")
    port = free_port()
    where = ["--master-port", str(port)]
    if rendezvous == "c10d":
        where = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"]
    fit = ["--trainer.callbacks", KILL]
    if inside_epoch:
        kill = {"rank": 1, "epoch": 1, "batch": 2}
        callbacks = [
            {"class_path": "tests.cli_helpers.KillRankAtStep", "init_args": kill},
            {"class_path": "tests.cli_helpers.BatchRecorder", "init_args": {"record": "record"}},
        ]
        fit = ["--trainer.callbacks", json.dumps(callbacks), "--data.init_args.batch_size", "2"]
        fit += ["--checkpoint_every_n_steps", "2"]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--max-restarts", "1", *where, "-m", "fgvc", "fit", "--config", str(cfg), *fit,
    ]  # fmt: skip
    proc = subprocess.run(
        command,
        cwd=workdir,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=420,  # bounded: the restarted processes reach training again
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    run = workdir / "runs" / "tiny" / "version_0"
    assert f"torchrun restart 1: continuing {run}" in log
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]
    record = json.loads((run / "run.json").read_text())
    assert record["command"] == "fit" and record["launcher"] == "torchrun"
    assert (run / "config.resume-1.yaml").is_file()
    assert [r["epoch"] for r in read_metrics(run) if r.get("val/top1")] == ["0", "1", "2"]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    if inside_epoch:
        first, again = (
            step_records(workdir, "rank0.jsonl"),
            step_records(workdir, "rank0.restart1.jsonl"),
        )
        assert [r[:2] for r in again] == [[1, 2], [1, 3]] + [[2, b] for b in range(4)]
        assert again[0] == next(r for r in first if r[:2] == [1, 2])
