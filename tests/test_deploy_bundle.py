"""fgvc.deploy.bundle: a hand-edited model.json's class names are checked when it is read."""

from __future__ import annotations

import json
import logging

from fgvc.deploy.bundle import load, read_config
from fgvc.deploy.export import export_checkpoint


def test_duplicate_and_look_alike_class_names_are_warned_about_once(tiny_run, tmp_path, caplog):
    _, _, ckpt, _ = tiny_run
    bundle = export_checkpoint(ckpt, tmp_path / "bundle", formats=("safetensors",))
    config = json.loads((bundle / "model.json").read_text())
    config["class_names"] = ["Heron", "heron", "Heron"]
    (bundle / "model.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="fgvc"):
        read_config(bundle)
        assert load(bundle).class_names == ["Heron", "heron", "Heron"]  # still usable
    path = bundle / "model.json"
    assert [r.getMessage() for r in caplog.records] == [
        f"warning: {path}: class name 'Heron' appears 2 times in class_names: predictions of "
        f"those classes cannot be told apart; give each class its own name",
        f"warning: {path}: class names 'Heron' and 'heron' differ only in letter case or "
        f"Unicode normalization (an accent as part of the letter or as a separate character): "
        f"they are different classes to fgvc but look the same, and a case-insensitive file "
        f"system (macOS, Windows) merges their folders; rename or merge them",
    ]
