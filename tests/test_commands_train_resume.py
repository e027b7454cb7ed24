"""`fgvc fit --ckpt_path ...` continues the run the user means, on the schedule of the
config given; `fgvc validate|test` of a run's checkpoint add to that run; a checkpoint's
hyperparameters never choose what is built or read."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from fgvc.commands.main import main
from tests.test_commands_train import read_metrics, run_fgvc, workdir, write_config

__all__ = ["workdir"]  # the fixture, shared with test_commands_train

LR, LR_BATCH, WARMUP = 0.01, 10, 0.5  # write_config's recipe: cosine, warmup half an epoch
TRAIN_IMAGES = 18  # write_config's data: 3 classes x 8 images, a quarter held out


def cosine_lr(global_batch: int, step: int, per_epoch: int, epochs: int) -> float:
    """The backbone's rate at ``step`` by the recipe's definition (linear scaling, warmup,
    cosine to 0 at the last step), written out independently of fgvc.train.optim."""
    base = LR * global_batch / LR_BATCH
    warmup, total = round(WARMUP * per_epoch), epochs * per_epoch
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))


def epoch_start_lrs(run) -> list[tuple[int, float]]:
    """(step, backbone rate) logged at the start of each epoch."""
    return [
        (int(r["step"]), float(r["lr-SGD/backbone"]))
        for r in read_metrics(run)
        if r.get("lr-SGD/backbone")
    ]


def weights(run) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_training_longer_follows_the_configured_schedule(workdir, caplog):
    """A finished 2-epoch cosine run resumed with 3 epochs trains the third at the rate of
    a 3-epoch schedule (it used to train at 0: the old schedule was restored), then the
    same again with half the global batch (the schedule converts its position)."""
    cfg = write_config(workdir, max_epochs=2)
    assert main(["fit", "--config", str(cfg)]) == 0
    run = workdir / "runs" / "tiny" / "version_0"
    before = weights(run)
    per_epoch = epoch_start_lrs(run)[1][0]  # the step at which epoch 1 started
    assert per_epoch == TRAIN_IMAGES // 4  # batches of 4, the ragged last one dropped
    caplog.clear()

    assert (
        main(["fit", "--config", str(cfg), "--trainer.max_epochs", "3", "--ckpt_path", "last"]) == 0
    )
    assert f"in the run folder {run}" in caplog.text
    assert not (run.parent / "version_1").exists()
    step, lr = epoch_start_lrs(run)[-1]
    assert step == 2 * per_epoch
    assert lr == pytest.approx(cosine_lr(4, step, per_epoch, 3), rel=1e-6) and lr > 1e-4
    after = weights(run)
    moved = [k for k in before if k.endswith("weight") and not torch.equal(before[k], after[k])]
    assert len(moved) > 10  # the added epoch trained

    # 4 more epochs, batch 2 instead of 4: twice the steps an epoch, half the rate
    args = ["--trainer.max_epochs", "4", "--data.init_args.batch_size", "2"]
    assert main(["fit", "--config", str(cfg), *args, "--ckpt_path", "last"]) == 0
    new_per_epoch = TRAIN_IMAGES // 2
    assert f"{per_epoch} steps an epoch before, {new_per_epoch} now" in caplog.text
    step, lr = epoch_start_lrs(run)[-1]
    assert lr == pytest.approx(cosine_lr(2, 3 * new_per_epoch, new_per_epoch, 4), rel=1e-6)
    assert lr > 1e-4


@pytest.mark.slow
def test_last_means_the_newest_run_or_says_why_not(workdir, capsys):
    cfg = write_config(workdir, max_epochs=1)
    assert main(["fit", "--config", str(cfg)]) == 0
    first = workdir / "runs" / "tiny" / "version_0"
    # a newer run of the same config, stopped before its first epoch ended (no last.ckpt)
    callback = '[{"class_path": "tests.cli_helpers.SigtermAtStep", "init_args": {"batch": 0}}]'
    proc = run_fgvc(workdir, "fit", "--config", str(cfg), "--trainer.callbacks", callback)
    assert proc.returncode == 143, proc.stderr[-2000:]
    second = workdir / "runs" / "tiny" / "version_1"
    assert second.is_dir() and not (second / "checkpoints" / "last.ckpt").exists()
    capsys.readouterr()

    # last: the newest run, which has nothing to resume - not silently the older one
    assert main(["fit", "--config", str(cfg), "--ckpt_path", "last"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(second) in err[0] and "nothing to resume" in err[0], err
    assert f"--ckpt_path {first}" in err[0]
    assert json.loads((first / "run.json").read_text()) == {"command": "fit"}

    # naming the run folder continues it in place, one epoch more
    more = ["--trainer.max_epochs", "2", "--ckpt_path", str(first)]
    assert main(["fit", "--config", str(cfg), *more]) == 0
    assert [r["epoch"] for r in read_metrics(first) if r.get("val/top1")] == ["0", "1"]
    assert not (workdir / "runs" / "tiny" / "version_2").exists()
    assert (first / "config.resume-1.yaml").is_file()

    # another optimizer cannot continue this one's state
    capsys.readouterr()
    other = ["--model.optimizer", "adamw", "--ckpt_path", str(first)]
    assert main(["fit", "--config", str(cfg), *other]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "optimizer sgd" in err[0] and "--model.pretrained" in err[0]


@pytest.mark.slow
def test_checkpoint_hyperparameters_do_not_choose_what_is_read(workdir, capsys):
    """A received checkpoint naming a file (or a download) as ``pretrained`` is evaluated
    with the config's network; test figures of a run's checkpoint go into that run."""
    cfg = write_config(workdir, max_epochs=1)
    assert main(["fit", "--config", str(cfg)]) == 0
    run = workdir / "runs" / "tiny" / "version_0"
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    crafted = workdir / "received.ckpt"
    checkpoint = torch.load(best, weights_only=True)
    for pretrained in ("/etc/passwd", "isqrt-imagenet"):
        checkpoint["hyper_parameters"]["pretrained"] = pretrained
        torch.save(checkpoint, crafted)
        capsys.readouterr()
        assert main(["validate", "--config", str(cfg), "--ckpt_path", str(crafted)]) == 0
        assert "passwd" not in capsys.readouterr().err
    assert not (workdir / "runs" / "tiny" / "version_3").exists()

    assert main(["test", "--config", str(cfg), "--ckpt_path", str(best)]) == 0
    assert sorted(p.name for p in (workdir / "runs" / "tiny").iterdir()) == [
        "version_0",
        "version_1",
        "version_2",
    ]  # the two validations of a loose file got folders of their own; the test did not
    assert (run / "test_per_class.csv").is_file() and (run / "config.test-1.yaml").is_file()
    assert any(r.get("test/top1") for r in read_metrics(run))
    assert json.loads((run / "run.json").read_text()) == {"command": "fit"}


def test_no_logger_still_gives_the_run_its_folder(workdir):
    cfg = write_config(workdir, max_epochs=1)
    config = yaml.safe_load(cfg.read_text())
    config["trainer"]["logger"] = False
    cfg.write_text(yaml.safe_dump(config))
    for _ in range(2):
        assert main(["fit", "--config", str(cfg), "--trainer.enable_progress_bar", "false"]) == 0
    runs = workdir / "runs"
    assert not (runs / "checkpoints").exists() and not (runs / "config.yaml").exists()
    for version in (0, 1):
        run = runs / "fgvc" / f"version_{version}"
        assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
        assert (run / "export" / "model.json").is_file()
    assert not (runs / "wandb").exists()


@pytest.mark.slow
def test_a_resume_does_not_read_pretrained_weights_that_are_gone(workdir, caplog):
    """A fine-tune started from another run's checkpoint resumes after that file was
    removed: the checkpoint's weights replace the starting ones, the source is not read."""
    cfg = write_config(workdir, max_epochs=1)
    assert main(["fit", "--config", str(cfg)]) == 0
    start = workdir / "start.ckpt"
    (workdir / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt").rename(start)
    given = ["--model.pretrained", str(start), "--name", "finetune"]
    assert main(["fit", "--config", str(cfg), *given]) == 0
    run = workdir / "runs" / "finetune" / "version_0"
    record = json.loads((run / "run.json").read_text())["pretrained"]
    assert record["file"] == str(start)
    start.unlink()  # the run it started from is gone
    caplog.clear()
    resume = ["--trainer.max_epochs", "2", "--ckpt_path", "last"]
    assert main(["fit", "--config", str(cfg), *given, *resume]) == 0
    assert f"model.pretrained {start}: not read, the weights come from" in caplog.text
    assert json.loads((run / "run.json").read_text())["pretrained"] == record
    assert max(int(r["epoch"]) for r in read_metrics(run) if r.get("epoch")) == 1
