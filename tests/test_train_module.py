"""FGVCClassifier: parameter groups, schedules, freezing, metrics, mixed precision."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from fgvc.errors import ConfigError
from fgvc.train.module import FGVCClassifier
from fgvc.train.optim import Schedule, check_recipe

TINY = dict(arch="resnet18", num_classes=4, reduce_dim=8, head={"iterations": 3}, pretrained=None)


def make_loader(n: int = 16, size: int = 32, classes: int = 4, seed: int = 0, batch: int = 8):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=gen)
    labels = torch.arange(n) % classes
    return DataLoader(TensorDataset(images, labels), batch_size=batch)


def make_trainer(**kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=1,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def test_parameter_groups_get_their_lr_and_weight_decay():
    module = FGVCClassifier(
        **TINY,
        lr=0.01,
        weight_decay=1e-3,
        lr_mult_backbone=0.5,
        lr_mult_head=2.0,
        lr_mult_classifier=5.0,
        scheduler="constant",
    )
    trainer = make_trainer(max_steps=1)
    trainer.fit(module, make_loader(n=8))
    groups = {g["name"]: g for g in trainer.optimizers[0].param_groups}
    assert set(groups) == {
        "backbone",
        "backbone_no_decay",
        "head",
        "head_no_decay",
        "classifier",
        "classifier_no_decay",
    }
    expected_lr = {"backbone": 0.005, "head": 0.02, "classifier": 0.05}
    for name, group in groups.items():
        base = name.replace("_no_decay", "")
        assert group["lr"] == pytest.approx(expected_lr[base])
        assert group["weight_decay"] == (0.0 if name.endswith("_no_decay") else 1e-3)
    net = module.model
    by_param = {id(p): name for name, g in groups.items() for p in g["params"]}
    assert by_param[id(net.backbone.conv1.weight)] == "backbone"
    assert by_param[id(net.backbone.bn1.weight)] == "backbone_no_decay"
    assert by_param[id(net.head.conv.weight)] == "head"
    assert by_param[id(net.head.bn.bias)] == "head_no_decay"
    assert by_param[id(net.classifier.weight)] == "classifier"
    assert by_param[id(net.classifier.bias)] == "classifier_no_decay"
    # every parameter exactly once
    assert sorted(by_param) == sorted(id(p) for p in module.parameters())
    assert sum(len(g["params"]) for g in groups.values()) == len(list(module.parameters()))


class BatchData(pl.LightningDataModule):
    """A DataModule that says its per-device batch size, as fgvc's do."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return make_loader(n=24, batch=self.batch_size)


@pytest.mark.parametrize(
    "optimizer, scaling, factor, said",
    [
        ("sgd", "linear", 4 * 3 / 10, "linear scaling;"),
        ("sgd", "auto", 4 * 3 / 10, "linear scaling (auto for sgd)"),
        ("adamw", "auto", (4 * 3 / 10) ** 0.5, "sqrt scaling (auto for adamw)"),
        ("sgd", "sqrt", (4 * 3 / 10) ** 0.5, "sqrt scaling;"),
        ("adamw", "none", 1.0, "model.lr_scaling: none"),
    ],
)
def test_lr_follows_the_global_batch(optimizer, scaling, factor, said, caplog):
    """model.lr is for lr_batch_size images a step; the run scales it by global batch / that
    (linear), its square root (sqrt), by the optimizer's usual rule (auto: linear for SGD,
    square root for AdamW), or not at all."""
    module = FGVCClassifier(
        **TINY,
        optimizer=optimizer,
        lr=0.01,
        lr_batch_size=10,
        lr_scaling=scaling,
        scheduler="constant",
    )
    trainer = make_trainer(max_steps=1, accumulate_grad_batches=3)
    with caplog.at_level("INFO"):
        trainer.fit(module, datamodule=BatchData(4))
    lrs = {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}
    assert lrs["backbone"] == pytest.approx(0.01 * factor)
    assert lrs["classifier"] == pytest.approx(0.05 * factor)  # the x5 multiplier on top
    assert f"learning rate {0.01 * factor:.4g} ({said}" in caplog.text
    assert "global batch 12 = 1 process(es) x 4 images x 3 accumulated" in caplog.text


