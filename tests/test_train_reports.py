"""Per-class reports on a hand-made confusion matrix whose rows and columns differ."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from fgvc.train.reports import most_confused, per_class_accuracy

# rows: true class, columns: predicted class. Row sums (support) 10, 8, 6, 0; column sums
# 6, 5, 10, 3 - every bug that reads the wrong axis changes the numbers.
CONFMAT = torch.tensor(
    [
        [5, 2, 0, 3],
        [1, 3, 4, 0],
        [0, 0, 6, 0],
        [0, 0, 0, 0],  # a class that never occurs (but is never predicted either)
    ]
)


def test_per_class_accuracy_uses_rows_as_the_true_class():
    support, accuracy = per_class_accuracy(CONFMAT)
    assert support.tolist() == [10, 8, 6, 0]
    torch.testing.assert_close(
        accuracy, torch.tensor([5 / 10, 3 / 8, 6 / 6, 0.0]), rtol=0, atol=1e-7
    )
    assert torch.isfinite(accuracy).all()  # no 0 / 0 for the absent class
    # the micro accuracy follows: sum of correct over sum of support
    correct = (accuracy * support).sum() / support.sum()
    assert float(correct) == pytest.approx(14 / 24)


def test_per_class_accuracy_of_a_float_matrix():
    """``MulticlassConfusionMatrix.compute()`` gives counts as integers or floats."""
    support, accuracy = per_class_accuracy(CONFMAT.double())
    assert support.tolist() == [10.0, 8.0, 6.0, 0.0]
    assert accuracy.tolist() == pytest.approx([0.5, 0.375, 1.0, 0.0])


def test_most_confused_pairs_are_true_then_predicted_largest_first():
    assert most_confused(CONFMAT) == [(1, 2, 4), (0, 3, 3), (0, 1, 2), (1, 0, 1)]
    assert most_confused(CONFMAT, k=2) == [(1, 2, 4), (0, 3, 3)]
    assert most_confused(CONFMAT, k=1) == [(1, 2, 4)]


def test_most_confused_skips_the_diagonal_and_zeros_and_keeps_the_input():
    before = CONFMAT.clone()
    pairs = most_confused(CONFMAT, k=100)  # more than the 16 cells: no error
    assert all(t != p and c > 0 for t, p, c in pairs) and len(pairs) == 4
    assert torch.equal(CONFMAT, before)  # the diagonal of the caller's matrix is intact
    assert most_confused(torch.diag(torch.tensor([3, 1, 2]))) == []  # all correct


def test_most_confused_maps_flat_indices_back_to_cells():
    """Flat indices map back to (row, column) by the column count: the far corners."""
    confmat = torch.zeros(5, 5, dtype=torch.long)
    confmat[4, 0] = 9  # flat index 20: (4, 0) with 5 columns
    confmat[0, 4] = 7  # flat index 4
    confmat[3, 1] = 5
    assert most_confused(confmat) == [(4, 0, 9), (0, 4, 7), (3, 1, 5)]


def test_a_class_with_a_single_image():
    support, accuracy = per_class_accuracy(torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 2]]))
    assert support.tolist() == [1, 1, 3]
    assert accuracy.tolist() == pytest.approx([1.0, 0.0, 2 / 3])


def test_most_confused_keeps_20_pairs_by_default():
    n = 6  # 30 off-diagonal cells, all different
    confmat = torch.arange(1, n * n + 1).reshape(n, n)
    pairs = most_confused(confmat)
    assert len(pairs) == 20
    largest = sorted(int(confmat[t, p]) for t in range(n) for p in range(n) if t != p)[-20:]
    assert [c for _, _, c in pairs] == largest[::-1]
    assert all(confmat[t, p] == c for t, p, c in pairs)


class _ScriptedScores(pl.LightningModule):
    """Validation epochs whose top-1 follows ``SCORES``; epoch e's confusion matrix has e+1
    correct images of class 0 (so each epoch's CSV is recognisable)."""

    SCORES = (0.5, 0.9, 0.7)  # the best epoch is the middle one, not the last

    def __init__(self) -> None:
        super().__init__()
        from torchmetrics.classification import MulticlassConfusionMatrix

        self.layer = torch.nn.Linear(1, 1)
        self.class_names = ["a", "b"]
        self.confmat = torch.nn.ModuleDict({"val": MulticlassConfusionMatrix(2)})

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        epoch = self.current_epoch
        labels = torch.tensor([0] * (epoch + 1) + [1])
        self.confmat["val"].update(torch.zeros_like(labels), labels)

    def on_validation_epoch_end(self):
        self.log("val/top1", self.SCORES[self.current_epoch])
        self.confmat["val"].reset()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(2, 1), batch_size=2)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(1, 1), batch_size=1)


def test_validation_csv_is_the_best_epochs(tmp_path):
    """During fit, val_per_class.csv belongs to the best checkpoint (epoch 1 of 3), not to
    the last validation; a plain validation writes its own."""
    import csv

    from fgvc.train.loggers import CSVLogger
    from fgvc.train.reports import EvalReports
    from fgvc.train.resume import checkpoint_callbacks

    trainer = pl.Trainer(
        max_epochs=3,
        logger=CSVLogger(str(tmp_path), name="r"),
        callbacks=[EvalReports(), *checkpoint_callbacks()],
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = _ScriptedScores()
    trainer.fit(module)
    best = trainer.checkpoint_callbacks[0].best_model_path
    assert "epoch001" in best
    with open(tmp_path / "r" / "version_0" / "val_per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["name"], r["support"], r["correct"]) for r in rows] == [
        ("a", "2", "2"),  # epoch 1: two images of class a, both right
        ("b", "1", "0"),
    ]
