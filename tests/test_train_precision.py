"""Every precision Lightning accepts trains; the iSQRT-COV square root stays float32."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from fgvc.data.transforms import normalize_images
from fgvc.ops import ISqrtCov
from fgvc.train.module import FGVCClassifier

PRECISIONS = {
    "32-true": torch.float32,
    "64-true": torch.float64,
    "16-mixed": torch.float32,
    "bf16-mixed": torch.float32,
    "16-true": torch.float16,
    "bf16-true": torch.bfloat16,
}


class UInt8Data(pl.LightningDataModule):
    """uint8 batches normalized after the transfer, as fgvc's DataModules ship them."""

    def _loader(self) -> DataLoader:
        gen = torch.Generator().manual_seed(0)
        images = (torch.rand(8, 3, 32, 32, generator=gen) * 255).to(torch.uint8)
        return DataLoader(TensorDataset(images, torch.arange(8) % 3), batch_size=4)

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()

    def on_after_batch_transfer(self, batch, dataloader_idx):
        images, labels = batch
        return normalize_images(images), labels


@pytest.mark.parametrize("precision", sorted(PRECISIONS))
def test_every_precision_trains_with_a_float32_square_root(precision):
    pl.seed_everything(0, verbose=False)
    module = FGVCClassifier(
        "resnet18", 3, reduce_dim=8, head={"iterations": 3}, scheduler="constant"
    )
    seen: list[torch.dtype] = []
    pool = next(m for m in module.modules() if isinstance(m, ISqrtCov))
    pool.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    trainer = pl.Trainer(
        accelerator="cpu",
        precision=precision,
        max_steps=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=UInt8Data())
    assert module.model.classifier.weight.dtype == PRECISIONS[precision]
    expected_pool = torch.float64 if precision == "64-true" else torch.float32
    assert seen and set(seen) == {expected_pool}
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    assert torch.isfinite(trainer.callback_metrics["train/loss_epoch"])