@pytest.mark.slow
def test_channels_last_and_compile_train_the_same_network():
    """Memory format and the compiler change speed, not results or checkpoint keys."""

    def run(**options):
        pl.seed_everything(0, verbose=False)
        module = FGVCClassifier(**TINY, scheduler="constant", **options)
        trainer = make_trainer(max_steps=2, limit_val_batches=1)
        trainer.fit(module, make_loader(n=8, batch=4), make_loader(n=8, batch=4))
        return module, float(trainer.callback_metrics["val/loss"])

    plain, loss = run()
    for options in ({"channels_last": True}, {"compile": "aot_eager", "channels_last": False}):
        module, other = run(**options)
        assert other == pytest.approx(loss, abs=1e-5), options
        assert list(module.state_dict()) == list(plain.state_dict())
        conv = module.model.backbone.conv1.weight
        assert conv.is_contiguous(memory_format=torch.channels_last) == bool(
            options.get("channels_last")
        )


def test_step_schedule_shape():
    s = Schedule(
        "step", steps_per_epoch=10, total_steps=100, milestones=[3, 6], gamma=0.1, warmup_epochs=0
    )
    assert [s(0), s(29), s(30), s(59), s(60), s(99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_schedule_with_warmup():
    s = Schedule(
        "cosine", steps_per_epoch=10, total_steps=100, milestones=[], gamma=0.1, warmup_epochs=2
    )
    warm = [s(i) for i in range(20)]
    assert warm == pytest.approx([(i + 1) / 20 for i in range(20)])
    assert s(20) == pytest.approx(1.0)
    for step in (20, 40, 60, 80, 99):
        progress = (step - 20) / 80
        assert s(step) == pytest.approx(0.5 * (1 + math.cos(math.pi * progress)))
    assert s(100) == pytest.approx(0.0, abs=1e-12)


def test_schedule_edges():
    # one step per epoch: the milestone epoch is the milestone step
    assert Schedule("step", 1, 10, [2], 0.1, 0)(2) == pytest.approx(0.1)
    # cosine reaches 0 at the last step, and stays there past it
    assert Schedule("cosine", 1, 1, [], 0.1, 0)(1) == pytest.approx(0.0, abs=1e-12)
    assert Schedule("cosine", 1, 2, [], 0.1, 1.0)(2) == pytest.approx(0.0, abs=1e-12)
    assert Schedule("cosine", 10, 100, [], 0.1, 2)(150) == pytest.approx(0.0, abs=1e-12)


def test_frozen_parameters_stay_out_of_the_groups():
    from fgvc.train.optim import parameter_groups

    net = FGVCClassifier(**TINY).model
    net.head.bn.weight.requires_grad_(False)  # the first of the BatchNorm's parameters
    groups = {
        g["name"]: g["params"]
        for g in parameter_groups(net, 0.1, 1e-4, {"backbone": 1.0, "head": 1.0, "classifier": 1.0})
    }
    ids = {id(p) for p in groups["head_no_decay"]}
    assert id(net.head.bn.bias) in ids and id(net.head.bn.weight) not in ids


def test_frozen_epochs_gate_every_schedule():
    for kind in ("step", "cosine", "constant"):
        s = Schedule(kind, 5, 50, [8], 0.1, 1.0, frozen_epochs=2)
        assert all(s(i) == 0 for i in range(10)), kind
        assert s(10) > 0, kind


class _Snapshots(pl.Callback):
    def __init__(self):
        self.states = []

    def on_train_epoch_end(self, trainer, pl_module):
        net = pl_module.model
        self.states.append(
            {
                "conv1": net.backbone.conv1.weight.detach().clone(),
                "bn_mean": net.backbone.bn1.running_mean.clone(),
                "head": net.head.conv.weight.detach().clone(),
                "fc": net.classifier.weight.detach().clone(),
            }
        )


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["step", "cosine", "constant"])
def test_freeze_schedule_holds_then_releases_backbone(scheduler):
    torch.manual_seed(0)
    module = FGVCClassifier(
        **TINY,
        lr=0.05,
        scheduler=scheduler,
        milestones=[5],
        warmup_epochs=0.5,
        freeze_backbone_epochs=1,
    )
    start = {
        "conv1": module.model.backbone.conv1.weight.detach().clone(),
        "bn_mean": module.model.backbone.bn1.running_mean.clone(),
        "head": module.model.head.conv.weight.detach().clone(),
    }
    snaps = _Snapshots()
    make_trainer(max_epochs=2, callbacks=[snaps]).fit(module, make_loader())
    first, second = snaps.states
    torch.testing.assert_close(first["conv1"], start["conv1"], rtol=0, atol=0)
    torch.testing.assert_close(first["bn_mean"], start["bn_mean"], rtol=0, atol=0)
    assert not torch.equal(first["head"], start["head"])  # head trains while frozen
    assert not torch.equal(second["conv1"], first["conv1"])  # then the backbone moves
    assert not torch.equal(second["bn_mean"], first["bn_mean"])


def _hand_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: int) -> dict[str, float]:
    pred = logits.argmax(1)
    top5 = logits.topk(min(5, classes), 1).indices
    per_class = [
        float((pred[labels == c] == c).float().mean())
        for c in range(classes)
        if (labels == c).any()
    ]
    return {
        "top1": float((pred == labels).float().mean()),
        "top5": float((top5 == labels[:, None]).any(1).float().mean()),
        "mean_class_acc": sum(per_class) / len(per_class),
    }


