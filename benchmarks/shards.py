"""Training-pipeline throughput from litdata shards against the same images as JPEG folders.

Writes an ImageNet-like class-folder replica (``--images`` photo-like 500 x 375 JPEGs of
about ImageNet's bytes per image, in ``--classes`` class folders, plus a one-image-a-class
``val/``), shards it with ``fgvc data shard``'s writer, and times full training epochs of
the shipped pipeline (random-resized crop 224 + flip, uint8 out, ``--batch`` images a batch)
through ``FolderDataModule`` (files) and ``ShardDataModule`` (litdata stream) with 1 and 2
DataLoader workers. Rounds interleave the four loaders and the median epoch is reported, as
images per second per worker and the shard/folder ratio; both read warm page-cache data
(what a local NVMe disk gives after the first epoch - object storage adds its download).

    python benchmarks/shards.py [--images 3000] [--rounds 3] [--json out.json]
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

WIDTH, HEIGHT = 500, 375


def photo_like(rng: np.random.Generator) -> np.ndarray:
    """Gradient, blurred blobs, hard-edged shapes, texture and sensor noise (JPEG sizes
    like photos', unlike flat synthetic images)."""
    yy = np.linspace(0, 1, HEIGHT, dtype=np.float32)[:, None, None]
    top, bottom = rng.uniform(60, 220, 3), rng.uniform(40, 240, 3)
    image = top + (bottom - top) * yy + np.zeros((HEIGHT, WIDTH, 3), np.float32)
    blobs = rng.normal(0, 1, (HEIGHT // 25, WIDTH // 25, 3)).astype(np.float32)
    image += 30 * cv2.resize(blobs, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(5, 12))):
        points = rng.integers([0, 0], [WIDTH, HEIGHT], (int(rng.integers(3, 7)), 2))
        cv2.fillPoly(image, [points.astype(np.int32)], rng.uniform(0, 255, 3).tolist())
    texture = rng.normal(0, 1, (HEIGHT // 2, WIDTH // 2, 3)).astype(np.float32)
    image += 30 * cv2.resize(texture, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
    image += rng.normal(0, 10, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_imagenet_like(root: Path, images: int, classes: int, seed: int = 0) -> Path:
    """``root/{train,val}/<class>/<n>.JPEG``: ``images`` training images over ``classes``
    classes and one validation image a class (quality 90, as ImageNet's encoders mostly)."""
    rng = np.random.default_rng(seed)
    params = [cv2.IMWRITE_JPEG_QUALITY, 90]
    for split, count in (("train", images), ("val", classes)):
        for k in range(count):
            folder = root / split / f"n{k % classes:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{split}_{k:06d}.JPEG"), photo_like(rng)[..., ::-1], params)
    return root


def loaders(folders: Path, shards: Path, workers: int, batch: int, size: int) -> dict:
    """name -> a training DataLoader of the same images and pipeline."""
    from fgvc.data import FolderDataModule, ShardDataModule

    args = {"batch_size": batch, "num_workers": workers, "image_size": size, "seed": 0}
    out = {}
    for name, module in (
        ("folder", FolderDataModule(str(folders), **args)),
        ("shards", ShardDataModule(str(shards), **args)),
    ):
        module.setup("fit")
        out[f"{name}, {workers} worker{'s' * (workers > 1)}"] = module.train_dataloader()
    return out


def epoch_seconds(loader) -> tuple[float, int]:
    start, seen = time.perf_counter(), 0
    for images, _ in loader:
        seen += len(images)
    return time.perf_counter() - start, seen


def run(folders: Path, shards: Path, workers: list[int], batch: int, size: int, rounds: int):
    """Median epoch time of each loader over interleaved rounds (after one warm-up epoch)."""
    all_loaders = {}
    for count in workers:
        all_loaders.update(loaders(folders, shards, count, batch, size))
    for loader in all_loaders.values():
        epoch_seconds(loader)  # warm-up: page cache, worker start-up paths
    times: dict[str, list[float]] = {name: [] for name in all_loaders}
    images: dict[str, int] = {}
    for _ in range(rounds):
        for name, loader in all_loaders.items():
            seconds, images[name] = epoch_seconds(loader)
            times[name].append(seconds)
    rows = []
    for name, samples in times.items():
        median = statistics.median(samples)
        count = max(1, int(name.split(", ")[1].split()[0]))
        rows.append(
            {
                "loader": name,
                "images": images[name],
                "epoch_s": round(median, 3),
                "images_per_s_per_worker": round(images[name] / median / count, 1),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    from fgvc.data.shards.write import write_shards

    with tempfile.TemporaryDirectory() as tmp:
        folders = make_imagenet_like(Path(tmp) / "folders", args.images, args.classes)
        files = list((folders / "train").rglob("*.JPEG"))
        kib = sum(p.stat().st_size for p in files) / len(files) / 1024
        shards = Path(tmp) / "shards"
        write_shards("folder", folders, str(shards), check=False, log=lambda line: None)
        rows = run(folders, shards, args.workers, args.batch, args.size, args.rounds)
    print(
        f"{args.images} JPEGs {WIDTH}x{HEIGHT} ({kib:.0f} KiB each), {args.size} px random-resized "
        f"crop + flip, batch {args.batch}, median of {args.rounds} epochs"
    )
    print(f"{'loader':<20} {'epoch s':>8} {'img/s/worker':>13} {'shards/folder':>14}")
    by_name = {r["loader"]: r for r in rows}
    for row in rows:
        folder = by_name[row["loader"].replace("shards", "folder")]
        ratio = row["images_per_s_per_worker"] / folder["images_per_s_per_worker"]
        row["shards_over_folder"] = round(ratio, 3)
        print(
            f"{row['loader']:<20} {row['epoch_s']:>8.2f} {row['images_per_s_per_worker']:>13.1f} "
            f"{ratio:>13.2f}x"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
