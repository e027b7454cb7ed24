"""Hand-made, tiny replicas of the dataset layouts, written with known contents.

The writers here use Pillow and scipy directly (never ``fgvc`` code), so the tests compare
``fgvc``'s parsers and decoders against an independent truth. ``tests/test_replicas.py``
checks that the replicas are what they claim to be.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io as sio
from PIL import Image

BANNER = 20
BANNER_RGB = (255, 0, 0)

CAR_NAMES = [
    "AM General Hummer SUV 2000",
    "Ram C/V Cargo Van Minivan 2012",
    "Audi S4 Sedan 2007",
    "BMW M3 Coupe 2012",
]
AIRCRAFT_VARIANTS = ["707-320", "F-16A/B", "F/A-18", "Cessna 172", "DHC-8-300", "A300B4"]
AIRCRAFT_FAMILIES = ["Boeing 707", "F-16", "F/A-18", "Cessna 172", "DHC-8", "A300"]
AIRCRAFT_MAKERS = ["Boeing", "Lockheed Martin", "McDonnell Douglas", "Cessna", "de Havilland"]
# variant -> (family, manufacturer)
AIRCRAFT_TREE = {
    "707-320": ("Boeing 707", "Boeing"),
    "F-16A/B": ("F-16", "Lockheed Martin"),
    "F/A-18": ("F/A-18", "McDonnell Douglas"),
    "Cessna 172": ("Cessna 172", "Cessna"),
    "DHC-8-300": ("DHC-8", "de Havilland"),
    "A300B4": ("A300", "Boeing"),  # wrong on purpose: only the files matter
}


def pattern(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth, seed-dependent RGB uint8 image (JPEG keeps it well)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    channels = []
    for _ in range(3):
        a, b, c = rng.uniform(-1, 1, 3)
        channels.append(128 + 90 * np.sin(3 * a * xx + 3 * b * yy + 6 * c))
    return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


def write_jpeg(path: Path, array: np.ndarray, mode: str = "RGB", quality: int = 95) -> None:
    """Write ``array`` (RGB) as a JPEG in ``mode`` ("RGB", "L" or "CMYK") with Pillow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).convert(mode).save(path, quality=quality)


@dataclass
class Replica:
    """Where a replica lives and what a correct parser must find there."""

    root: Path
    classes: list[str]
    samples: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    ids: dict[str, list[str]] = field(default_factory=dict)
    special: dict[str, str] = field(default_factory=dict)


def make_cub(
    root: Path,
    num_classes: int = 3,
    per_class: tuple[int, int] = (3, 2),
    size: tuple[int, int] = (36, 48),
) -> Replica:
    """CUB_200_2011/ with shuffled train/test flags, a grayscale and a CMYK JPEG."""
    folder = root / "CUB_200_2011"
    classes = [f"{c + 1:03d}.Bird_{chr(65 + c)}_{c}" for c in range(num_classes)]
    replica = Replica(root, classes, {"train": [], "test": []}, {"train": [], "test": []})
    images, labels, split, boxes = [], [], [], []
    rng = np.random.default_rng(0)
    image_id = 0
    for c, name in enumerate(classes):
        flags = [1] * per_class[0] + [0] * per_class[1]
        rng.shuffle(flags)
        for k, flag in enumerate(flags):
            image_id += 1
            rel = f"{name}/{name.split('.')[1]}_{k:04d}_{image_id}.jpg"
            mode = "L" if image_id == 2 else "CMYK" if image_id == 4 else "RGB"
            write_jpeg(folder / "images" / rel, pattern(*size, image_id), mode)
            if mode != "RGB":
                replica.special[mode] = str(folder / "images" / rel)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c + 1}")
            split.append(f"{image_id} {flag}")
            boxes.append(f"{image_id} 1.0 2.0 10.0 12.0")
            key = "train" if flag else "test"
            replica.samples[key].append((str(folder / "images" / rel), c))
            replica.ids[key].append(str(image_id))
    for filename, lines in (
        ("images.txt", images),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
        ("bounding_boxes.txt", boxes),
        ("classes.txt", [f"{c + 1} {n}" for c, n in enumerate(classes)]),
    ):
        (folder / filename).write_text("\n".join(lines) + "\n")
    (root / "attributes.txt").write_text("1 has_bill_shape::curved\n")  # the stray file
    return replica


