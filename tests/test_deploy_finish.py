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
