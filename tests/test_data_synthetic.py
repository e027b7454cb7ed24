"""The synthetic dataset: CUB layout, deterministic, separable by texture, not by mean colour."""

from __future__ import annotations

import numpy as np
import pytest

from fgvc.data import CUB200
from fgvc.data.synthetic import SynthConfig, make_synthetic, read_synth_config


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    config = SynthConfig(num_classes=3, train_per_class=2, test_per_class=1, image_size=40, seed=4)
    a = make_synthetic(tmp_path / "a", config)
    b = make_synthetic(tmp_path / "b", config)
    c = make_synthetic(tmp_path / "c", SynthConfig(3, 2, 1, 40, seed=5))
    assert _files(a) == _files(b)
    images_a = {k: v for k, v in _files(a).items() if k.suffix == ".jpg"}
    images_c = {k: v for k, v in _files(c).items() if k.suffix == ".jpg"}
    assert images_a.keys() == images_c.keys()
    assert all(images_a[k] != images_c[k] for k in images_a)
    assert read_synth_config(a) == config


def test_layout_is_cub_and_counts_are_right(tmp_path):
    config = SynthConfig(num_classes=4, train_per_class=3, test_per_class=2, image_size=48)
    folder = make_synthetic(tmp_path, config)
    assert folder == tmp_path / "synthetic"
    train, test = CUB200(tmp_path / "synthetic", "train"), CUB200(folder, "test")
    assert train.classes == ["001.texture_00", "002.texture_01", "003.texture_02", "004.texture_03"]
    assert len(train) == 12 and len(test) == 8
    assert sorted(train.targets) == sorted([0, 1, 2, 3] * 3)
    image, _ = train[0]
    assert image.dtype == np.uint8 and image.shape[1] == 48 and 36 <= image.shape[0] <= 48
    boxes = (folder / "bounding_boxes.txt").read_text().splitlines()
    assert len(boxes) == 20 and all(len(line.split()) == 5 for line in boxes)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_never_overwrites_and_validates(tmp_path):
    make_synthetic(tmp_path, SynthConfig(2, 1, 1, 32))
    with pytest.raises(FileExistsError, match="synthetic"):
        make_synthetic(tmp_path, SynthConfig(2, 1, 1, 32))
    with pytest.raises(ValueError, match="num_classes"):
        make_synthetic(tmp_path, SynthConfig(num_classes=0), folder="other")
    with pytest.raises(ValueError, match="image_size"):
        make_synthetic(tmp_path, SynthConfig(image_size=8), folder="other")


def _features(image):
    pixels = image.reshape(-1, 3).astype(np.float64)
    mean = pixels.mean(0)
    cov = np.cov(pixels.T)
    gy, gx = np.gradient(image.astype(np.float64).mean(2))
    tensor = np.array([(gx * gx).mean(), (gy * gy).mean(), (gx * gy).mean()])
    second = np.concatenate([cov[np.triu_indices(3)] / np.trace(cov), tensor / tensor[:2].sum()])
    return mean, second


def _nearest_centroid(train_x, train_y, test_x, test_y):
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-9
    train_x, test_x = (train_x - mu) / sd, (test_x - mu) / sd
    centroids = np.stack([train_x[train_y == c].mean(0) for c in np.unique(train_y)])
    predicted = ((test_x[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    return (predicted == test_y).mean()


def test_classes_differ_in_texture_and_colour_statistics_not_mean_colour(tmp_path):
    folder = make_synthetic(tmp_path, SynthConfig(10, 30, 10, image_size=80, seed=0))
    data = {}
    for split in ("train", "test"):
        dataset = CUB200(folder, split)
        feats = [_features(dataset[i][0]) for i in range(len(dataset))]
        data[split] = (
            np.array([f[0] for f in feats]),
            np.array([f[1] for f in feats]),
            np.array(dataset.targets),
        )
    (mean_tr, second_tr, y_tr), (mean_te, second_te, y_te) = data["train"], data["test"]
    by_mean = _nearest_centroid(mean_tr, y_tr, mean_te, y_te)
    by_second = _nearest_centroid(second_tr, y_tr, second_te, y_te)
    assert by_mean < 0.3  # chance is 0.1
    assert by_second > 0.7
    # and the class means of the mean colour are close compared with its spread
    class_means = np.stack([mean_tr[y_tr == c].mean(0) for c in range(10)])
    assert class_means.std(0).max() < 0.5 * mean_tr.std(0).min()
