"""fgvc/train/callbacks.py: a resumed run keeps its best checkpoint's score when its folder
is named by another path or was moved (Lightning alone forgets it, and keeps a worse
checkpoint as a second best)."""

from __future__ import annotations

import os

from fgvc.train.callbacks import RunCheckpoint


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
