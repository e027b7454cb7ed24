"""fgvc.train.health: a stalled loss, a train/val gap and exploding gradients are each said
once, with their numbers; gradient norms per parameter group are logged (scripted runs whose
figures are known in advance)."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch

from fgvc.train.health import TrainingHealth, group_grad_norms


class Scripted(pl.LightningModule):
    """Logs the given train loss / train top-1 / val top-1 per epoch; its gradient is
    ``scale[step]`` times a fixed vector."""

    def __init__(self, losses, train_top1=None, val_top1=None, scale=None) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(4))
        self.losses, self.train_top1, self.val_top1 = losses, train_top1, val_top1
        self.scale = scale or {}

    def training_step(self, batch, batch_idx):
        epoch = self.current_epoch
        self.log("train/loss", self.losses[epoch], on_step=False, on_epoch=True)
        if self.train_top1:
            self.log("train/top1", self.train_top1[epoch], on_step=False, on_epoch=True)
        factor = self.scale.get(self.global_step, 1.0)
        return (self.w * factor).sum()  # gradient: factor per weight

    def validation_step(self, batch, batch_idx):
        if self.val_top1:
            self.log("val/top1", self.val_top1[self.current_epoch])

    def configure_optimizers(self):
        groups = [{"params": [self.w], "group": "backbone", "name": "backbone"}]
        return torch.optim.SGD(groups, lr=0.0)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=1)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(1, 1), batch_size=1)


def fit(module, epochs, tmp_path, **trainer):
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=[TrainingHealth()],
        logger=pl.loggers.CSVLogger(str(tmp_path)),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        **trainer,
    )
    trainer.fit(module)
    return trainer


def messages(record) -> list[str]:
    return [str(w.message) for w in record]


def test_a_loss_that_does_not_move_is_said_once(tmp_path):
    with pytest.warns(UserWarning) as record:
        fit(Scripted([2.30, 2.301, 2.299, 2.3005, 2.30, 2.30]), 6, tmp_path, log_every_n_steps=50)
    said = [m for m in messages(record) if "has not moved" in m]
    assert len(said) == 1 and "in 4 epochs (2.3 -> 2.3" in said[0] and "model.lr 10x" in said[0]


def test_a_loss_that_moves_is_not_reported(tmp_path, recwarn):
    fit(Scripted([2.3, 2.0, 1.7, 1.5, 1.3]), 5, tmp_path)
    assert not [m for m in messages(recwarn) if "has not moved" in m]


def test_train_and_val_parting_ways_is_said_after_three_epochs(tmp_path):
    module = Scripted(
        [2.3, 1.5, 1.0, 0.5, 0.2, 0.1],
        train_top1=[0.3, 0.6, 0.9, 0.99, 1.0, 1.0],
        val_top1=[0.3, 0.5, 0.55, 0.5, 0.5, 0.5],  # gap > 0.3 from epoch 2 on
    )
    with pytest.warns(UserWarning) as record:
        fit(module, 6, tmp_path)
    said = [m for m in messages(record) if "against val top-1" in m]
    assert len(said) == 1 and said[0].startswith("train top-1 1.000 against val top-1 0.500 for 3")


def test_an_exploding_gradient_is_said_and_norms_are_logged(tmp_path):
    scale = {9: 1e3}  # step 9 (the 10th): 1000x the gradient of every other step
    with pytest.warns(UserWarning) as record:
        trainer = fit(Scripted([1.0] * 3, scale=scale), 3, tmp_path, log_every_n_steps=1)
    said = [m for m in messages(record) if "gradient norm of backbone" in m]
    assert len(said) == 1 and "jumped to 2e+03, 1000x its median so far (2)" in said[0]
    logged = trainer.logged_metrics
    assert float(logged["grad_norm/backbone"]) == pytest.approx(2.0)  # the last step's


def test_group_grad_norms_takes_the_halves_of_a_group_together():
    a, b, c = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    a.grad, b.grad, c.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0]), torch.ones(2)
    groups = [
        {"params": [a], "group": "backbone"},
        {"params": [b], "group": "backbone"},  # its no-decay half
        {"params": [c], "group": "classifier"},
    ]
    norms = group_grad_norms(torch.optim.SGD(groups, lr=0.1))
    assert norms == {"backbone": pytest.approx(5.0), "classifier": pytest.approx(math.sqrt(2))}


def test_a_resumed_run_keeps_the_history_so_far(tmp_path):
    """3 epochs, saved, resumed to 6: the unmoved loss is said once, over all 6 epochs -
    the resumed run does not start its history again (it would see only 3 epochs)."""
    losses = [2.30, 2.301, 2.299, 2.3005, 2.30, 2.30]
    first = fit(Scripted(losses), 3, tmp_path / "a", log_every_n_steps=50)
    ckpt = tmp_path / "epoch3.ckpt"
    first.save_checkpoint(ckpt)
    (health,) = [c for c in first.callbacks if isinstance(c, TrainingHealth)]
    assert len(health.state_dict()["losses"]) == 3
    trainer = pl.Trainer(
        max_epochs=6,
        callbacks=[TrainingHealth()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        log_every_n_steps=50,
    )
    with pytest.warns(UserWarning) as record:
        trainer.fit(Scripted(losses), ckpt_path=ckpt)
    said = [m for m in messages(record) if "has not moved" in m]
    assert len(said) == 1 and "in 4 epochs (2.3 -> 2.3" in said[0]
