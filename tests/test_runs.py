"""fgvc.runs: finding best / latest / resumable checkpoints, reading a checkpoint of fit."""

from __future__ import annotations

import os

import pytest
import torch

from fgvc.data.preprocessing import EvalPreprocessing
from fgvc.errors import CheckpointError, UsageError
from fgvc.runs import (
    best_checkpoint_in_run,
    default_export_dir,
    find_latest_run,
    read_fit_checkpoint,
    resolve_checkpoint,
    resume_point,
    run_folders,
)
from tests.cli_helpers import CodePayload
from tests.tiny import CLASS_NAMES, IMAGE_SIZE


def test_resolve_best_checkpoint(tiny_run, tmp_path):
    root, _, ckpt, run = tiny_run
    assert resolve_checkpoint("best", runs_root=root / "runs") == ckpt
    assert resolve_checkpoint("best", run=run) == ckpt
    assert resolve_checkpoint(run) == ckpt
    assert resolve_checkpoint(root / "runs") == ckpt
    assert resolve_checkpoint(ckpt) == ckpt
    # an older run is not "the most recent"; a newer one is
    old = root / "runs" / "other" / "version_0" / "checkpoints"
    old.mkdir(parents=True)
    (old / "best-epoch000.ckpt").write_bytes(b"x")
    os.utime(old / "best-epoch000.ckpt", (1, 1))
    assert find_latest_run(root / "runs") == run
    with pytest.raises(UsageError, match="no checkpoint found"):
        resolve_checkpoint("best", runs_root=tmp_path / "none")
    with pytest.raises(UsageError, match="checkpoint not found"):
        resolve_checkpoint(tmp_path / "missing.ckpt")


def test_unreadable_newest_checkpoint_falls_back_to_the_best_file(tiny_run, tmp_path, caplog):
    """An interrupted save leaves an empty last.ckpt: the single best-*.ckpt is still found."""
    _, _, ckpt, _ = tiny_run
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    best = folder / ckpt.name
    best.write_bytes(ckpt.read_bytes())
    (folder / "last.ckpt").write_bytes(b"")
    os.utime(best, (1, 1))  # last.ckpt is the newest
    assert best_checkpoint_in_run(tmp_path / "run") == best
    assert "last.ckpt" in caplog.text and "truncated or not a checkpoint" in caplog.text


def test_ambiguous_run_folder_asks_for_the_file(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    for name in ("best-a.ckpt", "best-b.ckpt"):
        (folder / name).write_bytes(b"not read")
    with pytest.raises(UsageError, match=r"cannot tell the best checkpoint.*best-a.ckpt"):
        best_checkpoint_in_run(tmp_path / "run")


def test_read_fit_checkpoint_gives_spec_classes_and_preprocessing(tiny_run):
    _, module, ckpt, _ = tiny_run
    fit = read_fit_checkpoint(ckpt)
    assert fit.spec == module.spec and fit.class_names == CLASS_NAMES
    # the DataModule's own record, with the run's test-time flip setting
    assert fit.preprocessing == EvalPreprocessing(IMAGE_SIZE, "cub", tta=True)
    assert fit.epoch == 0 and fit.monitor["monitor"] == "val/top1"
    assert fit.score("current_score") == pytest.approx(float(fit.monitor["current_score"]))
    net = fit.build_net()
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(net(x), module(x), rtol=0, atol=0)


def test_read_fit_checkpoint_refuses_what_is_not_one(tmp_path):
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, plain)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"payload": CodePayload(marker)}, evil)
    bad_spec = tmp_path / "bad.ckpt"
    torch.save(
        {"hyper_parameters": {"arch": "resnet9"}, "state_dict": {"model.w": torch.zeros(1)}},
        bad_spec,
    )
    cases = {
        plain: "is not a checkpoint of `fgvc fit`",
        evil: "weights_only",
        bad_spec: "do not build a model: unknown arch 'resnet9'",
        tmp_path / "missing.ckpt": "checkpoint not found",
    }
    for path, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            read_fit_checkpoint(path)
    assert not marker.exists()


def test_resume_point_is_the_newest_run_or_a_named_one(tmp_path):
    root = tmp_path / "runs"
    with pytest.raises(UsageError, match="no run of this config .* nothing to resume"):
        resume_point("last", root, "demo")
    # version_1 trained an epoch; version_2 (newer, by claim order, whatever the mtimes)
    # stopped before its first epoch ended: last means version_2, which has nothing
    for version, files in ((0, ["last.ckpt"]), (1, ["last.ckpt"]), (2, []), (10, [])):
        folder = root / "demo" / f"version_{version}" / "checkpoints"
        folder.mkdir(parents=True)
        for name in files:
            (folder / name).write_bytes(b"")
            os.utime(folder / name, (99, 99))
    (root / "demo" / "version_10" / "run.json").write_text('{"command": "test"}')
    with pytest.raises(UsageError) as err:
        resume_point("last", root, "demo")
    message = str(err.value)
    assert str(root / "demo" / "version_2") in message and "nothing to resume" in message
    assert f"--ckpt_path {root / 'demo' / 'version_1'}" in message  # the way to name another
    # a run folder, or a file in one, names its run
    run1 = root / "demo" / "version_1"
    assert resume_point(str(run1), root, "other") == (run1 / "checkpoints" / "last.ckpt", run1)
    assert resume_point(str(run1 / "checkpoints" / "last.ckpt"), root, "x")[1] == run1
    loose = tmp_path / "w.ckpt"
    loose.write_bytes(b"")
    assert resume_point(str(loose), root, "demo") == (loose, None)
    with pytest.raises(UsageError, match="no checkpoints/last.ckpt in this run folder"):
        resume_point(str(root / "demo" / "version_2"), root, "demo")
    with pytest.raises(UsageError, match="no such file or folder"):
        resume_point(str(tmp_path / "nope"), root, "demo")
    # a folder made by `fgvc test` is not a run to resume
    (root / "demo" / "version_2" / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert resume_point("last", root, "demo")[1] == root / "demo" / "version_2"
    assert run_folders(root, "demo")[-1].name == "version_10"


def test_export_folders(tmp_path):
    root = tmp_path / "runs"
    (root / "demo" / "version_0").mkdir(parents=True)
    run = root / "demo" / "version_0"
    assert default_export_dir(run / "checkpoints" / "best.ckpt") == run / "export"
    assert default_export_dir(tmp_path / "w.ckpt") == tmp_path / "w-export"
