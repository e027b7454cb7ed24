"""A synthetic fine-grained dataset in the CUB-200-2011 layout, deterministic from a seed.

Every image shows one elliptical "object" on a smooth noisy background. All classes share
the same distribution of mean colour, position and size; a class is defined only by the
object's texture (orientation and frequency of two gratings) and by the colour direction
along which the texture modulates the pixels - second-order statistics, the kind of
evidence covariance pooling is built for. A nearest-centroid classifier on mean colour sits
at chance level; one on texture and colour covariances does well.

Output (``root/<folder>/``, readable with :class:`fgvc.data.CUB200`)::

    images.txt image_class_labels.txt train_test_split.txt classes.txt bounding_boxes.txt
    images/001.texture_00/texture_00_0001.jpg ...
    synth.json                                  the generation parameters
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

SYNTH_FOLDER = "synthetic"
SYNTH_VERSION = 1


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of a synthetic dataset (all of them are recorded in ``synth.json``)."""

    num_classes: int = 10
    train_per_class: int = 30
    test_per_class: int = 10
    image_size: int = 144
    seed: int = 0

    def validate(self) -> None:
        for name in ("num_classes", "train_per_class", "test_per_class"):
            if getattr(self, name) < 1:
                raise ValueError(f"synthetic {name} must be >= 1, got {getattr(self, name)}")
        if self.num_classes > 999:
            raise ValueError(f"synthetic num_classes must be <= 999, got {self.num_classes}")
        if self.image_size < 32:
            raise ValueError(f"synthetic image_size must be >= 32, got {self.image_size}")


def synthetic_class_names(num_classes: int) -> list[str]:
    """Class names in label order, as written to ``classes.txt``."""
    return [f"{c + 1:03d}.texture_{c:02d}" for c in range(num_classes)]


def _class_params(config: SynthConfig) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng([config.seed, 7919])
    params = []
    base_angles = rng.permutation(config.num_classes) * np.pi / config.num_classes
    for c in range(config.num_classes):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        params.append(
            {
                "angles": np.array([base_angles[c], base_angles[c] + rng.uniform(0.6, 1.2)]),
                "freqs": rng.uniform(0.06, 0.16, size=2),
                "colour": direction,
            }
        )
    return params


def _render(config: SynthConfig, params: dict[str, np.ndarray], rng: np.random.Generator) -> tuple:
    size = config.image_size
    height = int(size * rng.uniform(0.75, 1.0))
    width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # background: class-independent mean colour and smooth noise
    mean = rng.uniform(70, 185, size=3).astype(np.float32)
    low = rng.normal(0, 1, size=(height // 16 + 2, width // 16 + 2, 3)).astype(np.float32)
    background = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC) * 14
    image = mean + background
    # object: ellipse filled with the class texture, mean colour unchanged
    cx, cy = rng.uniform(0.35, 0.65) * width, rng.uniform(0.35, 0.65) * height
    ax, ay = rng.uniform(0.25, 0.4) * width, rng.uniform(0.25, 0.4) * height
    tilt = rng.uniform(0, np.pi)
    cos_t, sin_t = np.cos(tilt), np.sin(tilt)
    u = ((xx - cx) * cos_t + (yy - cy) * sin_t) / ax
    v = (-(xx - cx) * sin_t + (yy - cy) * cos_t) / ay
    mask = np.clip((1.0 - (u**2 + v**2)) * 6, 0, 1)[..., None]
    texture = np.zeros((height, width), np.float32)
    for angle, freq in zip(params["angles"], params["freqs"]):
        angle = angle + rng.normal(0, 0.06)
        freq = freq * rng.uniform(0.93, 1.07)
        phase = rng.uniform(0, 2 * np.pi)
        texture += np.cos(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    amplitude = rng.uniform(22, 34)
    image = image + mask * texture[..., None] * amplitude * params["colour"].astype(np.float32)
    image = image + rng.normal(0, 4, size=image.shape).astype(np.float32)
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    ext_x = np.sqrt((ax * cos_t) ** 2 + (ay * sin_t) ** 2)
    ext_y = np.sqrt((ax * sin_t) ** 2 + (ay * cos_t) ** 2)
    x0, y0 = max(cx - ext_x, 0.0), max(cy - ext_y, 0.0)
    x1, y1 = min(cx + ext_x, width - 1.0), min(cy + ext_y, height - 1.0)
    return pixels, (x0, y0, x1 - x0, y1 - y0)


def read_synth_config(folder: str | os.PathLike) -> SynthConfig | None:
    """The parameters recorded in ``folder/synth.json``, or None if it is not there."""
    path = Path(folder) / "synth.json"
    if not path.is_file():
        return None
    recorded = json.loads(path.read_text())
    fields = {k: recorded[k] for k in asdict(SynthConfig()) if k in recorded}
    return SynthConfig(**fields)


def synth_folder(root: str | os.PathLike) -> Path:
    """The synthetic dataset under ``root``: ``root`` itself if it holds ``synth.json``,
    else ``root/synthetic``."""
    root = Path(root).expanduser()
    return root if (root / "synth.json").is_file() else root / SYNTH_FOLDER


def make_synthetic(
    root: str | os.PathLike,
    config: SynthConfig | None = None,
    folder: str = SYNTH_FOLDER,
) -> Path:
    """Write the synthetic dataset to ``root/<folder>`` and return that folder.

    The folder is written under a temporary name and renamed at the end, so an interrupted
    run leaves nothing that looks complete. Same config, same bytes.

    Raises:
        FileExistsError: ``root/<folder>`` exists (it is never overwritten).
        ValueError: a config value is out of range.
    """
    config = config or SynthConfig()
    config.validate()
    root = Path(root).expanduser()
    target = root / folder
    if target.exists():
        raise FileExistsError(f"{target} exists; remove it or pick another --root / folder")
    root.mkdir(parents=True, exist_ok=True)
    classes = synthetic_class_names(config.num_classes)
    params = _class_params(config)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{folder}-"))
    try:
        images, labels, split, boxes = [], [], [], []
        image_id = 0
        per_class = config.train_per_class + config.test_per_class
        for c, name in enumerate(classes):
            class_dir = tmp / "images" / name
            class_dir.mkdir(parents=True)
            short = name.split(".", 1)[1]
            for k in range(per_class):
                image_id += 1
                rng = np.random.default_rng([config.seed, c, k])
                pixels, box = _render(config, params[c], rng)
                rel = f"{name}/{short}_{k + 1:04d}.jpg"
                ok, encoded = cv2.imencode(
                    ".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92]
                )
                if not ok:  # pragma: no cover - OpenCV failure
                    raise RuntimeError(f"could not encode synthetic image {rel}")
                (tmp / "images" / rel).write_bytes(encoded.tobytes())
                images.append(f"{image_id} {rel}")
                labels.append(f"{image_id} {c + 1}")
                split.append(f"{image_id} {1 if k < config.train_per_class else 0}")
                boxes.append(f"{image_id} " + " ".join(f"{v:.1f}" for v in box))
        for filename, lines in (
            ("images.txt", images),
            ("image_class_labels.txt", labels),
            ("train_test_split.txt", split),
            ("bounding_boxes.txt", boxes),
            ("classes.txt", [f"{c + 1} {name}" for c, name in enumerate(classes)]),
        ):
            (tmp / filename).write_text("\n".join(lines) + "\n")
        meta = {"version": SYNTH_VERSION, **asdict(config)}
        (tmp / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
