"""Every representation through the whole tool: `fgvc fit` one epoch (which exports an
ONNX bundle verified against PyTorch and explains validation images), then `fgvc predict`
with ONNX Runtime and Grad-CAM on the bundle."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import yaml

from fgvc.commands.main import main
from fgvc.commands.predict import main as predict_main
from fgvc.deploy.bundle import load
from fgvc.deploy.explain import explain_images
from fgvc.models import HEADS
from tests.test_commands_train import NUM_CLASSES, workdir, write_config  # noqa: F401

#: Tiny settings: a 2 x 2 map at 32 px (stride 16), 8 reduced channels, CBP in 64 dims.
HEAD_SETTINGS = {"isqrt": {"iterations": 3}, "cbp": {"projection_dim": 64}}


@pytest.mark.slow
@pytest.mark.parametrize("representation", list(HEADS))
def test_fit_export_predict_explain(workdir, representation):  # noqa: F811
    cfg = write_config(workdir, max_epochs=1)
    config = yaml.safe_load(cfg.read_text())
    config["trainer"]["logger"] = config["trainer"]["logger"][:1]  # the CSV logger only
    config["model"]["representation"] = representation
    config["model"]["head"] = HEAD_SETTINGS.get(representation)
    cfg.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(cfg)]) == 0
    run = workdir / "runs" / "tiny" / "version_0"
    bundle_dir = run / "export"
    described = json.loads((bundle_dir / "model.json").read_text())
    net = described["net"]
    assert (net["representation"], net["reduce_dim"]) == (
        representation,
        8 if representation != "gap" else None,
    )
    verified = described["onnx"]["verify"]
    assert verified["top1_identical"] and verified["max_abs_logit_diff"] <= 1e-3

    images = sorted(str(p) for p in (workdir / "data").rglob("*.jpg"))[:4]
    assert images
    out, err = io.StringIO(), io.StringIO()
    argv = [*images, "--model", str(bundle_dir), "--backend", "onnx", "--format", "json"]
    assert predict_main([*argv, "--no-progress"], stdout=out, stderr=err) == 0, err.getvalue()
    predicted = json.loads(out.getvalue())["predictions"]
    assert len(predicted) == len(images)
    for p in predicted:
        assert sum(t["probability"] for t in p["top"]) == pytest.approx(1.0, abs=1e-4)

    bundle = load(bundle_dir)
    assert bundle.spec.representation == representation
    explained, failed = explain_images(bundle, images, progress=False)
    assert not failed and len(explained) == len(images)
    for e in explained:
        assert e.cam.shape == e.crop.shape[:2] and np.isfinite(e.cam).all()
        assert 0.0 <= e.cam.min() and e.cam.max() <= 1.0
        # after one epoch a class may have no positive evidence: then the map is all 0
        assert e.cam.any() or "no positive evidence" in e.caption
    assert sorted(p.name for p in (run / "explain").glob("*.png"))  # fit's own Grad-CAM
