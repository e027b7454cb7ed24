"""fgvc.train.callbacks: the best checkpoint follows ``model.monitor`` (maximized, or
minimized for a loss), keeps its state across a resume, and a bad monitor is one line; a
resumed run keeps its best checkpoint's score when its folder is named by another path or was
moved (Lightning alone forgets it, and keeps a worse checkpoint as a second best)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fgvc.commands.main import main
from fgvc.runs import best_checkpoint_in_run
from fgvc.train.callbacks import BestCheckpoint, RunCheckpoint, best_checkpoint
from fgvc.train.cli import build_cli
from fgvc.train.module import FGVCClassifier
from fgvc.train.optim import check_recipe
from fgvc.train.resume import checkpoint_callbacks
from tests.test_commands_train import workdir, write_config

__all__ = ["workdir"]  # the fixture, shared with test_commands_train

# what validation "measures" in epochs 0, 1, 2: each figure has its best in another epoch
SCRIPT = {
    "val/top1": [0.6, 0.5, 0.55],
    "val/mean_class_acc": [0.3, 0.7, 0.5],
    "val/loss": [1.0, 0.9, 0.4],
}


class Scripted(pl.LightningModule):
    """Logs :data:`SCRIPT`'s figures of the current epoch; ``monitor`` as fgvc's module has it."""

    def __init__(self, monitor: str | None = None) -> None:
        super().__init__()
        if monitor is not None:
            self.save_hyperparameters()
        self.layer = nn.Linear(2, 2)

    def _loader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(2, 2)), batch_size=2)

    train_dataloader = val_dataloader = _loader

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        self.log_dict({k: v[self.current_epoch] for k, v in SCRIPT.items()})

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def fit(root: Path, monitor: str | None, epochs: int, ckpt_path: str | None = None):
    callbacks = checkpoint_callbacks()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
    )
    trainer.fit(Scripted(monitor), ckpt_path=ckpt_path)
    return trainer, callbacks


@pytest.mark.parametrize("monitor", [None, "val/top1", "val/mean_class_acc", "val/loss"])
def test_the_best_checkpoint_is_the_best_epoch_of_the_monitor(tmp_path, monitor):
    trainer, (best, last) = fit(tmp_path, monitor, 3)
    name = monitor or "val/top1"
    values = SCRIPT[name]
    pick = min if name.endswith("loss") else max
    epoch = values.index(pick(values))
    assert best_checkpoint(trainer) is best and isinstance(best, BestCheckpoint)
    assert (best.monitor, best.mode) == (name, "min" if pick is min else "max")
    assert float(best.best_model_score) == pytest.approx(values[epoch])
    metric = name.split("/")[1]
    assert (
        Path(best.best_model_path).name
        == f"best-epoch{epoch:03d}-{metric}_{values[epoch]:.4f}.ckpt"
    )
    assert last.monitor is None and Path(last.best_model_path).name == "last.ckpt"


def test_a_resumed_run_keeps_the_best_of_its_monitor(tmp_path):
    _, (best, last) = fit(tmp_path, "val/mean_class_acc", 2)
    first_best = best.best_model_path
    # saved under ModelCheckpoint's key (as before model.monitor), which fgvc.runs reads
    saved = torch.load(last.best_model_path, weights_only=True)["callbacks"]
    assert "ModelCheckpoint{'monitor': 'val/mean_class_acc', 'mode': 'max'," in str(list(saved))
    fit(tmp_path / "other", "val/top1", 2)  # a second best-*.ckpt beside: the state decides
    for path in (tmp_path / "other" / "checkpoints").glob("best-*"):
        path.rename(tmp_path / "checkpoints" / path.name)
    os.utime(last.best_model_path)  # last.ckpt, the newest as in a run, names the best
    assert best_checkpoint_in_run(tmp_path) == Path(first_best)
    # epoch 2 (0.5) does not beat epoch 1 (0.7): the restored state must say so
    _, (best, _) = fit(tmp_path, "val/mean_class_acc", 3, ckpt_path=last.best_model_path)
    assert best.best_model_path == first_best
    assert float(best.best_model_score) == pytest.approx(0.7)


def test_monitor_choices_are_what_validation_logs():
    tiny = dict(arch="resnet18", reduce_dim=8, head={"iterations": 3}, pretrained=None)
    four = FGVCClassifier(num_classes=4, val_tta=False, **tiny)
    assert four.monitor_choices() == ["val/loss", "val/mean_class_acc", "val/top1"]
    six = FGVCClassifier(num_classes=6, monitor="val/mean_class_acc_tta", **tiny)
    assert set(six.monitor_choices()) == {
        f"val/{m}{s}" for m in ("top1", "mean_class_acc", "top5") for s in ("", "_tta")
    } | {"val/loss"}
    with pytest.raises(ValueError) as err:
        FGVCClassifier(num_classes=4, val_tta=False, monitor="val/top5", **tiny)
    assert str(err.value) == (
        "model.monitor 'val/top5' is not logged by validation; choose one of val/loss, "
        "val/mean_class_acc, val/top1"
    )
    hp = dict(four.hparams)
    for key, value, message in [
        ("loss", "focal", "model.loss 'focal': choose one of ce, weighted, logit_adjusted"),
        ("logit_adjust_tau", -0.5, "model.logit_adjust_tau must be >= 0, got -0.5"),
    ]:
        with pytest.raises(ValueError, match=f"^{message}$"):
            check_recipe({**hp, key: value})


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "--model.monitor",
            "val/acc",
            "model.monitor 'val/acc' is not logged by validation; choose one of val/loss, "
            "val/mean_class_acc, val/mean_class_acc_tta, val/top1, val/top1_tta",
        ),
        (
            "--data.init_args.sampler",
            "weighted",
            "data.init_args.sampler 'weighted': choose uniform or balanced",
        ),
        ("--model.logit_adjust_tau", "-1", "model.logit_adjust_tau must be >= 0, got -1.0"),
    ],
)
def test_bad_imbalance_options_on_the_command_line_are_one_line(
    workdir, capsys, option, value, message
):
    cfg = write_config(workdir)
    assert main(["fit", "--config", str(cfg), option, value]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"fgvc fit: error: {message}"]
    assert not (workdir / "runs" / "tiny").exists()


def test_the_imbalance_options_reach_the_run(workdir):
    cfg = write_config(workdir)
    args = ["--config", str(cfg), "--data.init_args.sampler", "balanced"]
    args += ["--model.loss", "logit_adjusted", "--model.logit_adjust_tau", "0.5"]
    cli = build_cli([*args, "--model.monitor", "val/mean_class_acc"], run=False)
    assert cli.datamodule.sampler == "balanced"
    hp = cli.model.hparams
    assert (hp.loss, hp.logit_adjust_tau, hp.monitor) == (
        "logit_adjusted",
        0.5,
        "val/mean_class_acc",
    )
    (best,) = [c for c in cli.trainer.checkpoint_callbacks if isinstance(c, BestCheckpoint)]
    best.setup(cli.trainer, cli.model, "fit")  # what fit does first
    assert (best.monitor, best.mode) == ("val/mean_class_acc", "max")


# -- a run folder named by another path, or moved ---------------------------------------------


def state(folder: str) -> dict:
    best = os.path.join(folder, "best-epoch001-top1_0.5000.ckpt")
    return {
        "monitor": "val/top1",
        "best_model_score": 0.5,
        "best_model_path": best,
        "current_score": 0.4,
        "dirpath": folder,
        "best_k_models": {best: 0.5},
        "kth_best_model_path": best,
        "kth_value": 0.5,
        "last_model_path": "",
    }


def test_same_folder_by_another_path_keeps_the_best(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "x" / "checkpoints").mkdir(parents=True)
    callback = RunCheckpoint(
        monitor="val/top1", mode="max", dirpath=tmp_path / "runs/x/checkpoints"
    )
    callback.load_state_dict(state("runs/x/checkpoints"))  # saved with the relative path
    assert callback.best_model_score == 0.5
    best = str(tmp_path / "runs/x/checkpoints/best-epoch001-top1_0.5000.ckpt")
    assert callback.best_model_path == best and callback.best_k_models == {best: 0.5}


def test_moved_run_folder_keeps_the_best(tmp_path):
    new = tmp_path / "copied" / "checkpoints"
    new.mkdir(parents=True)
    (new / "best-epoch001-top1_0.5000.ckpt").write_bytes(b"")
    callback = RunCheckpoint(monitor="val/top1", mode="max", dirpath=new)
    callback.load_state_dict(state("/cluster/scratch/runs/x/checkpoints"))
    assert callback.best_model_score == 0.5 and callback.kth_value == 0.5
    assert callback.best_model_path == str(new / "best-epoch001-top1_0.5000.ckpt")


def test_another_folder_starts_afresh_as_lightning_does(tmp_path):
    new = tmp_path / "version_1" / "checkpoints"
    new.mkdir(parents=True)
    callback = RunCheckpoint(monitor="val/top1", mode="max", dirpath=new)
    callback.load_state_dict(state(str(tmp_path / "version_0" / "checkpoints")))
    assert callback.best_model_score is None and callback.best_k_models == {}
