"""Balanced training on a deliberately imbalanced replica raises mean per-class accuracy.

The replica: four classes whose images are flat colour fields; an image's colour is
``128 + 30 (v - 1.5) d`` (a fixed colour direction ``d``) plus pixel noise, with ``v`` drawn
from N(c, 0.5) for class ``c``. Neighbouring classes overlap, so where a classifier puts
the boundaries decides the accuracy: trained on 48 images of classes 0 and 2 and 6 of
classes 1 and 3 (ratio 8), plain cross-entropy learns the training prior and gives the rare
classes narrow regions; on a balanced validation split (24 each), the class-balanced
sampler, the logit-adjusted and the weighted loss each move the boundaries toward the
balanced ones. (The balanced optimum, boundaries half-way: 0.84 for the outer classes,
0.68 for the inner ones, mean 0.76.)
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean

import cv2
import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from fgvc.data import FolderDataModule
from fgvc.train.module import FGVCClassifier
from tests.test_commands_train import read_metrics, run_fgvc, workdir, write_config

__all__ = ["workdir"]  # the fixture, shared with test_commands_train

TRAIN = [48, 6, 48, 6]
VAL = 24
SIZE = 32
SEEDS = (0, 1, 2)
EPOCHS = 5


def write_replica(root: Path) -> Path:
    rng = np.random.default_rng(0)
    direction = np.array([0.8, -0.5, 0.33])
    direction /= np.linalg.norm(direction)
    for split, counts in (("train", TRAIN), ("val", [VAL] * len(TRAIN))):
        for c, n in enumerate(counts):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True)
            for k in range(n):
                v = rng.normal(c, 0.5)
                pixels = 128 + 30 * (v - 1.5) * direction + rng.normal(0, 12, (SIZE, SIZE, 3))
                image = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
                cv2.imwrite(str(folder / f"{k:03d}.png"), image[..., ::-1])
    return root


@pytest.fixture
def one_thread():
    """One intra-op thread: on a busy 2-core machine two threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mean_class_accuracy(root: Path, seed: int, sampler: str, loss: str) -> float:
    """A tiny network (timm's 0.4M-parameter test ResNet, average pooling) trained from
    scratch for a few epochs; ``val/mean_class_acc`` on the balanced split at the end."""
    pl.seed_everything(seed, verbose=False)
    data = FolderDataModule(
        str(root),
        batch_size=16,
        num_workers=0,
        image_size=SIZE,
        preset="generic",
        seed=seed,
        sampler=sampler,
    )
    model = FGVCClassifier(
        arch="timm/test_resnet",
        num_classes=len(TRAIN),
        representation="gap",
        reduce_dim=None,
        pretrained=None,
        optimizer="adamw",
        lr=3e-3,
        lr_batch_size=16,
        weight_decay=0.0,
        lr_mult_classifier=1.0,
        scheduler="cosine",
        loss=loss,
        monitor="val/mean_class_acc",
        val_tta=False,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=EPOCHS,
        check_val_every_n_epoch=EPOCHS,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    assert data.train_class_counts() == TRAIN  # the counts the loss was built from
    return float(trainer.callback_metrics["val/mean_class_acc"])


@pytest.mark.slow
def test_balanced_training_raises_mean_per_class_accuracy(tmp_path, one_thread):
    root = write_replica(tmp_path / "replica")
    plain = [mean_class_accuracy(root, s, "uniform", "ce") for s in SEEDS]
    for sampler, loss in (
        ("balanced", "ce"),
        ("uniform", "logit_adjusted"),
        ("uniform", "weighted"),
    ):
        balanced = [mean_class_accuracy(root, s, sampler, loss) for s in SEEDS]
        gains = [b - p for b, p in zip(balanced, plain)]
        shown = ", ".join(f"{b:.3f} ({b - p:+.3f})" for b, p in zip(balanced, plain))
        print(f"sampler {sampler}, loss {loss}: {shown}; ce {', '.join(f'{p:.3f}' for p in plain)}")
        # every seed gains, and clearly on average (one validation image is 1/96 of top-1)
        assert min(gains) >= 0.05 and mean(gains) >= 0.1, (sampler, loss, plain, balanced)
        assert max(balanced) <= 0.76 + 0.1  # not above the balanced optimum beyond noise


@pytest.mark.slow
def test_balanced_options_under_ddp_pick_the_best_mean_class_accuracy(workdir):
    """Two processes: the balanced sampler's shards, the logit-adjusted loss's class prior
    (each process builds it from the same split) and the best checkpoint on
    val/mean_class_acc, end to end through ``fgvc fit``."""
    cfg = write_config(workdir, devices=2, strategy="ddp", max_epochs=2)
    options = ["--data.init_args.sampler", "balanced", "--model.loss", "logit_adjusted"]
    proc = run_fgvc(
        workdir, "fit", "--config", str(cfg), *options, "--model.monitor", "val/mean_class_acc"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = workdir / "runs" / "tiny" / "version_0"
    logged = [
        float(r["val/mean_class_acc"]) for r in read_metrics(run) if r.get("val/mean_class_acc")
    ]
    assert len(logged) == 2
    best = max(logged)
    (path,) = (run / "checkpoints").glob("best-*.ckpt")
    epoch = logged.index(best)
    assert path.name == f"best-epoch{epoch:03d}-mean_class_acc_{best:.4f}.ckpt"
    assert f"best val/mean_class_acc: {best:.4f}" in proc.stdout
    hparams = torch.load(path, weights_only=True)["hyper_parameters"]
    assert (hparams["loss"], hparams["monitor"]) == ("logit_adjusted", "val/mean_class_acc")
