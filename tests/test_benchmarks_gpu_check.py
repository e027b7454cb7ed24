"""benchmarks/gpu_check.py runs end to end on a CPU machine (tiny shapes), so the one-command
device check cannot rot between the sessions that have a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_and_says_what_it_skipped(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    # output to files, not pipes: W&B's service process outlives the demo fit and would
    # keep a pipe open
    with open(tmp_path / "log.txt", "w") as log:
        proc = subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    assert proc.returncode == 0, (tmp_path / "log.txt").read_text()[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    errors = {k: v["error"] for k, v in report.items() if isinstance(v, dict) and "error" in v}
    assert errors == {}
    assert report["environment"]["device"] == "cpu"
    rows = report["meta_layer"]["rows"]
    assert rows and all(r["fgvc_ms"] > 0 and r["eig_ms"] > 0 for r in rows)
    cells = report["throughput"]["cells"]
    assert {c["representation"] for c in cells} == {"isqrt", "gap"}
    assert all(c["images_per_s"] > 0 for c in cells)
    (run,) = report["demo"]["runs"].values()
    assert run["exit_code"] == 0 and run["finite_loss"]
    parity = report["demo"]["bundle_on_device"]
    assert parity["torch_top1_agree"] == parity["images"] == parity["onnx_top1_agree"]
    predicted = report["demo"]["predict"]
    assert predicted["images"] > 0 and predicted["top1_agree"] == predicted["images"]
    assert report["data_loading"]["images_per_s"] > 0
    shards = report["shard_loading"]["rows"]
    assert [r["images"] for r in shards] == [24, 24] and report["shard_loading"][
        "shards_over_folder"
    ] > 0
    text = (tmp_path / "gpu_check.md").read_text()
    assert "## Training throughput" in text and "## Demo fits" in text
    assert "torch.compile cells need CUDA" in text  # what was not measured is said