def test_eval_metrics_match_hand_computation():
    torch.manual_seed(1)
    classes = 6
    module = FGVCClassifier(**{**TINY, "num_classes": classes}, val_tta=True)
    loader = make_loader(n=30, classes=classes, seed=3, batch=7)
    # train mode BN would differ from eval: randomize the statistics so predictions vary
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    (result,) = make_trainer().validate(module, loader)
    module.eval()
    with torch.no_grad():
        images = torch.cat([b[0] for b in loader])
        labels = torch.cat([b[1] for b in loader])
        logits = module(images)
        logits_tta = 0.5 * (logits + module(images.flip(-1)))
    plain = _hand_metrics(logits, labels, classes)
    tta = _hand_metrics(logits_tta, labels, classes)
    for key, value in plain.items():
        assert result[f"val/{key}"] == pytest.approx(value, abs=1e-6), key
        assert result[f"val/{key}_tta"] == pytest.approx(tta[key], abs=1e-6), key
    loss = torch.nn.functional.cross_entropy(logits, labels)
    assert result["val/loss"] == pytest.approx(float(loss), rel=1e-5)
    assert len(set(logits.argmax(1).tolist())) > 1  # the check is not vacuous


class _GradProbe(pl.Callback):
    def __init__(self):
        self.finite = []
        self.losses = []

    def on_after_backward(self, trainer, pl_module):
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.finite.append(bool(grads) and all(torch.isfinite(g).all() for g in grads))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].detach())


def test_bf16_mixed_cpu_training_step_is_finite():
    torch.manual_seed(2)
    module = FGVCClassifier(**TINY)
    probe = _GradProbe()
    trainer = make_trainer(max_steps=2, precision="bf16-mixed", callbacks=[probe])
    trainer.fit(module, make_loader(n=16))
    assert probe.finite == [True, True]
    assert all(torch.isfinite(loss) for loss in probe.losses)
    assert module.model.classifier.weight.dtype == torch.float32  # master weights


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": -1.0}, "model.lr must be > 0"),
        ({"momentum": 1.5}, "model.momentum"),
        ({"optimizer": "rmsprop"}, "model.optimizer"),
        ({"scheduler": "poly"}, "model.scheduler"),
        ({"label_smoothing": 1.0}, "model.label_smoothing"),
        ({"class_names": ["a", "b"]}, "class_names has 2 names but num_classes=4"),
        ({"arch": "resnet7"}, "resnet7"),
    ],
)
def test_bad_recipe_values_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FGVCClassifier(**{**TINY, **kwargs})


