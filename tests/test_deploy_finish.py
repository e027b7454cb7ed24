"""What a fit ends with in its run folder (fgvc.deploy.finish): one export/, replaced
whole by a resumed run, and kept when the new export fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

from fgvc.deploy.finish import export_best
from fgvc.runs import MONITOR


def finished_trainer(best: Path) -> SimpleNamespace:
    """What export_best reads of a trainer at the end of a fit."""
    callback = SimpleNamespace(monitor=MONITOR, best_model_path=str(best))
    return SimpleNamespace(checkpoint_callbacks=[callback], is_global_zero=True, loggers=[])


def test_a_resumed_run_replaces_its_export_whole(tiny_run, tmp_path, capsys):
    _, _, ckpt, _ = tiny_run
    run = tmp_path / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    best = Path(shutil.copy(ckpt, run / "checkpoints" / "best-epoch001.ckpt"))
    old = run / "export"
    old.mkdir()
    (old / "model.json").write_text('{"from": "the first run"}')
    (old / "model.torchscript.pt").write_text("of the old weights")

    assert export_best(finished_trainer(tmp_path / "missing.ckpt"), str(run)) is None
    assert "warning: export of" in capsys.readouterr().out  # a failed export keeps the old
    assert (old / "model.json").read_text() == '{"from": "the first run"}'

    assert export_best(finished_trainer(best), str(run)) == old
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "export"]  # no export-1
    assert {p.name for p in old.iterdir()} == {"model.json", "model.safetensors", "model.onnx"}
    described = json.loads((old / "model.json").read_text())
    assert described["checkpoint"]["file"] == best.name


def test_validation_images_are_one_per_class_then_the_most_confused_pairs():
    from fgvc.deploy.finish import EXPLAINED_CLASSES, validation_images
    from fgvc.train.reports import EvalReports

    samples = [(f"c{label}-{i}.jpg", label) for i in range(3) for label in range(10)]
    reports = EvalReports()
    reports.pairs["val"] = [(9, 2, 5), (3, 4, 2), (1, 0, 1)]  # (true, predicted, count)
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(val_set=SimpleNamespace(samples=samples)),
        callbacks=[reports],
    )
    images, targets = validation_images(trainer)
    first = [f"c{c}-0.jpg" for c in range(EXPLAINED_CLASSES)]
    assert images == [*first, "c9-0.jpg", "c9-0.jpg", "c3-0.jpg", "c3-0.jpg"]
    assert targets == [None] * EXPLAINED_CLASSES + [9, 2, 3, 4]
    no_data = SimpleNamespace(datamodule=None, callbacks=[])
    assert validation_images(no_data) == ([], [])


def test_other_ranks_take_part_and_get_nothing(tmp_path):
    from fgvc.deploy.finish import FitOutputs, finish_fit

    asked = []

    class Rank1(SimpleNamespace):
        @property
        def log_dir(self) -> str:
            asked.append("log_dir")  # a collective under DDP: every rank must ask
            return str(tmp_path)

    trainer = Rank1(is_global_zero=False, checkpoint_callbacks=[], callbacks=[], loggers=[])
    assert finish_fit(trainer) == FitOutputs() and asked == ["log_dir"]
    assert not any(tmp_path.iterdir())
