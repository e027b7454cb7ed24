"""One command that tells what fgvc does on a GPU machine: speed, memory and a real run.

    make venv && .venv/bin/python benchmarks/gpu_check.py [--out runs/gpu_check]

Writes ``gpu_check.json`` (every figure) and ``gpu_check.md`` (tables) into ``--out`` and
prints the tables. Sections, each timed against ``--budget`` seconds in all (what does not
fit is listed as skipped, never silently dropped):

1. the meta-layer, forward + backward: fgvc against the paper's formulation and an ``eigh``
   square root (the paper's point: Newton-Schulz beats eigendecomposition on GPUs), fp32,
   B = 10 / 32 / 64, d = 256, 28 x 28 maps;
2. training throughput of iSQRT-COV ResNet-50 at 448 px on synthetic tensors (images/s and
   peak memory) in fp32, 16-mixed and bf16-mixed, with and without channels_last, against a
   GAP ResNet-50 in the same run; ``torch.compile`` for the mixed precisions last;
3. a 2-epoch ``fgvc fit`` of the demo config in 16-mixed and bf16-mixed (finite loss, val
   top-1 above chance), its export, the bundle on CUDA (PyTorch and ONNX Runtime, against the
   CPU), and ``fgvc predict --device cuda``;
4. data loading at 448 px (FGVC-Aircraft-like JPEGs, the configs' 8 workers): images/s,
   against the training rate of section 2 - is the GPU starved?
5. the same ImageNet-like images (500 x 375) read from litdata shards and from JPEG folders
   at 224 px (``benchmarks/shards.py``'s loaders, 8 workers): images/s per worker and ratio.

Without CUDA (``make test`` runs it that way) every section runs with tiny shapes on the CPU
and the CUDA-only parts say they were skipped, so the script cannot rot unnoticed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from _timing import sync, time_ms
from meta_layer import IMPLS, fwd_bwd, make_input

from fgvc.models import build_model

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = {"fp32": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}
# (arch, image size, batch, timed steps, warm-up steps) of one throughput cell
FULL_CELL = ("resnet50", 448, 32, 20, 3)
TINY_CELL = ("resnet18", 32, 2, 2, 1)


class Budget:
    """Seconds left of the run's budget; sections ask before they start."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def section(report: dict, name: str, budget: Budget, needs: float, fn: Callable[[], Any]) -> None:
    """Run one section into ``report[name]``; a failure or a lack of time is recorded."""
    if budget.left() < needs:
        report[name] = {"skipped": f"not enough time left ({budget.left():.0f} s < {needs:.0f} s)"}
        return
    start = time.monotonic()
    try:
        report[name] = fn()
    except Exception as err:  # one broken section must not lose the others
        report[name] = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()}
    report[name]["seconds"] = round(time.monotonic() - start, 1)
    print(f"[gpu_check] {name}: {report[name]['seconds']} s", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ sections
def environment(device: torch.device) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device.type,
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return info


def meta_layer(device: torch.device, tiny: bool) -> dict:
    batches, dim, hw = ([2, 4], 16, 7) if tiny else ([10, 32, 64], 256, 28)
    rows = []
    for b in batches:
        x = make_input(b, dim, hw, device)
        times = time_ms({k: fwd_bwd(k, x, 5) for k in IMPLS}, device, 3 if tiny else 10, 2)
        rows.append(
            {
                "B": b,
                "d": dim,
                **{f"{k}_ms": round(v, 3) for k, v in times.items()},
                "authors/fgvc": round(times["authors"] / times["fgvc"], 2),
                "eig/fgvc": round(times["eig"] / times["fgvc"], 2),
            }
        )
    return {"map": f"{hw}x{hw}", "iterations": 5, "dtype": "float32", "rows": rows}


def _train_step(
    device: torch.device,
    representation: str,
    arch: str,
    size: int,
    batch: int,
    precision: str,
    channels_last: bool,
    compile_: bool,
) -> tuple[Callable[[], None], torch.nn.Module]:
    net = build_model(arch, num_classes=200, representation=representation).to(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen).to(device)
    y = torch.randint(0, 200, (batch,), generator=gen).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if compile_:
        net.backbone.compile()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    dtype = PRECISIONS[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(net(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    return step, net


def throughput_cell(
    device: torch.device, tiny: bool, representation: str, precision: str, cl: bool, comp: bool
) -> dict:
    arch, size, batch, steps, warmup = TINY_CELL if tiny else FULL_CELL
    step, _ = _train_step(device, representation, arch, size, batch, precision, cl, comp)
    start = time.perf_counter()
    for _ in range(warmup):  # cuDNN autotuning, compilation
        step()
    sync(device)
    warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    elapsed = time.perf_counter() - start
    cell = {
        "representation": representation,
        "precision": precision,
        "channels_last": cl,
        "compile": comp,
        "images_per_s": round(steps * batch / elapsed, 1),
        "warmup_s": round(warmup_s, 1),
    }
    if device.type == "cuda":
        cell["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        torch.cuda.empty_cache()
    return cell


def throughput(device: torch.device, tiny: bool, budget: Budget, compiled: bool) -> dict:
    """The eager matrix, or (``compiled``) torch.compile with channels_last for the mixed
    precisions."""
    torch.backends.cudnn.benchmark = True
    precisions = ["fp32", "bf16-mixed"] if device.type == "cpu" else list(PRECISIONS)
    if compiled:
        mixed = [p for p in precisions if p != "fp32"]
        plan = [(rep, p, True, True) for p in mixed for rep in ("isqrt", "gap")]
    else:
        plan = [
            (rep, p, cl, False)
            for p in precisions
            for cl in (False, True)
            for rep in ("isqrt", "gap")
        ]
    cells, skipped = [], []
    for rep, prec, cl, comp in plan:
        if budget.left() < (90 if comp else 20):
            skipped.append(f"{rep} {prec} channels_last={cl} compile={comp}: no time left")
            continue
        try:
            cells.append(throughput_cell(device, tiny, rep, prec, cl, comp))
        except Exception as err:
            skipped.append(f"{rep} {prec} channels_last={cl} compile={comp}: {err}")
    arch, size, batch, _, _ = TINY_CELL if tiny else FULL_CELL
    return {"arch": arch, "image_size": size, "batch": batch, "cells": cells, "skipped": skipped}


def _fgvc(
    *args: str, env: dict[str, str], timeout: float, log: Path, cwd: Path = REPO
) -> tuple[int, str, str]:
    """``python -m fgvc ARGS``: (exit code, stdout, stderr). The output goes through files:
    W&B's service process outlives a fit and would hold a pipe open."""
    out, err = log.with_suffix(".out"), log.with_suffix(".err")
    with open(out, "w") as stdout, open(err, "w") as stderr:
        code = subprocess.run(
            [sys.executable, "-m", "fgvc", *args],
            cwd=cwd,
            env=env,
            stdout=stdout,
            stderr=stderr,
            timeout=timeout,
        ).returncode
    return code, out.read_text(), err.read_text()


def _demo_config(out: Path, precision: str, device: torch.device, tiny: bool) -> Path:
    """configs/demo.yaml with this check's settings on top (composed as users compose
    configs); run from ``out``, so the loggers' ``runs`` folder is ``out/runs``."""
    config: dict[str, Any] = {
        "config": [str(REPO / "configs" / "demo.yaml")],
        "name": f"demo-{precision}",
        "trainer": {
            "accelerator": device.type,
            "precision": precision,
            "max_epochs": 1 if tiny else 2,
            "default_root_dir": str(out / "runs"),
            "enable_progress_bar": False,
        },
        "data": {"init_args": {"root": str(out / "data")}},
    }
    if tiny:
        config["data"]["init_args"].update(
            image_size=32, synth_classes=3, synth_train_per_class=8, synth_test_per_class=2,
            synth_image_size=40, batch_size=8,
        )  # fmt: skip
        config["model"] = {"reduce_dim": 8, "head": {"iterations": 3}}
    path = out / f"demo-{precision}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def demo_runs(device: torch.device, tiny: bool, out: Path, budget: Budget) -> dict:
    import csv
    import shutil

    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    precisions = ["bf16-mixed"] if device.type == "cpu" else ["16-mixed", "bf16-mixed"]
    runs: dict[str, Any] = {}
    for precision in precisions:
        if budget.left() < 45:
            runs[precision] = {"skipped": "no time left in the budget"}
            continue
        # a rerun's own results only
        shutil.rmtree(out / "runs" / f"demo-{precision}", ignore_errors=True)
        cfg = _demo_config(out, precision, device, tiny)
        code, _, stderr = _fgvc(
            "fit", "--config", str(cfg), env=env, timeout=max(30, budget.left()),
            log=out / f"fit-{precision}", cwd=out,
        )  # fmt: skip
        run = out / "runs" / f"demo-{precision}" / "version_0"
        result: dict[str, Any] = {"exit_code": code}
        if code != 0:
            result["stderr"] = stderr[-2000:]
            runs[precision] = result
            continue
        with open(run / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        last = {
            k: float(v)
            for r in rows
            for k, v in r.items()
            if v and k.startswith(("val/", "train/loss"))
        }
        result.update(
            val_top1=last.get("val/top1"),
            val_loss=last.get("val/loss"),
            train_loss=last.get("train/loss_epoch"),
            chance=1 / len(yaml.safe_load((run / "hparams.yaml").read_text())["class_names"]),
        )
        result["finite_loss"] = all(
            v == v and abs(v) != float("inf") for v in (result["val_loss"], result["train_loss"])
        )
        result["above_chance"] = (result["val_top1"] or 0) > result["chance"] + 1e-6
        result["bundle"] = str(run / "export")
        runs[precision] = result
    bundle = next((Path(r["bundle"]) for r in runs.values() if "bundle" in r), None)
    report: dict[str, Any] = {"runs": runs}
    if bundle is not None:
        report["bundle_on_device"] = bundle_parity(bundle, device)
        report["predict"] = predict_parity(bundle, out, device, env, budget)
    return report


def bundle_parity(bundle: Path, device: torch.device) -> dict:
    """The exported network on ``device`` (PyTorch, and ONNX Runtime with its CUDA provider
    when installed) against the CPU, on the export's own verification images."""
    import numpy as np
    import onnxruntime as ort

    from fgvc.deploy.bundle import load
    from fgvc.deploy.formats.onnx_fp32 import onnx_logits, onnx_session
    from fgvc.deploy.verify import verification_images

    loaded = load(bundle)
    images, _ = verification_images(loaded.preprocessing, 8)
    with torch.inference_mode():
        cpu = loaded.net(images).double().numpy()
        net = loaded.net.to(device)
        on_device = net(images.to(device)).double().cpu().numpy()
    result = {
        "torch_max_abs_logit_diff": float(np.abs(on_device - cpu).max()),
        "torch_top1_agree": int((on_device.argmax(1) == cpu.argmax(1)).sum()),
        "images": len(images),
    }
    providers = ort.get_available_providers()
    if device.type == "cuda" and "CUDAExecutionProvider" not in providers:
        result["onnx"] = (
            "skipped: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)"
        )
    else:
        session = onnx_session(bundle / "model.onnx", device.type)
        logits = onnx_logits(session, images.numpy())
        result["onnx_providers"] = session.get_providers()
        result["onnx_max_abs_logit_diff"] = float(np.abs(logits - cpu).max())
        result["onnx_top1_agree"] = int((logits.argmax(1) == cpu.argmax(1)).sum())
    return result


def predict_parity(
    bundle: Path, out: Path, device: torch.device, env: dict, budget: Budget
) -> dict:
    images = next((out / "data").glob("*/images"), None)
    if images is None:
        return {"skipped": "no demo images"}
    outputs = {}
    for dev in dict.fromkeys(("cpu", device.type)):  # on a CPU machine, once
        code, stdout, stderr = _fgvc(
            "predict", str(images), "--model", str(bundle), "--backend", "torch",
            "--device", dev, "--format", "json", "--no-progress",
            env=env, timeout=max(30, budget.left()), log=out / f"predict-{dev}",
        )  # fmt: skip
        if code != 0:
            return {"error": stderr[-2000:]}
        outputs[dev] = {p["image"]: p["top"][0] for p in json.loads(stdout)["predictions"]}
    cpu, dev = outputs["cpu"], outputs[device.type]
    return {
        "images": len(cpu),
        "top1_agree": sum(cpu[k]["class_index"] == dev[k]["class_index"] for k in cpu),
        "max_abs_prob_diff": max(abs(cpu[k]["probability"] - dev[k]["probability"]) for k in cpu),
    }


def data_loading(tiny: bool, report: dict) -> dict:
    from data_pipeline import make_replica

    from fgvc.data import AircraftDataModule

    count, workers, batches = (16, 1, 3) if tiny else (256, min(8, os.cpu_count() or 1), 24)
    size = 64 if tiny else 448
    with tempfile.TemporaryDirectory() as tmp:
        make_replica(Path(tmp), count, quality=90)
        dm = AircraftDataModule(
            tmp, image_size=size, batch_size=8 if tiny else 32, num_workers=workers, val_split=0.25
        )
        dm.setup("fit")
        loader = dm.train_dataloader()
        seen, start, first = 0, time.perf_counter(), None
        for epoch_batches in range(1000):
            for images, _ in loader:
                if first is None:
                    first = time.perf_counter() - start  # worker start-up
                    start = time.perf_counter()
                    continue
                seen += len(images)
                if seen >= batches * loader.batch_size:
                    break
            if seen >= batches * loader.batch_size or epoch_batches > 50:
                break
        rate = seen / (time.perf_counter() - start)
    result = {"workers": workers, "image_size": size, "images_per_s": round(rate, 1)}
    train = [
        c["images_per_s"]
        for c in report.get("throughput", {}).get("cells", [])
        if c["representation"] == "isqrt" and c["precision"] in ("bf16-mixed", "fp32")
    ]
    if train:
        fastest = max(train)
        result["fastest_training_images_per_s"] = fastest
        result["starved"] = rate < fastest
    return result


def shard_loading(tiny: bool) -> dict:
    from shards import make_imagenet_like, run

    from fgvc.data.shards.write import write_shards

    images, classes, batch, size, rounds = (24, 4, 8, 32, 1) if tiny else (2000, 100, 64, 224, 2)
    workers = 1 if tiny else min(8, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        folders = make_imagenet_like(Path(tmp) / "folders", images, classes)
        write_shards("folder", folders, str(Path(tmp) / "shards"), check=False, log=str)
        rows = run(folders, Path(tmp) / "shards", [workers], batch, size, rounds)
    rates = {r["loader"].split(",")[0]: r["images_per_s_per_worker"] for r in rows}
    ratio = round(rates["shards"] / rates["folder"], 3)
    return {"image_size": size, "workers": workers, "rows": rows, "shards_over_folder": ratio}


# ------------------------------------------------------------------------------- output
def _table(title: str, rows: list[dict], columns: list[str]) -> list[str]:
    lines = ["", f"## {title}", "", "| " + " | ".join(columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(str(row.get(c, "-")) for c in columns) + " |" for row in rows]
    return lines


def markdown(report: dict) -> str:
    env = report.get("environment", {})
    lines = ["# fgvc GPU check", "", ", ".join(f"{k} {v}" for k, v in env.items())]
    if report.get("note"):
        lines += ["", report["note"]]
    meta = report.get("meta_layer", {})
    if "rows" in meta:
        columns = ["B", "d", "fgvc_ms", "authors_ms", "eig_ms", "authors/fgvc", "eig/fgvc"]
        lines += _table(
            f"Meta-layer forward + backward ({meta['map']}, N = 5, fp32)", meta["rows"], columns
        )
    cells = [
        c
        for key in ("throughput", "throughput_compiled")
        for c in report.get(key, {}).get("cells", [])
    ]
    if cells:
        tp = report["throughput"]
        columns = [
            "representation",
            "precision",
            "channels_last",
            "compile",
            "images_per_s",
            "peak_mem_gib",
            "warmup_s",
        ]
        lines += _table(
            f"Training throughput ({tp['arch']}, {tp['image_size']} px, batch {tp['batch']})",
            cells,
            columns,
        )
    demo = report.get("demo", {})
    if "runs" in demo:
        rows = [{"precision": p, **r} for p, r in demo["runs"].items()]
        columns = [
            "precision",
            "exit_code",
            "train_loss",
            "val_loss",
            "val_top1",
            "chance",
            "finite_loss",
            "above_chance",
        ]
        lines += _table("Demo fits", rows, columns)
        for key in ("bundle_on_device", "predict"):
            if key in demo:
                lines.append(f"- {key}: {json.dumps(demo[key])}")
    if "images_per_s" in report.get("data_loading", {}):
        lines += ["", "## Data loading", "", f"- {json.dumps(report['data_loading'])}"]
    shard = report.get("shard_loading", {})
    if "rows" in shard:
        title = f"Data loading: shards vs JPEG folders ({shard['image_size']} px)"
        columns = ["loader", "images", "epoch_s", "images_per_s_per_worker"]
        lines += _table(title, shard["rows"], columns)
    notes = []
    for name, value in report.items():
        if not isinstance(value, dict):
            continue
        if "error" in value:
            notes.append(f"{name}: error: {value['error']}")
        skipped = value.get("skipped")
        notes += [f"{name}: skipped {s}" for s in (skipped if isinstance(skipped, list) else [])]
        if isinstance(skipped, str):
            notes.append(f"{name}: skipped: {skipped}")
    if notes:
        lines += ["", "## Not measured", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/gpu_check", help="folder for the JSON and markdown")
    parser.add_argument("--budget", type=float, default=450, help="seconds for all sections")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (the default on CPU)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on CPU")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tiny = args.tiny or device.type == "cpu"
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    budget = Budget(args.budget)
    report: dict[str, Any] = {}
    if device.type == "cpu":
        report["note"] = "no CUDA device: tiny shapes on the CPU; CUDA-only parts skipped"
    section(report, "environment", budget, 0, lambda: environment(device))
    section(report, "meta_layer", budget, 10, lambda: meta_layer(device, tiny))
    compiled = device.type == "cuda" or args.compile
    # compiled cells come last: the least important, the slowest to warm up
    section(report, "throughput", budget, 30, lambda: throughput(device, tiny, budget, False))
    section(report, "demo", budget, 60, lambda: demo_runs(device, tiny, out, budget))
    section(report, "data_loading", budget, 20, lambda: data_loading(tiny, report))
    section(report, "shard_loading", budget, 20, lambda: shard_loading(tiny))
    if compiled:
        section(
            report,
            "throughput_compiled",
            budget,
            90,
            lambda: throughput(device, tiny, budget, True),
        )
    else:
        report["throughput_compiled"] = {"skipped": "torch.compile cells need CUDA (or --compile)"}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (out / "gpu_check.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
