"""A tiny trained FGVCClassifier run, shared by the export and predict tests."""

from __future__ import annotations

from collections.abc import Iterator
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
        head={"iterations": 3},
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


class RiggedValidation(TinyData):
    """Validation labels made from the network's own predictions when validation starts:
    right at epoch 0 (val/top1 = 1) and wrong afterwards (val/top1 = 0), so that the best
    epoch is the first one and the last epoch is worse."""

    def val_dataloader(self) -> _PredictedLabels:
        return _PredictedLabels(self)


class _PredictedLabels:
    """The validation batches, labelled when an iteration starts (after that epoch's
    training) with the network's predictions, shifted by one class after epoch 0."""

    def __init__(self, data: TinyData) -> None:
        self.data = data

    def __len__(self) -> int:
        return 2

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        trainer = self.data.trainer
        module = trainer.lightning_module
        images = self.data._loader().dataset.tensors[0]
        was_training = module.training
        module.eval()
        with torch.no_grad():
            predicted = torch.cat([module(images[:3]), module(images[3:])]).argmax(1)
        module.train(was_training)
        labels = (predicted + (trainer.current_epoch > 0)) % len(CLASS_NAMES)
        yield images[:3], labels[:3]
        yield images[3:], labels[3:]


def make_two_epoch_run(root: Path) -> tuple[Path, Path]:
    """Two epochs, the best first, ``test_tta=False``, the ``fgvc fit`` checkpoint callbacks;
    returns (best checkpoint, last checkpoint)."""
    from fgvc.train.resume import checkpoint_callbacks

    pl.seed_everything(0, verbose=False)
    module = FGVCClassifier(
        arch="resnet18",
        num_classes=3,
        class_names=CLASS_NAMES,
        reduce_dim=8,
        head={"iterations": 3},
        pretrained=None,
        test_tta=False,
    )
    best, last = checkpoint_callbacks()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        limit_train_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        callbacks=[best, last],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(module, datamodule=RiggedValidation())
    return Path(best.best_model_path), Path(last.best_model_path)
