"""fgvc.train.interrupt: a diverged fit stops at once, in one line, and nothing broken is
saved, exported or predicted with (Ctrl-C and SIGTERM: tests/test_commands_train.py)."""

from __future__ import annotations

import pytest
import torch

from fgvc.commands.main import main
from tests.test_commands_train import workdir, write_config

__all__ = ["workdir"]  # the fixture, shared with test_commands_train


def all_finite(ckpt) -> bool:
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    return all(v.isfinite().all() for v in state.values() if v.is_floating_point())


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("fgvc")]


@pytest.mark.slow
def test_a_huge_learning_rate_stops_the_fit_in_one_line(workdir, capsys):
    cfg = write_config(workdir, max_epochs=3)
    assert main(["fit", "--config", str(cfg), "--model.lr", "1e6"]) == 1
    (line,) = error_lines(capsys)
    assert "training diverged" in line and "at step " in line and "lower model.lr" in line
    assert "learning rates up to" in line
    run = workdir / "runs" / "tiny" / "version_0"
    assert not (run / "export").exists()  # nothing exported
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        assert all_finite(ckpt), ckpt  # nothing non-finite saved, as best or last


@pytest.mark.slow
def test_weights_gone_bad_at_an_epoch_end_are_never_saved(workdir, capsys):
    """The last step of epoch 1 leaves NaN weights with a finite loss: the fit stops before
    validating or saving them; epoch 0's checkpoints stay, whole and finite."""
    cfg = write_config(workdir, max_epochs=3)
    poison = (
        '[{"class_path": "tests.cli_helpers.PoisonWeightsAtEpochEnd", "init_args": {"epoch": 1}}]'
    )
    assert main(["fit", "--config", str(cfg), "--trainer.callbacks", poison]) == 1
    (line,) = error_lines(capsys)
    assert "training diverged" in line and "epoch 1" in line and "last.ckpt holds" in line
    run = workdir / "runs" / "tiny" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0 and all_finite(last)
    for ckpt in (run / "checkpoints").glob("best-*.ckpt"):
        assert "epoch000" in ckpt.name and all_finite(ckpt)

    # a non-finite checkpoint from elsewhere is refused by export (and so by predict)
    checkpoint = torch.load(last, weights_only=True)
    key = next(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point())
    checkpoint["state_dict"][key].view(-1)[0] = float("inf")
    torch.save(checkpoint, workdir / "diverged.ckpt")
    out = ["--out", str(workdir / "exported")]
    assert main(["export", "--ckpt", str(workdir / "diverged.ckpt"), *out]) == 2
    (line,) = error_lines(capsys)
    assert "non-finite weights" in line and key.removeprefix("model.") in line
    assert not (workdir / "exported").exists()
    assert (
        main(
            [
                "predict",
                str(next((workdir / "data").rglob("*.jpg"))),
                "--model",
                str(workdir / "diverged.ckpt"),
            ]
        )
        == 2
    )
    (line,) = error_lines(capsys)
    assert "non-finite weights" in line
