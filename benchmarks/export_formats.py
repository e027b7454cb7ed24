"""Export formats side by side, in one run: the int8 ONNX model's accuracy change and CPU
speed-up against the float32 ONNX model, and pt2 / ONNX against eager PyTorch.

A trained checkpoint (``--model``: a .ckpt, a run folder or ``best``) is exported with
``fgvc export``'s own code (``onnx``, ``onnx-int8``, ``pt2``, each verified), the formats are
loaded as ``fgvc predict`` loads them, and then:

* accuracy: top-1 of every format on a labelled test split (``--data``: a dataset in the
  CUB-200-2011 layout, e.g. ``fgvc data synth``), preprocessed as ``fgvc predict`` does,
  without flip TTA, in batches of ``--eval-batch``; the int8 model's top-1 agreement with
  float32 ONNX and the change in accuracy;
* speed: median latency per batch (``--batch``) on the CPU, the formats interleaved round by
  round (benchmarks/_timing.py) so that load from elsewhere on the machine hits them alike;
  ratios against eager PyTorch and, for int8, against float32 ONNX.

    fgvc data synth --root data                       # the labelled set (make demo does both)
    fgvc fit --config configs/demo.yaml                # a trained checkpoint
    python benchmarks/export_formats.py --model best --data data/synthetic
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from _timing import time_ms
from inference import cpu_name

from fgvc.data import CUB200
from fgvc.deploy.bundle import load
from fgvc.deploy.export import export_checkpoint
from fgvc.deploy.formats import by_name
from fgvc.deploy.formats.base import torch_runner
from fgvc.deploy.formats.onnx_fp32 import onnx_runner
from fgvc.runs import RUNS_ROOT, resolve_checkpoint

FORMATS = ("onnx", "onnx-int8", "pt2")
#: Row label of each runtime, eager PyTorch first (the speed baseline).
LABELS = {
    "eager": "eager PyTorch",
    "pt2": "pt2 (torch.export)",
    "onnx": "ONNX Runtime fp32",
    "onnx-int8": "ONNX Runtime int8",
}


def labelled_images(
    data: str, split: str, prep, limit: int | None
) -> tuple[torch.Tensor, np.ndarray]:
    """The split's images as ``fgvc predict`` prepares them, and their labels."""
    dataset = CUB200(data, split=split)
    samples = dataset.samples[:limit] if limit else dataset.samples
    batch = prep.batch([prep.load(path) for path, _ in samples])
    return batch, np.array([label for _, label in samples])


def logits_of(
    run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int
) -> np.ndarray:
    return torch.cat([run(x[i : i + batch]) for i in range(0, len(x), batch)]).double().numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="best", help=".ckpt, run folder or 'best'")
    parser.add_argument("--runs-root", default=RUNS_ROOT)
    parser.add_argument("--data", default="data/synthetic", help="CUB-layout labelled dataset")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, help="at most this many images")
    parser.add_argument("--eval-batch", type=int, default=32)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs at batch 1")
    parser.add_argument("--repeats-batched", type=int, default=5, help="at larger batches")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpt = resolve_checkpoint(args.model, runs_root=args.runs_root)

    with tempfile.TemporaryDirectory() as tmp:
        print(f"exporting {ckpt} ...", file=sys.stderr)
        bundle = export_checkpoint(ckpt, Path(tmp) / "bundle", ("safetensors", *FORMATS))
        loaded = load(bundle)
        prep = loaded.preprocessing
        runners = {"eager": torch_runner(loaded.net, "cpu")}
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads  # as many as torch's
        for name in FORMATS:
            fmt = by_name(name)
            path = bundle / fmt.file
            onnx = fmt.runtime == "onnxruntime"
            runners[name] = onnx_runner(path, "cpu", options) if onnx else fmt.load(path, "cpu")
        sizes = {name: (bundle / by_name(name).file).stat().st_size / 2**20 for name in FORMATS}
        sizes["eager"] = (bundle / "model.safetensors").stat().st_size / 2**20

        x, labels = labelled_images(args.data, args.split, prep, args.limit)
        print(f"accuracy on {len(x)} {args.split} images ...", file=sys.stderr)
        logits = {name: logits_of(run, x, args.eval_batch) for name, run in runners.items()}
        top1 = {name: float((out.argmax(1) == labels).mean()) for name, out in logits.items()}
        eager = logits["eager"]

        timings = {}
        gen = torch.Generator().manual_seed(0)
        for batch in args.batch:
            inp = torch.randn(batch, 3, prep.image_size, prep.image_size, generator=gen)
            repeats = args.repeats if batch == 1 else args.repeats_batched
            print(f"timing batch {batch}: {repeats} runs each ...", file=sys.stderr)
            fns = {name: (lambda run=run, inp=inp: run(inp)) for name, run in runners.items()}
            timings[batch] = time_ms(fns, "cpu", repeats)

    argv_text = " ".join(argv if argv is not None else sys.argv[1:])
    print(f"$ python benchmarks/export_formats.py {argv_text}")
    print(
        f"{loaded.spec.describe()}, {prep.image_size} px; {len(x)} labelled {args.split} "
        f"images of {args.data}; CPU: {cpu_name()}, {args.threads} threads; torch "
        f"{torch.__version__}, onnxruntime {ort.__version__}"
    )
    print()
    print("| runtime | file (MiB) | top-1 | top-1 = eager | max abs logit diff vs eager |")
    print("|---|---:|---:|---:|---:|")
    for name, out in logits.items():
        agree = float((out.argmax(1) == eager.argmax(1)).mean())
        diff = float(np.abs(out - eager).max())
        print(
            f"| {LABELS[name]} | {sizes[name]:.1f} | {top1[name]:.4f} | {agree:.4f} | {diff:.1e} |"
        )
    int8, fp32 = logits["onnx-int8"], logits["onnx"]
    agreement = float((int8.argmax(1) == fp32.argmax(1)).mean())
    print()
    print(
        f"int8 vs fp32 ONNX: top-1 agreement {agreement:.4f}, "
        f"top-1 {top1['onnx-int8']:.4f} vs {top1['onnx']:.4f} "
        f"({100 * (top1['onnx-int8'] - top1['onnx']):+.1f} points), file "
        f"{sizes['onnx-int8'] / sizes['onnx']:.2f}x the size"
    )
    print()
    print("| batch | runtime | latency (ms / batch) | vs eager | int8 vs fp32 ONNX |")
    print("|---:|---|---:|---:|---:|")
    for batch, times in timings.items():
        for name, ms in times.items():
            ratio = f"**{times['onnx'] / ms:.2f}x**" if name == "onnx-int8" else ""
            print(f"| {batch} | {LABELS[name]} | {ms:.1f} | {times['eager'] / ms:.2f}x | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
