"""fgvc/train/progress.py: one epoch numbering (0-based, as checkpoint names and
metrics.csv) in the plain lines and on Rich's bar."""

from __future__ import annotations

from types import SimpleNamespace

from fgvc.train.progress import LineProgress, RichProgress, epoch_label, progress_bar


def test_epoch_label_counts_from_zero_to_the_last_epoch():
    assert epoch_label(0, 100) == "epoch 0/99"
    assert epoch_label(99, 100) == "epoch 99/99"
    # a run bounded by steps (max_epochs -1 or None): no last epoch to show
    assert epoch_label(3, -1) == "epoch 3" and epoch_label(3, None) == "epoch 3"


def test_rich_bar_labels_epochs_as_the_lines_do():
    bar = progress_bar(interactive=True)
    assert isinstance(bar, RichProgress) and isinstance(progress_bar(False), LineProgress)
    bar._trainer = SimpleNamespace(max_epochs=4)
    assert bar._get_train_description(2).strip() == "Epoch 2/3"
    bar._trainer = SimpleNamespace(max_epochs=-1)  # Lightning's own says "Epoch 2/-2"
    assert bar._get_train_description(2).strip() == "Epoch 2"


def test_line_progress_prints_the_epoch_as_lightning_numbers_it(capsys):
    trainer = SimpleNamespace(current_epoch=0, max_epochs=3, callback_metrics={})
    line = LineProgress()
    line.on_train_epoch_start(trainer, None)
    line.on_train_epoch_end(trainer, None)
    assert capsys.readouterr().out.startswith("epoch 0/2 done in 0m00s")


def test_line_progress_after_a_resume_inside_an_epoch_counts_its_own_batches(capsys, monkeypatch):
    """Resumed at batch 100 of 200 (fgvc.train.resume): 10 batches in 10 s is 1 it/s and
    90 s left - not 110 batches since the clock's zero."""
    import fgvc.train.progress as progress

    now = [5000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    loop = SimpleNamespace(batch_progress=SimpleNamespace(current=SimpleNamespace(completed=100)))
    trainer = SimpleNamespace(
        current_epoch=3,
        max_epochs=10,
        num_training_batches=200,
        fit_loop=SimpleNamespace(epoch_loop=loop),
    )
    line = LineProgress(interval=5.0)
    line._trainer = trainer
    line.get_metrics = lambda *args: {}
    line.on_train_start(trainer, None)  # no on_train_epoch_start inside an epoch
    now[0] += 10.0
    line.on_train_batch_end(trainer, None, None, None, 109)
    out = capsys.readouterr().out
    assert "step 110/200" in out and "1.00 it/s" in out and "epoch ends in 1m30s" in out, out