# -- the recipe's settings reach the optimizer, the loss and the evaluation -----------------------
def fitted_optimizer(**recipe) -> torch.optim.Optimizer:
    module = FGVCClassifier(**TINY, lr=0.02, weight_decay=3e-4, scheduler="constant", **recipe)
    trainer = make_trainer(max_steps=1)
    trainer.fit(module, make_loader(n=8))
    (optimizer,) = trainer.optimizers
    (config,) = trainer.lr_scheduler_configs
    assert all(s.steps_per_epoch == 1 for s in config.scheduler.lr_lambdas)  # 1 batch
    return optimizer


def test_schedule_and_logging_follow_the_run():
    """3 batches in 1 epoch: the schedule counts 3 steps per epoch and gets the
    milestones; the loss is logged per step and per epoch, accuracies per epoch."""
    module = FGVCClassifier(**TINY, scheduler="step", milestones=[2], gamma=0.5)
    trainer = make_trainer(max_epochs=1, log_every_n_steps=1)
    trainer.fit(module, make_loader(n=24))
    (config,) = trainer.lr_scheduler_configs
    assert (config.interval, config.frequency) == ("step", 1)
    schedules = config.scheduler.lr_lambdas
    assert len(schedules) == 6
    for schedule in schedules:
        assert (schedule.kind, schedule.steps_per_epoch, schedule.total_steps) == ("step", 3, 3)
        assert (schedule.milestones, schedule.gamma) == ([2], 0.5)
    logged = set(trainer.callback_metrics)
    assert {"train/loss_step", "train/loss_epoch", "train/top1"} <= logged
    assert "train/mean_class_acc" not in logged  # its bincount would sync the GPU every step
    assert not {"train/top1_step", "train/top1_epoch"} & logged
    assert {"train/loss_step", "train/loss_epoch"} <= set(trainer.progress_bar_metrics)
    assert "train/top1" not in trainer.progress_bar_metrics


def test_accuracy_metrics_are_micro_top1_and_top5_and_macro_mean():
    from fgvc.train.module import _accuracy_metrics

    assert set(_accuracy_metrics(4, "val/")) == {"val/top1", "val/mean_class_acc"}
    assert set(_accuracy_metrics(5, "val/", "_tta")) == {
        "val/top1_tta",
        "val/mean_class_acc_tta",
        "val/top5_tta",
    }
    # unbalanced: 6 of class 0 (all right), 1 of each other class (all wrong)
    labels = torch.tensor([0] * 6 + [1, 2, 3, 4, 5])
    logits = torch.zeros(11, 6)
    logits[:6, 0] = 1.0
    for row, label in enumerate([1, 2, 3, 4, 5], start=6):
        logits[row, (label + 1) % 6] = 3.0  # wrong top-1
        logits[row, label] = 1.0  # ... but in the top 5
    logits[10, 5] = -1.0  # class 5's own image: its class is last, out of the top 5
    metrics = _accuracy_metrics(6, "val/")
    metrics.update(logits, labels)
    result = {k: float(v) for k, v in metrics.compute().items()}
    assert result["val/top1"] == pytest.approx(6 / 11)  # micro
    assert result["val/mean_class_acc"] == pytest.approx(1 / 6)  # macro: class 0 only
    assert result["val/top5"] == pytest.approx(10 / 11)  # micro top-5


