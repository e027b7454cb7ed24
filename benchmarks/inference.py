"""Inference speed of the exported ONNX model on ONNX Runtime against eager PyTorch.

One run, same weights and inputs: an iSQRT-COV ResNet-50 (d = 256, N = 5, 200 classes) at
448 px, exported with fgvc's exporter (fgvc.deploy.formats.onnx_fp32.export_onnx, as
``fgvc export``), timed at batch 1 (latency) and batch 32 (throughput) on the CPU, and on
CUDA too when a GPU is present (ONNX Runtime needs its CUDA provider, i.e. the
onnxruntime-gpu package). Top-1 of ONNX Runtime is compared with eager PyTorch on the timed
batches.

    python benchmarks/inference.py                          # CPU (and CUDA when present)
    python benchmarks/inference.py --batch 1 8 --repeats 5 --repeats-batched 3
    python benchmarks/inference.py --arch resnet18 --image-size 224   # quicker

Weights are random (speed does not depend on them); the timings are medians over
``--repeats`` runs for batch 1 and ``--repeats-batched`` for larger batches, after one
warm-up, with the runtimes interleaved round by round so that load from elsewhere on the
machine affects them alike.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from _timing import time_ms

from fgvc.deploy.formats import example_input
from fgvc.deploy.formats.onnx_fp32 import export_onnx, onnx_logits, onnx_session
from fgvc.models import build_model


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def eager_runner(
    model: torch.nn.Module, x: torch.Tensor, outputs: dict, key: str
) -> Callable[[], object]:
    def run() -> torch.Tensor:
        with torch.inference_mode():
            out = model(x)
        outputs[key] = out.float().cpu().numpy()
        return out

    return run


def ort_runner(
    session: ort.InferenceSession, x: np.ndarray, outputs: dict, key: str
) -> Callable[[], object]:
    def run() -> np.ndarray:
        outputs[key] = onnx_logits(session, x)
        return outputs[key]

    return run


def ort_session(path: Path, device: str, threads: int) -> ort.InferenceSession | None:
    if device != "cpu" and "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    options = ort.SessionOptions()  # all graph optimizations: onnxruntime's default
    if device == "cpu":
        options.intra_op_num_threads = threads
    return onnx_session(path, device, options)


def bench_device(
    model: torch.nn.Module,
    onnx_path: Path,
    device: str,
    args: argparse.Namespace,
) -> list[dict]:
    rows = []
    net = model.to(device)
    nets = {"eager PyTorch": net}
    if args.channels_last:
        channels_last = copy.deepcopy(net).to(memory_format=torch.channels_last)
        nets["eager PyTorch, channels_last"] = channels_last
    session = ort_session(onnx_path, device, args.threads)
    if session is None:
        print(
            f"{device}: ONNX Runtime has no CUDA provider (pip install onnxruntime-gpu); "
            f"eager only",
            file=sys.stderr,
        )
    gen = torch.Generator().manual_seed(0)
    for batch in args.batch:
        x_cpu = torch.randn(batch, 3, args.image_size, args.image_size, generator=gen)
        x = x_cpu.to(device)
        x_np = x_cpu.numpy()
        outputs: dict[str, np.ndarray] = {}
        fns: dict[str, Callable[[], object]] = {}
        for name, m in nets.items():
            inp = x.contiguous(memory_format=torch.channels_last) if "channels" in name else x
            fns[name] = eager_runner(m, inp, outputs, name)
        if session is not None:
            fns["ONNX Runtime"] = ort_runner(session, x_np, outputs, "ONNX Runtime")
        repeats = args.repeats if batch == 1 else args.repeats_batched
        print(f"  {device} batch {batch}: {repeats} timed runs each ...", file=sys.stderr)
        times = time_ms(fns, device, repeats)
        base = times["eager PyTorch"]
        ref = outputs["eager PyTorch"]
        for name, ms in times.items():
            out = outputs[name]
            rows.append(
                {
                    "device": device,
                    "batch": batch,
                    "runtime": name,
                    "ms": ms,
                    "ips": batch / ms * 1e3,
                    "speedup": base / ms,
                    "top1": int((out.argmax(1) == ref.argmax(1)).sum()),
                    "maxdiff": float(np.abs(out - ref).max()),
                }
            )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| device | batch | runtime | latency (ms / batch) | images / s | vs eager | "
        "top-1 = eager | max abs logit diff |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['device']} | {r['batch']} | {r['runtime']} | {r['ms']:.1f} | "
            f"{r['ips']:.2f} | {r['speedup']:.2f}x | {r['top1']}/{r['batch']} | "
            f"{r['maxdiff']:.1e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--reduce-dim", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--num-classes", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs at batch 1")
    parser.add_argument(
        "--repeats-batched", type=int, default=2, help="timed runs at larger batches"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--devices", nargs="+", choices=("cpu", "cuda"), help="default: cpu, and cuda if present"
    )
    parser.add_argument(
        "--channels-last", action="store_true", help="also time eager PyTorch in channels_last"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    torch.manual_seed(0)
    model = build_model(
        arch=args.arch,
        num_classes=args.num_classes,
        representation="isqrt",
        reduce_dim=args.reduce_dim,
        head={"iterations": args.iterations},
        pretrained=None,
    ).eval()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        start = time.perf_counter()
        info = export_onnx(model, example_input(args.image_size), onnx_path)
        export_s = time.perf_counter() - start
        print(f"exported with {info['exporter']} in {export_s:.0f} s", file=sys.stderr)
        rows = []
        for device in devices:
            rows += bench_device(model, onnx_path, device, args)
    print(
        f"$ python benchmarks/inference.py {' '.join(argv if argv is not None else sys.argv[1:])}"
    )
    print(
        f"iSQRT-COV {args.arch}, d={args.reduce_dim}, N={args.iterations}, "
        f"{args.num_classes} classes, {args.image_size} px, float32; CPU: {cpu_name()}, "
        f"{args.threads} threads"
        + (f"; GPU: {torch.cuda.get_device_name()}" if "cuda" in devices else "")
    )
    print(
        f"torch {torch.__version__}, onnxruntime {ort.__version__}; ONNX from "
        f"{info['exporter']}, opset {info['opset']}; medians of {args.repeats} (batch 1) / "
        f"{args.repeats_batched} (larger) runs"
    )
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
