"""Serving speed: requests per second and latency of ``fgvc serve`` at 1, 8 and 32
concurrent clients, against ``fgvc predict`` on the same photos, in one run.

    python benchmarks/serve.py                                   # ResNet-50, 448 px, CPU
    python benchmarks/serve.py --arch resnet18 --image-size 224 --requests 64   # quicker

An iSQRT-COV bundle with random weights (speed does not depend on them; d=256, N=5, 200
classes) is written with ONNX, as ``fgvc export`` writes it, and the photos are synthetic
500 x 375 JPEGs. Timed, on the same photos:

* ``fgvc predict`` once per photo - what a script without a server does per request: the
  command's wall time (start-up, model load, one photo); ``--cli-runs`` of them;
* ``fgvc predict`` on all ``--requests`` photos at once (its batches of 32): photos per
  second, start-up included;
* ``fgvc serve`` (started once, untimed; warmed up), at each concurrency: that many clients
  (threads, one HTTP request at a time each, multipart uploads) send ``--requests`` requests
  in all: requests per second, and the median (p50) and 95th percentile (p95) of the
  latency each client saw.

Ratios: the server's requests per second over the folder run's photos per second (with its
start-up, and without it: the folder run less the one-photo run), and the one-shot command's
time over the server's p50 latency.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from _bundle import export_random_net
from inference import cpu_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.*
from tests.serve_helpers import ServerProcess, http, multipart  # noqa: E402


def write_bundle(folder: Path, args: argparse.Namespace) -> Path:
    """A randomly initialized network of the benchmark's size, exported as a bundle."""
    return export_random_net(
        folder,
        arch=args.arch,
        num_classes=args.num_classes,
        image_size=args.image_size,
        reduce_dim=args.reduce_dim,
        iterations=args.iterations,
    )


def write_photos(folder: Path, count: int) -> list[Path]:
    """Smooth synthetic 500 x 375 JPEGs (of photo-like size in bytes, unlike noise)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        image = cv2.resize(small, (500, 375), interpolation=cv2.INTER_CUBIC)
        image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
        path = folder / f"photo_{i:03d}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def fgvc_predict(inputs: list[Path], bundle: Path, out: Path) -> float:
    """Wall seconds of one ``fgvc predict`` command."""
    command = [sys.executable, "-m", "fgvc", "predict", *map(str, inputs), "--model", str(bundle)]
    command += ["--format", "json", "--output", str(out), "--no-progress"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def load_server(url: str, photos: list[Path], clients: int, requests: int) -> dict:
    """``requests`` uploads from ``clients`` threads: requests/s, latency p50 / p95 (ms)."""
    bodies = [multipart("image", p.name, p.read_bytes()) for p in photos]

    def one(i: int) -> float:
        body, headers = bodies[i % len(bodies)]
        started = time.perf_counter()
        status, answer, _ = http("POST", f"{url}/predict", body, headers, timeout=300)
        if status != 200:
            raise RuntimeError(f"{status}: {answer[:200]!r}")
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "rps": requests / wall,
        "p50": statistics.median(latencies) * 1e3,
        "p95": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))] * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--reduce-dim", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--num-classes", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=96, help="per concurrency level")
    parser.add_argument("--cli-runs", type=int, default=3, help="one-photo fgvc predict runs")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-timeout", type=float, default=0.01)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundle = write_bundle(root, args)
        photos = write_photos(root / "photos", args.requests)
        print(f"bundle and {len(photos)} photos written; timing fgvc predict", file=sys.stderr)
        one_shot = statistics.median(
            fgvc_predict([photos[i]], bundle, root / "one.json") for i in range(args.cli_runs)
        )
        folder_s = fgvc_predict(photos, bundle, root / "all.json")
        folder_ips = len(photos) / folder_s
        # the folder run less one command's start-up, model load and first photo
        steady_ips = (len(photos) - 1) / max(folder_s - one_shot, 1e-9)
        server = ServerProcess(
            bundle,
            root,
            "--no-explain",
            "--max-batch-size",
            str(args.max_batch_size),
            "--batch-timeout",
            str(args.batch_timeout),
            "--timeout",
            "900",  # a slow CPU and 32 clients: requests wait for several batches
        )
        try:
            server.wait_ready(600)
            print("server ready; warming up", file=sys.stderr)
            load_server(server.url, photos, max(args.clients), max(args.clients))
            rows = []
            for clients in args.clients:
                print(f"  {clients} clients ...", file=sys.stderr)
                rows.append(load_server(server.url, photos, clients, args.requests))
        finally:
            server.stop()
    print(f"$ python benchmarks/serve.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(
        f"iSQRT-COV {args.arch}, d={args.reduce_dim}, N={args.iterations}, {args.num_classes} "
        f"classes, {args.image_size} px, ONNX Runtime; 500x375 JPEGs; CPU: {cpu_name()}, "
        f"{os.cpu_count()} cores; fgvc serve --max-batch-size {args.max_batch_size} "
        f"--batch-timeout {args.batch_timeout}"
    )
    print(
        f"fgvc predict, one photo per command: {one_shot:.2f} s (median of {args.cli_runs}); "
        f"on all {len(photos)} photos at once: {folder_s:.1f} s = {folder_ips:.2f} photos/s "
        f"(start-up included), about {steady_ips:.2f} photos/s once started (the folder run "
        f"less the one-photo run)"
    )
    print(
        "| clients | requests/s | p50 latency (ms) | p95 latency (ms) | "
        "requests/s vs fgvc predict on the folder (started / once started) | "
        "one-shot fgvc predict time / p50 |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['clients']} | {r['rps']:.2f} | {r['p50']:.0f} | {r['p95']:.0f} | "
            f"{r['rps'] / folder_ips:.2f}x / {r['rps'] / steady_ips:.2f}x | "
            f"{one_shot * 1e3 / r['p50']:.1f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