def test_recipe_boundaries():
    hp = dict(FGVCClassifier(**TINY).hparams)
    fine = [
        {"momentum": 0.0},
        {"weight_decay": 0.0},
        {"lr_mult_backbone": 0.0, "lr_mult_head": 0.0, "lr_mult_classifier": 0.0},
        {"gamma": 1.0},
        {"freeze_backbone_epochs": 0},
    ]
    for values in fine:
        check_recipe({**hp, **values})
    refused = [
        ({"lr": 0.0}, "model.lr must be > 0, got 0.0"),
        ({"momentum": 1.0}, r"model.momentum must be in \[0, 1\), got 1.0"),
        ({"weight_decay": -1e-4}, "model.weight_decay must be >= 0"),
        ({"lr_mult_head": -1.0}, r"model.lr_mult_\* must be >= 0"),
        ({"gamma": 0.0}, r"model.gamma must be in \(0, 1\], got 0.0"),
        ({"gamma": 1.5}, r"model.gamma must be in \(0, 1\], got 1.5"),
        ({"freeze_backbone_epochs": -1}, "^model.freeze_backbone_epochs must be >= 0$"),
    ]
    for values, message in refused:
        with pytest.raises(ValueError, match=message):
            check_recipe({**hp, **values})


def test_sgd_carries_the_recipes_momentum():
    optimizer = fitted_optimizer(optimizer="sgd", momentum=0.8)
    assert type(optimizer) is torch.optim.SGD
    assert len(optimizer.param_groups) == 6
    for group in optimizer.param_groups:
        assert group["momentum"] == 0.8, group["name"]
        assert (group["dampening"], group["nesterov"]) == (0, False), group["name"]
        assert group["weight_decay"] == (0.0 if group["name"].endswith("_no_decay") else 3e-4)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.02)  # backbone x 1
    assert optimizer.defaults["momentum"] == 0.8
    # the buffers the momentum keeps: SGD without momentum has none
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    assert state.get("momentum_buffer") is not None


def test_adamw_is_adamw_with_the_groups_rates_and_decay():
    optimizer = fitted_optimizer(optimizer="adamw", lr_mult_head=3.0)
    assert type(optimizer) is torch.optim.AdamW
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == pytest.approx(
        {
            "backbone": 0.02,
            "backbone_no_decay": 0.02,
            "head": 0.06,
            "head_no_decay": 0.06,
            "classifier": 0.1,
            "classifier_no_decay": 0.1,
        }
    )
    for group in optimizer.param_groups:
        assert group["weight_decay"] == (0.0 if group["name"].endswith("_no_decay") else 3e-4)
        assert group["betas"] == (0.9, 0.999) and not group["amsgrad"]
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    assert {"exp_avg", "exp_avg_sq"} <= set(state)  # Adam moments, not SGD buffers


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_training_loss_is_label_smoothed_cross_entropy(smoothing):
    torch.manual_seed(3)
    module = FGVCClassifier(**TINY, label_smoothing=smoothing).train()
    images, labels = next(iter(make_loader(n=8, seed=4)))
    loss = module.training_step((images, labels), 0).detach()
    with torch.no_grad():
        logits = module(images).double()  # train mode: the same batch statistics
    log_p = logits.log_softmax(-1)
    nll = -log_p.gather(1, labels[:, None])[:, 0]
    by_hand = ((1 - smoothing) * nll - smoothing * log_p.mean(-1)).mean()
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-5)
    reference = F.cross_entropy(logits, labels, label_smoothing=smoothing)
    assert float(loss) == pytest.approx(float(reference), rel=1e-5)
    if smoothing:
        assert abs(float(by_hand) - float(nll.mean())) > 1e-3  # smoothing shows in the loss


def _randomized_bn(module: FGVCClassifier) -> FGVCClassifier:
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():  # spread the logits, so that predictions vary between images
        module.model.classifier.weight.mul_(30)
        module.model.classifier.bias.zero_()
    return module


def _confusion(pred: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    confmat = torch.zeros(classes, classes, dtype=torch.long)
    for t, p in zip(labels.tolist(), pred.tolist()):
        confmat[t, p] += 1
    return confmat


class _Returned(pl.Callback):
    """The logits each validation step returns (what the reports' samples show)."""

    def __init__(self):
        self.logits = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_):
        self.logits.append(outputs["logits"])


