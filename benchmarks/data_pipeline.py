"""Per-worker throughput of the FGVC-Aircraft training pipeline: fgvc vs the authors'.

Writes a replica of FGVC-Aircraft (1280 x 853 JPEGs with a 20-pixel banner, photo-like
content, about the real archive's bytes per image) and measures, in one process with one
thread (what one DataLoader worker gets), samples per second of:

* decode only (Pillow and OpenCV): the ceiling for any pipeline that decodes at full size;
* the authors' pipeline: PIL open + convert, torchvision Resize((512, 512)),
  CenterCrop(448), RandomHorizontalFlip, ToTensor, Normalize;
* fgvc's: ``FGVCAircraft`` (read, OpenCV decode, banner crop) + ``build_transforms(
  "aircraft", train=True)`` ending in a uint8 tensor (normalized later on the device), as
  ``AircraftDataModule`` ships it; plus variants (normalizing in the worker, antialiased
  resize) and the same at 224 pixels, where reduced-size DCT decoding applies.

Pipelines are timed round-robin over several rounds and the median is reported, so load
from other processes hits all of them alike.

    python benchmarks/data_pipeline.py [--images 48] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision.transforms as T
from _timing import time_ms
from PIL import Image

from fgvc.data import FGVCAircraft
from fgvc.data.io import load_rgb
from fgvc.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_transforms,
    decode_min_size,
    normalize_images,
)

WIDTH, HEIGHT, BANNER = 1280, 853, 20


def photo_like(rng: np.random.Generator) -> np.ndarray:
    """Sky gradient, soft clouds, a few hard-edged shapes, fine detail and sensor noise."""
    yy = np.linspace(0, 1, HEIGHT, dtype=np.float32)[:, None, None]
    top, bottom = rng.uniform(120, 220, 3), rng.uniform(100, 240, 3)
    image = top + (bottom - top) * yy + np.zeros((HEIGHT, WIDTH, 3), np.float32)
    clouds = rng.normal(0, 1, (HEIGHT // 64, WIDTH // 64)).astype(np.float32)
    image += 25 * cv2.resize(clouds, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)[..., None]
    for _ in range(int(rng.integers(6, 16))):
        points = rng.integers([0, 0], [WIDTH, HEIGHT], (int(rng.integers(3, 7)), 2))
        cv2.fillPoly(image, [points.astype(np.int32)], rng.uniform(0, 255, 3).tolist())
    detail = rng.normal(0, 1, (HEIGHT // 4, WIDTH // 4)).astype(np.float32)
    image += 8 * cv2.resize(detail, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)[..., None]
    image += rng.normal(0, 2.5, image.shape).astype(np.float32)
    image[-BANNER:] = (235, 235, 235)
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    cv2.putText(pixels, "(c) replica", (8, HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0))
    return pixels


def make_replica(root: Path, count: int, quality: int, seed: int = 0) -> list[Path]:
    """FGVC-Aircraft layout with ``count`` images in the trainval split."""
    data = root / "fgvc-aircraft-2013b" / "data"
    (data / "images").mkdir(parents=True)
    names = ["707-320", "F-16A/B", "F/A-18", "Cessna 172"]
    (data / "variants.txt").write_text("\n".join(names) + "\n")
    rng = np.random.default_rng(seed)
    lines, paths = [], []
    for k in range(count):
        image_id = f"{k * 7919 % 10_000_000:07d}"
        path = data / "images" / f"{image_id}.jpg"
        Image.fromarray(photo_like(rng)).save(path, quality=quality)
        lines.append(f"{image_id} {names[k % len(names)]}")
        paths.append(path)
    (data / "images_variant_trainval.txt").write_text("\n".join(lines) + "\n")
    return paths


def authors_pipeline(crop: int) -> T.Compose:
    resize = round(crop * 512 / 448)
    return T.Compose(
        [
            T.Resize((resize, resize)),
            T.CenterCrop(crop),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def build_pipelines(root: Path, paths: list[Path]) -> dict:
    """name -> callable(index) producing one training sample."""
    pipelines = {}

    def pil_decode(i: int) -> object:
        with Image.open(paths[i]) as image:
            return image.convert("RGB")

    pipelines["decode only, Pillow"] = pil_decode
    pipelines["decode only, OpenCV"] = lambda i: load_rgb(paths[i])
    for size in (448, 224):
        authors = authors_pipeline(size)
        pipelines[f"authors (PIL + torchvision) {size}"] = lambda i, t=authors: t(pil_decode(i))

        def fgvc(normalize: bool = False, antialias: bool = False, fast: bool = True, s=size):
            dataset = FGVCAircraft(
                root,
                "trainval",
                transform=build_transforms(
                    "aircraft", True, s, normalize=normalize, antialias=antialias, seed=0
                ),
                decode_min_size=decode_min_size("aircraft", True, s) if fast else None,
            )
            return lambda i: dataset[i]

        pipelines[f"fgvc uint8 (shipped default) {size}"] = fgvc()
        if size == 448:
            pipelines[f"fgvc normalized in worker {size}"] = fgvc(normalize=True)
            pipelines[f"fgvc antialias (authors' pixels) {size}"] = fgvc(antialias=True)
        else:
            pipelines[f"fgvc uint8, full-size decode {size}"] = fgvc(fast=False)
    return pipelines


def measure(pipelines: dict, count: int, rounds: int) -> dict[str, float]:
    """Images per second of each pipeline (median of interleaved rounds of ``count``)."""
    for function in pipelines.values():  # warm-up: one image each
        function(0)
    passes = {
        name: (lambda f=function: [f(i) for i in range(count)])
        for name, function in pipelines.items()
    }
    ms = time_ms(passes, "cpu", rounds, warmup=0)
    return {name: count / (t / 1e3) for name, t in ms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quality", type=int, default=93, help="JPEG quality of the replica")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="fgvc-bench-") as tmp:
        root = Path(tmp)
        paths = make_replica(root, args.images, args.quality)
        kilobytes = statistics.mean(p.stat().st_size for p in paths) / 1000
        rates = measure(build_pipelines(root, paths), args.images, args.rounds)

    batch = torch.randint(0, 256, (32, 3, 448, 448), dtype=torch.uint8)
    start = time.perf_counter()
    for _ in range(3):
        normalize_images(batch)
    per_sample_ms = (time.perf_counter() - start) / 3 / 32 * 1000

    limit = max(rates["decode only, Pillow"], rates["decode only, OpenCV"])
    print(
        f"replica: {args.images} JPEGs {WIDTH}x{HEIGHT}, quality {args.quality}, "
        f"{kilobytes:.0f} kB each (real archive: ~275 kB); one thread; median of "
        f"{args.rounds} rounds"
    )
    print(f"{'pipeline':44s} {'samples/s':>10s} {'vs authors':>11s} {'of decode':>10s}")
    for name, rate in rates.items():
        size = 224 if name.endswith("224") else 448
        authors = rates[f"authors (PIL + torchvision) {size}"]
        print(f"{name:44s} {rate:10.1f} {rate / authors:10.2f}x {rate / limit:9.0%}")
    print(f"device-side normalization, measured on this CPU: {per_sample_ms:.2f} ms/sample")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "images": args.images,
                    "kB_per_image": kilobytes,
                    "samples_per_s": rates,
                    "cpu_normalize_ms_per_sample": per_sample_ms,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
