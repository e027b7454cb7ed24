"""fgvc.train.cli: how the processes of a launch become one job."""

from __future__ import annotations

import pytest
from lightning_fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

from fgvc.train.cli import build_cli, slurm_interactive_tasks
from tests.test_commands_train import workdir, write_config

__all__ = ["workdir"]  # the fixture, shared with test_commands_train


def srun_task(monkeypatch: pytest.MonkeyPatch, job_name: str, rank: int, tasks: int = 2) -> None:
    """The environment ``srun --ntasks 2`` gives task ``rank`` on one node."""
    for var in ("SLURM_JOB_NAME", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    values = {
        "SLURM_JOB_NAME": job_name,
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": str(tasks),
        "SLURM_STEP_NUM_TASKS": str(tasks),
        "SLURM_NTASKS_PER_NODE": str(tasks),
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank),
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
    }
    for var, value in values.items():
        monkeypatch.setenv(var, value)


@pytest.mark.parametrize("job_name", ["interactive", "bash"])
def test_srun_tasks_in_interactive_mode_are_one_job(workdir, monkeypatch, job_name):
    """Lightning ignores SLURM when the job is named bash/interactive, so each srun task
    launched a job of its own; fgvc makes them ranks 0 and 1 of one job."""
    cfg = write_config(workdir, devices=2, strategy="ddp", max_epochs=1)
    for rank in (0, 1):
        srun_task(monkeypatch, job_name, rank)
        assert slurm_interactive_tasks() == 2
        cli = build_cli(["--config", str(cfg)], run=False)
        strategy = cli.trainer.strategy
        assert isinstance(strategy.cluster_environment, SLURMEnvironment)
        assert (strategy.world_size, strategy.global_rank) == (2, rank)


def test_one_interactive_task_and_a_plain_shell_are_left_alone(workdir, monkeypatch):
    cfg = write_config(workdir, devices=2, strategy="ddp", max_epochs=1)
    srun_task(monkeypatch, "interactive", 0, tasks=1)
    assert slurm_interactive_tasks() == 1
    cli = build_cli(["--config", str(cfg)], run=False)
    environment = getattr(cli.trainer.strategy, "cluster_environment", None)
    assert not isinstance(environment, SLURMEnvironment)
    # a shell inside an interactive allocation (no srun task): Lightning launches
    monkeypatch.delenv("SLURM_PROCID")
    assert slurm_interactive_tasks() == 0
    cli = build_cli(["--config", str(cfg)], run=False)
    assert isinstance(cli.trainer.strategy.cluster_environment, LightningEnvironment)


def test_sync_batchnorm_on_several_cpu_processes_is_one_line(workdir, capsys):
    from fgvc.commands.main import main

    cfg = write_config(workdir, devices=2, strategy="ddp", max_epochs=1)
    assert main(["fit", "--config", str(cfg), "--trainer.sync_batchnorm", "true"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sync_batchnorm" in err[0] and "GPUs" in err[0], err


def test_a_moved_key_of_an_older_config_says_where_it_went(workdir, capsys):
    """``model.iterations`` (fgvc before the head table) is ``model.head.iterations`` now."""
    import yaml

    from fgvc.commands.main import main

    cfg = write_config(workdir, max_epochs=1)
    config = yaml.safe_load(cfg.read_text())
    config["model"]["iterations"] = config["model"].pop("head")["iterations"]
    cfg.write_text(yaml.safe_dump(config))
    for args in (["--config", str(cfg)], ["--model.iterations", "3"]):
        if args[0] != "--config":
            args = ["--config", str(write_config(workdir, max_epochs=1)), *args]
        assert main(["fit", *args, "--print_config"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "model.head: {iterations: N}" in err[0], err
