"""Each trunk family through the whole tool: `fgvc fit` one epoch with iSQRT-COV (which
exports an ONNX bundle verified against PyTorch), then `fgvc predict` with ONNX Runtime and
`fgvc explain` (Grad-CAM at the trunk's own last layer) on the bundle."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import yaml

from fgvc.commands.explain import main as explain_main
from fgvc.commands.main import main
from fgvc.commands.predict import main as predict_main
from tests.test_commands_train import workdir, write_config  # noqa: F401

#: One of each family; 32 px images: DeiT's 16 px patches give a 2 x 2 token grid.
ARCHS = ["vgg16_bn", "densenet121", "timm/convnext_atto", "timm/deit_tiny_patch16_224"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_fit_export_predict_explain(workdir, arch):  # noqa: F811
    cfg = write_config(workdir, max_epochs=1)
    config = yaml.safe_load(cfg.read_text())
    config["trainer"]["logger"] = config["trainer"]["logger"][:1]  # the CSV logger only
    config["model"]["arch"] = arch
    cfg.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(cfg)]) == 0
    run = workdir / "runs" / "tiny" / "version_0"
    bundle_dir = run / "export"
    described = json.loads((bundle_dir / "model.json").read_text())
    assert (described["net"]["arch"], described["net"]["reduce_dim"]) == (arch, 8)
    verified = described["onnx"]["verify"]
    assert verified["top1_identical"] and verified["max_abs_logit_diff"] <= 1e-3

    images = sorted(str(p) for p in (workdir / "data").rglob("*.jpg"))[:3]
    out, err = io.StringIO(), io.StringIO()
    argv = [*images, "--model", str(bundle_dir), "--backend", "onnx", "--format", "json"]
    assert predict_main([*argv, "--no-progress"], stdout=out, stderr=err) == 0, err.getvalue()
    predicted = json.loads(out.getvalue())["predictions"]
    assert len(predicted) == len(images)

    explained = workdir / "explained"
    err = io.StringIO()
    code = explain_main([*images, "--model", str(bundle_dir), "-o", str(explained)], stderr=err)
    assert code == 0, err.getvalue()
    document = json.loads((explained / "explanations.json").read_text())
    layer = {"vgg16_bn": "features", "densenet121": "relu"}.get(arch, "out")
    assert document["target_layer"] == f"backbone.{layer}"
    assert len(document["images"]) == len(images)
    from PIL import Image

    for entry in document["images"]:
        overlay = np.asarray(Image.open(explained / entry["file"]))
        assert overlay.ndim == 3 and np.isfinite(overlay).all()
