"""fgvc.train.loggers and wandb_mode: run folders claimed atomically, a resumed run's history
kept once, and where W&B runs go (and why)."""

from __future__ import annotations

import csv
import socket
import threading
from pathlib import Path

import pytest

from fgvc.train.loggers import CSVLogger
from fgvc.train.wandb_mode import resolve_wandb_mode


def test_concurrent_runs_claim_distinct_folders(tmp_path):
    versions: list[int] = []

    def claim():
        versions.append(CSVLogger(str(tmp_path), name="exp").version)

    (tmp_path / "exp" / "version_3").mkdir(parents=True)  # an earlier run
    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(versions) == list(range(4, 12))  # distinct, after the existing one
    assert {p.name for p in (tmp_path / "exp").iterdir()} == {
        f"version_{v}" for v in [3, *versions]
    }


def write_metrics(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = sorted({k for row in rows for k in row})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_resumed_run_keeps_its_history_once(tmp_path):
    """Epochs 0-1 completed (steps 0-7), epoch 2 half done when the process died: resuming
    at epoch 2 / step 8 keeps epochs 0-1 and drops what epoch 2 had logged."""
    done = [
        {"epoch": "0", "step": "3", "train/loss_epoch": "1.5", "val/top1": "0.4"},
        {"epoch": "", "step": "4", "lr-SGD/backbone": "0.01"},
        {"epoch": "1", "step": "7", "train/loss_epoch": "1.2", "val/top1": "0.5"},
    ]
    partial = [
        {"epoch": "", "step": "8", "lr-SGD/backbone": "0.009"},
        {"epoch": "2", "step": "9", "train/loss_step": "1.1"},
    ]
    run = tmp_path / "exp" / "version_0"
    write_metrics(run / "metrics.csv", done + partial)
    logger = CSVLogger(str(tmp_path), name="exp", version=0)
    logger.log_hyperparams({"lr": 0.1})  # the writer exists now: it did not delete the file
    logger.drop_from(epoch=2, step=8)  # when the resumed run starts training
    logger.log_metrics({"val/top1": 0.6}, step=11)
    logger.save()
    rows = read(run / "metrics.csv")
    assert [r["step"] for r in rows] == ["3", "4", "7", "11"]
    assert rows[2]["val/top1"] == "0.5" and rows[3]["val/top1"] == "0.6"


def test_a_full_disk_while_saving_metrics_keeps_the_file_whole(tmp_path):
    """Lightning truncates metrics.csv to rewrite its header when a new key appears: on a
    full disk that lost the history. It is replaced whole now, or not at all."""
    from fgvc.errors import DiskFullError
    from tests.fs_helpers import fill, small_filesystem

    with small_filesystem(tmp_path / "small", "64k") as small:
        logger = CSVLogger(str(small), name="exp", version=0)
        for step in range(300):
            logger.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
        logger.save()
        path = small / "exp" / "version_0" / "metrics.csv"
        before = path.read_bytes()
        assert len(before) > 4096  # more than a page: rewriting it in place needs more room
        fill(small)
        # new columns: every row gets longer
        logger.log_metrics({f"val/class_{i}": 0.5 for i in range(20)}, step=300)
        with pytest.raises(DiskFullError, match="metrics.csv is intact"):
            logger.save()
        assert path.read_bytes() == before
        assert [p.name for p in path.parent.iterdir()] == ["metrics.csv"]


def test_wandb_auto_mode_says_why(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb"))
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    chosen = resolve_wandb_mode("auto")
    assert chosen.mode == "offline" and "no API key for https://api.wandb.ai" in chosen.reason

    with socket.socket() as server:  # a self-hosted W&B server on this machine
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        # the URL from wandb's own settings file (wandb login --host), the key from netrc
        (tmp_path / "wandb").mkdir()
        (tmp_path / "wandb" / "settings").write_text(f"[default]\nbase_url = {url}\n")
        netrc = tmp_path / ".netrc"
        netrc.write_text("machine 127.0.0.1 login user password not-a-real-key\n")
        netrc.chmod(0o600)
        chosen = resolve_wandb_mode("auto")
        assert chosen.mode == "online", chosen.reason
        assert url in chosen.reason and "settings" in chosen.reason and "netrc" in chosen.reason
    chosen = resolve_wandb_mode("auto")  # the server went away
    assert chosen.mode == "offline" and "did not answer" in chosen.reason
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("online").reason == "WANDB_MODE=disabled"
    with pytest.raises(ValueError, match="wandb mode must be"):
        monkeypatch.delenv("WANDB_MODE")
        resolve_wandb_mode("sometimes")