@pytest.mark.parametrize("tta", [True, False])
def test_eval_tta_switches_the_tta_metrics_and_what_the_reports_count(tta):
    torch.manual_seed(5)
    module = _randomized_bn(FGVCClassifier(**TINY, val_tta=tta, test_tta=tta))
    loader = make_loader(n=24, seed=6, batch=8)
    returned = _Returned()
    trainer = make_trainer(callbacks=[returned])
    (val,) = trainer.validate(module, loader, verbose=False)
    val_confmat = module.confmat["val"].compute().cpu()
    val_bar = set(trainer.progress_bar_metrics)
    (test,) = trainer.test(module, loader, verbose=False)
    test_bar = set(trainer.progress_bar_metrics)
    module.eval()
    with torch.no_grad():
        images = torch.cat([b[0] for b in loader])
        labels = torch.cat([b[1] for b in loader])
        plain = module(images)
        both = (plain + module(images.flip(-1))) / 2
    assert not torch.equal(plain.argmax(1), both.argmax(1))  # the two can be told apart
    for result, stage in ((val, "val"), (test, "test")):
        assert result[f"{stage}/top1"] == pytest.approx(
            float((plain.argmax(1) == labels).float().mean()), abs=1e-6
        )
        assert (f"{stage}/top1_tta" in result) is tta
        assert (f"{stage}/mean_class_acc_tta" in result) is tta
    counted = both if tta else plain  # the reports follow the TTA figures when on
    torch.testing.assert_close(torch.cat(returned.logits), counted, rtol=0, atol=1e-6)
    assert {"val/loss", "val/top1", "val/mean_class_acc"} <= val_bar  # the progress bar
    assert "test/loss" in test_bar and "test/top1" not in test_bar
    expected = _confusion(counted.argmax(1), labels, 4)
    assert torch.equal(val_confmat, expected)
    assert torch.equal(module.confmat["test"].compute().cpu(), expected)


@pytest.mark.parametrize("tta", [True, False])
def test_predict_step_gives_probabilities_with_the_test_tta_setting(tta):
    torch.manual_seed(7)
    module = _randomized_bn(FGVCClassifier(**TINY, test_tta=tta)).eval()
    images, labels = next(iter(make_loader(n=6, seed=8)))
    with torch.no_grad():
        logits = module(images).double()
        mirrored = module(images.flip(-1)).double()
        from_tuple = module.predict_step((images, labels), 0)
        from_list = module.predict_step([images, labels], 0)
        from_tensor = module.predict_step(images, 0)
    view = (logits + mirrored) / 2 if tta else logits
    expected = view.exp() / view.exp().sum(-1, keepdim=True)
    assert torch.equal(module.predict_logits(images), module(images))  # no TTA by default
    for probs in (from_tuple, from_list, from_tensor):
        torch.testing.assert_close(probs.double(), expected, rtol=0, atol=1e-6)
    other = (logits + mirrored) / 2 if not tta else logits
    assert (other.softmax(-1) - expected).abs().max() > 1e-4  # TTA on and off differ here


class CountedData(pl.LightningDataModule):
    """Says its training class counts, as fgvc's DataModules do after setup."""

    def __init__(self, counts: list[int] | None) -> None:
        super().__init__()
        self.counts = counts
        if counts is not None:
            self.train_class_counts = lambda: list(self.counts)

    def train_dataloader(self) -> DataLoader:
        return make_loader(n=8)


