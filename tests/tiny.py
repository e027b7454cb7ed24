"""A tiny trained FGVCClassifier run, shared by the export and predict tests."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from fgvc.data.preprocessing import EvalPreprocessing
from fgvc.train.module import FGVCClassifier

CLASS_NAMES = ["Black-footed albatross", 'a/b, "c"', "Grünfink 鳥 ✓"]
IMAGE_SIZE = 32


class TinyData(pl.LightningDataModule):
    """Random tensors; records its evaluation preprocessing in checkpoints as the fgvc
    DataModules do (``state_dict``)."""

    def __init__(self, image_size: int = IMAGE_SIZE, preset: str = "cub", antialias: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.eval_preprocessing = EvalPreprocessing(image_size, preset, antialias=antialias)

    def state_dict(self) -> dict:
        return {"eval_preprocessing": self.eval_preprocessing.to_dict()}

    def _loader(self) -> DataLoader:
        gen = torch.Generator().manual_seed(0)
        images = torch.randn(6, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
        return DataLoader(TensorDataset(images, torch.arange(6) % 3), batch_size=3)

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()


def make_run(root: Path) -> tuple[FGVCClassifier, Path, Path]:
    """One training step + validation; returns (module in eval mode, best ckpt, run folder)."""
    pl.seed_everything(0, verbose=False)
    module = FGVCClassifier(
        arch="resnet18",
        num_classes=3,
        class_names=CLASS_NAMES,
        reduce_dim=8,
        iterations=3,
        pretrained=None,
    )
    run = root / "runs" / "tiny" / "version_0"
    checkpoint = ModelCheckpoint(
        dirpath=run / "checkpoints",
        monitor="val/top1",
        mode="max",
        save_last=True,
        filename="best-epoch{epoch:03d}",
        auto_insert_metric_name=False,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        logger=False,
        callbacks=[checkpoint],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(module, datamodule=TinyData())
    return module.eval(), Path(checkpoint.best_model_path), run