def _cell(names: list[str]) -> np.ndarray:
    cell = np.empty((1, len(names)), dtype=object)
    for i, name in enumerate(names):
        cell[0, i] = name
    return cell


def _struct(records: list[dict], fields: list[tuple[str, str]]) -> np.ndarray:
    array = np.zeros((1, len(records)), dtype=fields)
    for i, record in enumerate(records):
        array[0, i] = tuple(record[name] for name, _ in fields)
    return array


CAR_FIELDS = [
    ("bbox_x1", "u1"),
    ("bbox_y1", "u1"),
    ("bbox_x2", "u2"),
    ("bbox_y2", "u2"),
    ("class", "u1"),
    ("fname", "O"),
]


def _car_split(num_images: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    labels = list(range(len(CAR_NAMES))) * (num_images // len(CAR_NAMES) + 1)
    return [int(v) for v in rng.permutation(labels[:num_images])]


def make_cars_torchvision(
    root: Path,
    counts: tuple[int, int] = (6, 5),
    labels_in_devkit: bool = False,
    size: tuple[int, int] = (30, 40),
) -> Replica:
    """stanford_cars/ as torchvision reads it (files listed in a non-sorted order)."""
    folder = root / "stanford_cars"
    devkit = folder / "devkit"
    devkit.mkdir(parents=True)
    sio.savemat(devkit / "cars_meta.mat", {"class_names": _cell(CAR_NAMES)})
    replica = Replica(root, list(CAR_NAMES), {}, {})
    for split, count, seed in (("train", counts[0], 1), ("test", counts[1], 2)):
        labels = _car_split(count, seed)
        order = np.random.default_rng(seed).permutation(count)
        records, samples = [], []
        for k in order:
            fname = f"{k + 1:05d}.jpg"
            write_jpeg(folder / f"cars_{split}" / fname, pattern(*size, seed * 100 + int(k)))
            records.append(
                dict(bbox_x1=1, bbox_y1=2, bbox_x2=300, bbox_y2=20, fname=fname)
                | {"class": labels[k] + 1}
            )
            samples.append((str(folder / f"cars_{split}" / fname), labels[k]))
        if split == "train":
            target = devkit / "cars_train_annos.mat"
        else:
            target = (devkit if labels_in_devkit else folder) / "cars_test_annos_withlabels.mat"
            unlabeled = [{k: v for k, v in r.items() if k != "class"} for r in records]
            sio.savemat(
                devkit / "cars_test_annos.mat",
                {"annotations": _struct(unlabeled, [f for f in CAR_FIELDS if f[0] != "class"])},
            )
        sio.savemat(target, {"annotations": _struct(records, CAR_FIELDS)})
        replica.samples[split] = samples
        replica.ids[split] = [Path(p).name for p, _ in samples]
    return replica


def make_cars_all_in_one(root: Path, counts: tuple[int, int] = (5, 4)) -> Replica:
    """stanford_cars/cars_annos.mat + car_ims/, train and test records interleaved."""
    folder = root / "stanford_cars"
    fields = [
        ("relative_im_path", "O"),
        ("bbox_x1", "u1"),
        ("bbox_y1", "u1"),
        ("bbox_x2", "u2"),
        ("bbox_y2", "u2"),
        ("class", "u1"),
        ("test", "u1"),
    ]
    total = sum(counts)
    labels = _car_split(total, 3)
    is_test = [0] * counts[0] + [1] * counts[1]
    np.random.default_rng(4).shuffle(is_test)
    records = []
    replica = Replica(root, list(CAR_NAMES), {"train": [], "test": []}, {"train": [], "test": []})
    for k in range(total):
        rel = f"car_ims/{k + 1:06d}.jpg"
        write_jpeg(folder / rel, pattern(30, 40, 500 + k))
        records.append(
            dict(relative_im_path=rel, bbox_x1=1, bbox_y1=1, bbox_x2=9, bbox_y2=9, test=is_test[k])
            | {"class": labels[k] + 1}
        )
        split = "test" if is_test[k] else "train"
        replica.samples[split].append((str(folder / rel), labels[k]))
        replica.ids[split].append(rel)
    sio.savemat(
        folder / "cars_annos.mat",
        {"annotations": _struct(records, fields), "class_names": _cell(CAR_NAMES)},
    )
    return replica


def make_cars_folders(
    root: Path, counts: tuple[int, int] = (6, 4), nested: bool = True, with_csv: bool = True
) -> Replica:
    """The mirror layout: car_data/car_data/{train,test}/<class with '-'>/ + names.csv."""
    folder = root / "stanford_cars"
    data = folder / "car_data" / "car_data" if nested else folder / "car_data"
    data.mkdir(parents=True)
    (folder / "names.csv").write_text("\n".join(CAR_NAMES) + "\n")
    replica = Replica(root, list(CAR_NAMES), {}, {})
    for split, count, seed in (("train", counts[0], 5), ("test", counts[1], 6)):
        labels = _car_split(count, seed)
        order = np.random.default_rng(seed).permutation(count)
        rows, samples = [], []
        for k in order:
            fname = f"{k + 1:05d}.jpg"
            class_dir = CAR_NAMES[labels[k]].replace("/", "-")
            path = data / split / class_dir / fname
            write_jpeg(path, pattern(30, 40, seed * 50 + int(k)))
            rows.append([fname, 1, 2, 30, 20, labels[k] + 1])
            samples.append((str(path), labels[k]))
        if with_csv:
            with open(folder / f"anno_{split}.csv", "w", newline="") as f:
                csv.writer(f).writerows(rows)
        else:
            samples.sort(key=lambda s: (CAR_NAMES[s[1]].replace("/", "-"), Path(s[0]).name))
        replica.samples[split] = samples
        replica.ids[split] = [Path(p).name for p, _ in samples]
    return replica


def aircraft_image(seed: int, height: int = 64, width: int = 80) -> np.ndarray:
    """Content on top, the red copyright banner in the bottom 20 rows."""
    image = pattern(height, width, seed)
    image[-BANNER:] = BANNER_RGB
    return image


def make_aircraft(root: Path, per_split: int = 4) -> Replica:
    """fgvc-aircraft-2013b/data/ with leading-zero ids and names holding spaces and '/'."""
    data = root / "fgvc-aircraft-2013b" / "data"
    (data / "images").mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(AIRCRAFT_VARIANTS) + "\n")
    (data / "families.txt").write_text("\n".join(AIRCRAFT_FAMILIES) + "\n")
    (data / "manufacturers.txt").write_text("\n".join(AIRCRAFT_MAKERS) + "\n")
    rng = np.random.default_rng(7)
    replica = Replica(root, list(AIRCRAFT_VARIANTS), {}, {})
    split_ids: dict[str, list[tuple[str, str]]] = {}
    next_id = 1
    for split in ("train", "val", "test"):
        entries = []
        for _ in range(per_split):
            image_id = f"{next_id * 3709:07d}"  # leading zeros
            next_id += 1
            variant = AIRCRAFT_VARIANTS[int(rng.integers(len(AIRCRAFT_VARIANTS)))]
            write_jpeg(data / "images" / f"{image_id}.jpg", aircraft_image(next_id))
            entries.append((image_id, variant))
        split_ids[split] = entries
    split_ids["trainval"] = split_ids["train"] + split_ids["val"]
    levels = {
        "variant": (AIRCRAFT_VARIANTS, lambda v: v),
        "family": (AIRCRAFT_FAMILIES, lambda v: AIRCRAFT_TREE[v][0]),
        "manufacturer": (AIRCRAFT_MAKERS, lambda v: AIRCRAFT_TREE[v][1]),
    }
    for level, (names, name_of) in levels.items():
        for split, entries in split_ids.items():
            lines = [f"{image_id} {name_of(v)}" for image_id, v in entries]
            (data / f"images_{level}_{split}.txt").write_text("\n".join(lines) + "\n")
            replica.samples[f"{level}/{split}"] = [
                (str(data / "images" / f"{i}.jpg"), names.index(name_of(v))) for i, v in entries
            ]
            replica.ids[f"{level}/{split}"] = [i for i, _ in entries]
    for entries in split_ids.values():
        with open(data / "images_box.txt", "a") as f:
            f.writelines(f"{i} 1 1 10 10\n" for i, _ in entries)
    return replica


def make_folders(root: Path, splits: dict[str, dict[str, int]]) -> Path:
    """root/<split>/<class>/<n>.jpg (+ a non-image file and a nested folder)."""
    seed = 0
    for split, classes in splits.items():
        for name, count in classes.items():
            for k in range(count):
                seed += 1
                sub = "nested/" if k == 0 else ""
                write_jpeg(root / split / name / f"{sub}img_{k:03d}.jpg", pattern(24, 32, seed))
            (root / split / name / "notes.txt").write_text("not an image\n")
    return root