class RecordedLoss(FGVCClassifier):
    """Keeps the training step's logits, labels and loss."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        images, labels = batch
        self.seen = (self(images).detach(), labels, loss.detach())
        return loss


@pytest.mark.parametrize(
    ("loss", "smoothing"), [("ce", 0.1), ("weighted", 0.0), ("logit_adjusted", 0.1)]
)
def test_the_training_loss_is_built_from_the_training_class_counts(loss, smoothing):
    counts = [9, 3, 1, 27]
    module = RecordedLoss(
        **TINY, loss=loss, logit_adjust_tau=0.5, label_smoothing=smoothing, lr=1e-9
    )
    make_trainer(max_steps=1).fit(module, datamodule=CountedData(counts))
    # the network again on the step's batch (train mode: the same batch statistics)
    logits, labels, value = module.seen
    n = sum(counts)
    if loss == "ce":
        assert module.class_offsets is None
        want = F.cross_entropy(logits.double(), labels, label_smoothing=smoothing)
    elif loss == "weighted":
        weights = torch.tensor([n / (4 * c) for c in counts], dtype=torch.float64)
        assert module.class_offsets.tolist() == pytest.approx(weights.tolist(), rel=1e-6)
        want = F.cross_entropy(logits.double(), labels, weight=weights)
    else:
        prior = torch.tensor([0.5 * math.log(c / n) for c in counts], dtype=torch.float64)
        assert module.class_offsets.tolist() == pytest.approx(prior.tolist(), rel=1e-6)
        want = F.cross_entropy(logits.double() + prior, labels, label_smoothing=smoothing)
    assert float(value) == pytest.approx(float(want), rel=1e-5)
    assert "class_offsets" not in module.state_dict()  # rebuilt from the data, not saved


def test_a_loss_that_needs_counts_without_them_is_one_line():
    module = FGVCClassifier(**TINY, loss="weighted")
    with pytest.raises(ConfigError, match=r"^model.loss weighted needs the training split's"):
        make_trainer(max_steps=1).fit(module, datamodule=CountedData(None))


class _Batches(pl.Callback):
    """Each training batch's images, by epoch."""

    def __init__(self):
        self.seen: dict[int, list[torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.setdefault(trainer.current_epoch, []).append(batch[0].clone())


@pytest.mark.slow
def test_a_resumed_run_draws_the_samples_of_its_epoch_with_workers(tmp_path):
    """With DataLoader workers, Lightning starts the training iterator for
    estimated_stepping_batches before it restores the epoch: the first resumed epoch must
    still get its own order, augmentation and progressive size, not epoch 0's."""
    from fgvc.data import FolderDataModule
    from tests.replicas import make_folders

    make_folders(tmp_path / "data", {"train": {"a": 6, "b": 6}})
    ramp = {"start_size": 16, "end_size": 32, "start_epoch": 0, "end_epoch": 1, "multiple": 8}

    def fit(epochs: int, root: str, ckpt_path: str | None = None) -> _Batches:
        torch.manual_seed(0)
        dm = FolderDataModule(
            str(tmp_path / "data"), batch_size=5, num_workers=2, image_size=24,
            preset="generic", split_dir=str(tmp_path), progressive_resize=ramp,
        )  # fmt: skip
        dm.num_classes  # noqa: B018 - parsed before the model is built, as the CLI does
        seen = _Batches()
        checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / root, save_last=True)
        trainer = make_trainer(
            max_epochs=epochs, callbacks=[seen, checkpoint], enable_checkpointing=True,
            default_root_dir=str(tmp_path / root), limit_val_batches=0,
        )  # fmt: skip
        model = FGVCClassifier(**{**TINY, "num_classes": 2}, lr=0.01, scheduler="triangular")
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        return seen

    whole = fit(3, "whole")
    fit(2, "part")
    resumed = fit(3, "part", ckpt_path=str(tmp_path / "part" / "last.ckpt"))
    assert sorted(resumed.seen) == [2]  # only the epoch left
    assert [tuple(b.shape[-2:]) for b in resumed.seen[2]] == [(32, 32)] * 2
    assert all(torch.equal(a, b) for a, b in zip(resumed.seen[2], whole.seen[2], strict=True))
    assert not torch.equal(whole.seen[2][0], whole.seen[1][0])  # the epochs do differ
