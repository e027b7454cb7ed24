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
import pytorch_lightning as pl
import torch
import yaml
from torchmetrics import MeanMetric

from fgvc.commands.main import main
from fgvc.data.resume import ResumableLoader
from fgvc.data.sampler import EpochSeededSampler
from fgvc.train.callbacks import BestCheckpoint
from fgvc.train.checkpoint_io import AtomicCheckpointIO
from fgvc.train.resume import MID_EPOCH, StepCheckpoint
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


@pytest.mark.slow
def test_ctrl_c_inside_an_epoch_saves_the_step_it_stops_at(workdir):
    """One process, step checkpoints every 100 steps (none due in the 9 of the epoch):
    Ctrl-C after batch 3 - the step after it is trained and saved, exit 130."""
    folder = workdir / "run"
    stop = {"class_path": "tests.cli_helpers.SigtermAtStep", "init_args": {"batch": 3}}
    stop["init_args"]["signame"] = "SIGINT"
    tiny(folder, devices=1, every=100, epochs=1, callbacks=[stop])
    proc = fit(folder)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "stopped by SIGINT in epoch 0 (step 5); continue from this step" in proc.stderr
    saved = torch.load(folder / RUN / "checkpoints" / "last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (0, 5)
    (loader,) = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader["batches"] == 5 and loader["epoch_batches"] == 9
    assert [r[1] for r in records(folder, 0)] == [0, 1, 2, 3, 4]


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


# -- in one process, with Lightning alone: accumulation and validation inside the epoch -------


class Pairs(torch.utils.data.Dataset):
    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(3)
        self.x, self.y = (
            torch.randn(40, 4, generator=gen),
            torch.randint(0, 2, (40,), generator=gen),
        )

    def __len__(self) -> int:
        return 40

    def __getitem__(self, item):
        return self.x[item[0]], self.y[item[0]]


class Tiny(pl.LightningModule):
    """A linear classifier whose epoch loss is a torchmetrics mean (restored from a
    checkpoint inside an epoch), trained from a :class:`ResumableLoader`."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(4, 2)
        self.mean = MeanMetric()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.mean(loss.detach())
        self.log("loss", self.mean, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/top1", self.net(batch[0]).sum())

    def configure_optimizers(self):
        return torch.optim.SGD(self.net.parameters(), lr=0.5, momentum=0.9)

    def train_dataloader(self):
        trainer = self.trainer
        sampler = EpochSeededSampler(40, 1, lambda: trainer.current_epoch)
        return ResumableLoader(Pairs(), batch_size=4, sampler=sampler)  # 10 batches

    def val_dataloader(self):
        return torch.utils.data.DataLoader(Pairs().x[:4], batch_size=4)


class Boom(Exception):
    pass


class Counting(StepCheckpoint):
    """Records where it saved: (global step, batch index in the epoch)."""

    def __init__(self, every_n_steps: int) -> None:
        super().__init__(every_n_steps)
        self.saved: list[tuple[int, int]] = []

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        self.saved.append((trainer.global_step, trainer.fit_loop.epoch_loop.batch_idx))
        super()._save_checkpoint(trainer, filepath)


class Record(pl.Callback):
    """Each epoch's loss; raises :class:`Boom` after global step ``stop`` (a process that
    dies)."""

    def __init__(self, stop: int | None = None) -> None:
        self.stop, self.losses = stop, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.stop:  # after its checkpoint
            raise Boom

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.losses.append(float(trainer.callback_metrics["loss"]))


def lightning_fit(
    root: Path, record: Record, ckpt_path: str | None = None
) -> tuple[pl.Trainer, Counting]:
    last = Counting(every_n_steps=2)
    trainer = pl.Trainer(
        max_epochs=2,
        accumulate_grad_batches=2,  # 5 steps an epoch
        val_check_interval=4,  # validation after batches 3 and 7 (and the epoch's end: 9)
        callbacks=[BestCheckpoint(), last, record],
        default_root_dir=root,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        plugins=[AtomicCheckpointIO()],
    )
    trainer.fit(Tiny(), ckpt_path=ckpt_path)
    return trainer, last


@pytest.mark.parametrize("stop", [7, 8], ids=["after-validation", "step-checkpoint"])
def test_steps_inside_accumulation_and_before_validation_wait_and_resume_exactly(tmp_path, stop):
    """Every 2 steps, 2 batches a step, validation every 4 batches (after which Lightning
    saves last.ckpt too, also inside the epoch): steps 2 and 4 end at batches 3 and 7, where
    validation follows and Lightning's save after it takes the step's place; step 5 is the
    epoch's end; in epoch 1, step 8 ends at batch 5 and is saved there. A run that dies
    after step 8 resumes from its checkpoint and ends as the run that never stopped:
    weights, each epoch's loss; the same from the save after step 7's validation."""
    straight = Record()
    done, saves = lightning_fit(tmp_path / "straight", straight)
    assert saves.saved == [(2, 3), (4, 7), (6, 1), (7, 3), (8, 5), (9, 7)]

    broken = Record(stop=stop)
    with pytest.raises(Boom):
        lightning_fit(tmp_path / "broken", broken)
    last = tmp_path / "broken" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == stop and MID_EPOCH in saved
    resumed = Record()
    again, _ = lightning_fit(tmp_path / "broken", resumed, ckpt_path=str(last))
    assert broken.losses + resumed.losses == straight.losses
    for key, value in done.lightning_module.state_dict().items():
        assert torch.equal(again.lightning_module.state_dict()[key], value), key
