"""Dataset parsers against hand-made replicas, torchvision's parsers and the CUB spec."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import torchvision
from PIL import Image

from fgvc.data import CUB200, FGVCAircraft, FolderDataset, ImageDecodeError, StanfordCars
from fgvc.data.base import read_lines, resolve_folder
from tests.replicas import (
    AIRCRAFT_FAMILIES,
    AIRCRAFT_MAKERS,
    AIRCRAFT_VARIANTS,
    BANNER,
    BANNER_RGB,
    CAR_FIELDS,
    CAR_NAMES,
    _cell,
    _struct,
    aircraft_image,
    make_aircraft,
    make_cars_all_in_one,
    make_cars_folders,
    make_cars_torchvision,
    make_cub,
    make_folders,
    pattern,
    write_jpeg,
)

LEVEL_CLASSES = {
    "variant": AIRCRAFT_VARIANTS,
    "family": AIRCRAFT_FAMILIES,
    "manufacturer": AIRCRAFT_MAKERS,
}


def _check_items(dataset, count=None):
    for i in range(len(dataset) if count is None else count):
        image, label = dataset[i]
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert 0 <= label < len(dataset.classes)
        assert label == dataset.samples[i][1]


# -- CUB ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "test"])
def test_cub_matches_the_spec(tmp_path, split):
    replica = make_cub(tmp_path)
    dataset = CUB200(tmp_path, split)
    assert dataset.classes == replica.classes
    assert dataset.samples == replica.samples[split]
    assert dataset.ids == replica.ids[split]
    assert len(dataset) == len(replica.samples[split])
    _check_items(dataset)
    # the dataset folder itself is accepted too
    assert CUB200(tmp_path / "CUB_200_2011", split).samples == replica.samples[split]


def test_cub_grayscale_and_cmyk_load_as_rgb(tmp_path):
    replica = make_cub(tmp_path)
    dataset = CUB200(tmp_path, "train")
    both = CUB200(tmp_path, "test")
    by_path = {p: (d, i) for d in (dataset, both) for i, (p, _) in enumerate(d.samples)}
    for mode in ("L", "CMYK"):
        owner, index = by_path[replica.special[mode]]
        image, _ = owner[index]
        assert image.shape[2] == 3 and image.dtype == np.uint8
        truth = np.asarray(Image.open(replica.special[mode]).convert("RGB")).astype(int)
        assert np.abs(image.astype(int) - truth).max() <= 2
        if mode == "L":
            assert (image[..., 0] == image[..., 2]).all()


def test_cub_id_files_must_agree(tmp_path):
    make_cub(tmp_path)
    labels = tmp_path / "CUB_200_2011" / "image_class_labels.txt"
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join(lines[:-2] + ["99 1"]) + "\n")
    with pytest.raises(ValueError) as info:
        CUB200(tmp_path, "train")
    message = str(info.value)
    last_ids = [line.split()[0] for line in lines[-2:]]
    assert "image_class_labels.txt" in message and "99" in message
    assert all(i in message for i in last_ids)


def test_cub_missing_files_and_bad_values(tmp_path):
    with pytest.raises(FileNotFoundError, match="CUB_200_2011"):
        CUB200(tmp_path, "train")
    make_cub(tmp_path)
    with pytest.raises(ValueError, match="split"):
        CUB200(tmp_path, "val")
    (tmp_path / "CUB_200_2011" / "classes.txt").unlink()
    with pytest.raises(FileNotFoundError, match="classes.txt"):
        CUB200(tmp_path, "train")


def test_cub_corrupt_image_error_names_the_file(tmp_path):
    replica = make_cub(tmp_path)
    path, _ = replica.samples["train"][0]
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 3])
    dataset = CUB200(tmp_path, "train")
    with pytest.raises(ImageDecodeError, match=path):
        dataset[0]


def test_cub_full_class_set_checks_published_counts(tmp_path):
    make_cub(tmp_path, num_classes=200, per_class=(1, 1), size=(8, 8))
    with pytest.warns(UserWarning, match=r"train: 200 images, published 5994") as caught:
        dataset = CUB200(tmp_path, "train")
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert dataset.count_problem is not None and "5994" in dataset.count_problem
    with pytest.warns(UserWarning, match=r"test: 200 images, published 5794"):
        CUB200(tmp_path, "test")


def test_cub_small_class_set_is_not_count_checked(tmp_path):
    make_cub(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert CUB200(tmp_path, "train").count_problem is None


# -- Stanford Cars -----------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "test"])
def test_cars_torchvision_layout_matches_torchvision(tmp_path, split):
    replica = make_cars_torchvision(tmp_path)
    dataset = StanfordCars(tmp_path, split)
    reference = torchvision.datasets.StanfordCars(tmp_path, split=split)
    assert dataset.layout == "torchvision"
    assert dataset.classes == reference.classes == CAR_NAMES
    assert dataset.samples == [(str(p), int(t)) for p, t in reference._samples]
    assert dataset.samples == replica.samples[split]
    assert dataset.ids == replica.ids[split]
    _check_items(dataset)


def test_cars_test_labels_in_devkit(tmp_path):
    replica = make_cars_torchvision(tmp_path, labels_in_devkit=True)
    assert StanfordCars(tmp_path / "stanford_cars", "test").samples == replica.samples["test"]


def test_cars_without_test_labels_says_what_is_missing(tmp_path):
    make_cars_torchvision(tmp_path)
    (tmp_path / "stanford_cars" / "cars_test_annos_withlabels.mat").unlink()
    assert len(StanfordCars(tmp_path, "train")) == 6
    with pytest.raises(FileNotFoundError, match="cars_test_annos_withlabels.mat"):
        StanfordCars(tmp_path, "test")


@pytest.mark.parametrize("split", ["train", "test"])
def test_cars_all_in_one_layout(tmp_path, split):
    replica = make_cars_all_in_one(tmp_path)
    dataset = StanfordCars(tmp_path, split)
    assert dataset.layout == "all-in-one"
    assert dataset.classes == CAR_NAMES
    assert dataset.samples == replica.samples[split]
    assert dataset.ids == replica.ids[split]
    _check_items(dataset)


@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("with_csv", [True, False])
def test_cars_class_folder_layout(tmp_path, nested, with_csv):
    replica = make_cars_folders(tmp_path, nested=nested, with_csv=with_csv)
    for split in ("train", "test"):
        dataset = StanfordCars(tmp_path, split)
        assert dataset.layout == "folders"
        assert dataset.classes == CAR_NAMES  # real names, with '/'
        assert dataset.samples == replica.samples[split]
        assert dataset.ids == replica.ids[split]
    _check_items(dataset, 3)


def test_cars_one_record_mat_files(tmp_path):
    folder = tmp_path / "stanford_cars"
    (folder / "devkit").mkdir(parents=True)
    sio.savemat(folder / "devkit" / "cars_meta.mat", {"class_names": _cell(["Only Car 2012"])})
    record = dict(bbox_x1=1, bbox_y1=2, bbox_x2=300, bbox_y2=40, fname="00001.jpg") | {"class": 1}
    sio.savemat(
        folder / "devkit" / "cars_train_annos.mat", {"annotations": _struct([record], CAR_FIELDS)}
    )
    write_jpeg(folder / "cars_train" / "00001.jpg", pattern(20, 30, 1))
    dataset = StanfordCars(tmp_path, "train")
    assert dataset.classes == ["Only Car 2012"]
    assert dataset.samples == [(str(folder / "cars_train" / "00001.jpg"), 0)]
    _check_items(dataset)


def test_cars_fields_read_by_name_not_position(tmp_path):
    folder = tmp_path / "stanford_cars"
    (folder / "devkit").mkdir(parents=True)
    sio.savemat(folder / "devkit" / "cars_meta.mat", {"class_names": _cell(CAR_NAMES)})
    shuffled = [CAR_FIELDS[5], CAR_FIELDS[4], *CAR_FIELDS[:4]]  # fname, class, boxes
    records = [
        dict(bbox_x1=1, bbox_y1=2, bbox_x2=3, bbox_y2=4, fname=f"{k:05d}.jpg") | {"class": k}
        for k in (3, 1, 4)
    ]
    sio.savemat(
        folder / "devkit" / "cars_train_annos.mat", {"annotations": _struct(records, shuffled)}
    )
    for k in (3, 1, 4):
        write_jpeg(folder / "cars_train" / f"{k:05d}.jpg", pattern(10, 10, k))
    dataset = StanfordCars(tmp_path, "train")
    assert [label for _, label in dataset.samples] == [2, 0, 3]
    assert dataset.ids == ["00003.jpg", "00001.jpg", "00004.jpg"]


def test_cars_no_layout_lists_the_accepted_ones(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        StanfordCars(tmp_path, "train")
    assert "cars_annos.mat" in str(info.value) and "names.csv" in str(info.value)


def test_cars_class_out_of_range(tmp_path):
    replica = make_cars_folders(tmp_path)
    (tmp_path / "stanford_cars" / "names.csv").write_text("\n".join(CAR_NAMES[:2]) + "\n")
    assert max(label for _, label in replica.samples["train"]) >= 2
    with pytest.raises(ValueError, match="class names"):
        StanfordCars(tmp_path, "train")


# -- FGVC-Aircraft -----------------------------------------------------------------------------
@pytest.mark.parametrize("level", ["variant", "family", "manufacturer"])
def test_aircraft_matches_torchvision_for_every_split(tmp_path, level):
    replica = make_aircraft(tmp_path)
    for split in ("trainval", "train", "val", "test"):
        dataset = FGVCAircraft(tmp_path, split, level=level)
        reference = torchvision.datasets.FGVCAircraft(tmp_path, split, annotation_level=level)
        assert dataset.classes == reference.classes == LEVEL_CLASSES[level]
        assert [p for p, _ in dataset.samples] == reference._image_files
        assert [t for _, t in dataset.samples] == reference._labels
        assert dataset.samples == replica.samples[f"{level}/{split}"]
        assert dataset.ids == replica.ids[f"{level}/{split}"]
        assert all(i.startswith("0") and len(i) == 7 for i in dataset.ids)


def test_aircraft_banner_is_cropped_by_default(tmp_path):
    make_aircraft(tmp_path)
    cropped = FGVCAircraft(tmp_path, "test")
    kept = FGVCAircraft(tmp_path, "test", crop_banner=False)
    image, _ = cropped[0]
    full, _ = kept[0]
    assert full.shape == (64, 80, 3) and image.shape == (64 - BANNER, 80, 3)
    assert (image == full[:-BANNER]).all()
    red = np.abs(full[-BANNER + 2 :].astype(int) - BANNER_RGB).max()
    assert red < 40  # the banner is there ...
    assert np.abs(image[-3:].astype(int) - BANNER_RGB).max(axis=-1).min() > 40  # ... and gone


def test_aircraft_banner_crop_with_reduced_decoding(tmp_path):
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    make_aircraft(tmp_path)
    image = aircraft_image(3, 400, 600)
    image_id = FGVCAircraft(tmp_path, "test").ids[0]
    write_jpeg(data / "images" / f"{image_id}.jpg", image)
    dataset = FGVCAircraft(tmp_path, "test", decode_min_size=(150, 150))
    out = dataset.load(0)
    assert out.shape == (200 - BANNER // 2, 300, 3)  # decoded at 1/2, 10 banner rows off
    assert np.abs(out[-2:].astype(int) - BANNER_RGB).max(axis=-1).min() > 40


@pytest.mark.parametrize(
    ("size", "min_size", "factor"),
    [
        # 4 would give 100 rows, 95 once the banner's 5 are off: fewer than asked for
        ((400, 600), (98, 98), 2),
        # 20 / 8 = 2.5 rows of banner: 3 go, or half a banner row stays
        ((800, 1200), (60, 60), 8),
    ],
)
def test_aircraft_reduced_decoding_keeps_the_banner_margin(tmp_path, size, min_size, factor):
    """Reduced DCT decoding chooses its scale so that the image is at least ``min_size``
    after the banner is cropped, and crops every row the banner touches: the result is the
    full decode, cropped, then area-resized by that factor (as libjpeg's scaling does)."""
    import math

    import cv2

    from fgvc.data.io import load_rgb

    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    make_aircraft(tmp_path)
    height, width = size
    image_id = FGVCAircraft(tmp_path, "test").ids[0]
    path = data / "images" / f"{image_id}.jpg"
    write_jpeg(path, aircraft_image(5, height, width))
    out = FGVCAircraft(tmp_path, "test", decode_min_size=min_size).load(0)
    rows = height // factor - math.ceil(BANNER / factor)
    assert out.shape == (rows, width // factor, 3)
    assert out.shape[0] >= min_size[0] and out.shape[1] >= min_size[1]
    full = load_rgb(path)  # decoded whole, then the same rows kept and scaled down
    reference = cv2.resize(
        full[: rows * factor], (width // factor, rows), interpolation=cv2.INTER_AREA
    )
    difference = np.abs(out.astype(int) - reference.astype(int))
    assert difference.mean() < 1 and np.percentile(difference, 99) <= 4, (
        difference.mean(),
        np.percentile(difference, 99),
    )
    assert np.abs(out[-1].astype(int) - BANNER_RGB).max(axis=-1).min() > 40  # no banner left


def test_aircraft_dataset_folder_and_data_folder_accepted(tmp_path):
    replica = make_aircraft(tmp_path)
    for root in (tmp_path / "fgvc-aircraft-2013b", tmp_path / "fgvc-aircraft-2013b" / "data"):
        assert FGVCAircraft(root, "val").samples == replica.samples["variant/val"]


def test_aircraft_unknown_name_and_bad_arguments(tmp_path):
    make_aircraft(tmp_path)
    labels = tmp_path / "fgvc-aircraft-2013b" / "data" / "images_variant_test.txt"
    first = labels.read_text().splitlines()[0].split(" ", 1)[0]
    labels.write_text(f"{first} Boeing 747-8F\n")
    with pytest.raises(ValueError, match="747-8F"):
        FGVCAircraft(tmp_path, "test")
    with pytest.raises(ValueError, match="level"):
        FGVCAircraft(tmp_path, "test", level="model")
    with pytest.raises(ValueError, match="split"):
        FGVCAircraft(tmp_path, "valid")
    shutil.rmtree(tmp_path / "fgvc-aircraft-2013b")
    with pytest.raises(FileNotFoundError, match="fgvc data download aircraft"):
        FGVCAircraft(tmp_path, "test")


# -- image folders -----------------------------------------------------------------------------
def test_folder_dataset_matches_torchvision_imagefolder(tmp_path):
    make_folders(tmp_path, {"train": {"b cls": 3, "c": 2, "a": 2}, "val": {"c": 1}})
    shutil.rmtree(tmp_path / "train" / "a")  # a class folder removed again
    dataset = FolderDataset(tmp_path, "train")
    reference = torchvision.datasets.ImageFolder(tmp_path / "train")
    assert dataset.classes == reference.classes == ["b cls", "c"]
    assert dataset.samples == [(str(p), t) for p, t in reference.samples]
    _check_items(dataset)
    val = FolderDataset(tmp_path, "val", classes=dataset.classes)
    assert [label for _, label in val.samples] == [1]  # 'c' keeps the training label


def test_folder_dataset_errors(tmp_path):
    make_folders(tmp_path, {"train": {"a": 1}, "val": {"z": 1}})
    with pytest.raises(FileNotFoundError, match="test"):
        FolderDataset(tmp_path, "test")
    with pytest.raises(ValueError, match="z"):
        FolderDataset(tmp_path, "val", classes=["a"])
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        FolderDataset(tmp_path, "train")


def test_folder_class_name_that_is_not_utf8_is_refused_up_front(tmp_path):
    make_folders(tmp_path, {"train": {"a": 1, "b": 1}})
    bad = Path(os.fsdecode(os.fsencode(tmp_path / "train") + b"/caf\xe9 \xff"))
    write_jpeg(bad / "x.jpg", pattern(8, 8, 1))  # a real folder, named by bytes
    assert os.fsencode(bad.name) == b"caf\xe9 \xff"
    with pytest.raises(ValueError) as info:
        FolderDataset(tmp_path, "train")
    message = str(info.value)
    message.encode("utf-8")  # printable as it is
    assert str(tmp_path / "train" / "caf\\xe9 \\xff") in message
    assert "not valid UTF-8" in message and "rename it" in message and "\n" not in message


def test_datasets_accept_plain_callables(tmp_path):
    make_cub(tmp_path)
    dataset = CUB200(tmp_path, "train", transform=lambda image: image.shape)
    assert dataset[0][0] == (36, 48, 3)
    tv = torchvision.transforms.Compose(
        [torchvision.transforms.ToPILImage(), torchvision.transforms.Resize((8, 8))]
    )
    image, _ = CUB200(tmp_path, "train", transform=tv)[0]
    assert image.size == (8, 8)


def test_subset_keeps_classes_and_ids(tmp_path):
    replica = make_cub(tmp_path)
    dataset = CUB200(tmp_path, "train")
    view = dataset.subset([2, 0])
    assert view.classes == dataset.classes and len(view) == 2
    assert view.samples == [replica.samples["train"][2], replica.samples["train"][0]]
    assert view.ids == [replica.ids["train"][2], replica.ids["train"][0]]
    assert len(dataset) == len(replica.samples["train"])  # original untouched


def test_aircraft_and_cars_full_class_sets_check_published_counts(tmp_path):
    make_aircraft(tmp_path / "air")
    data = tmp_path / "air" / "fgvc-aircraft-2013b" / "data"
    extra = [f"Variant {k}" for k in range(100 - len(AIRCRAFT_VARIANTS))]
    (data / "variants.txt").write_text("\n".join(AIRCRAFT_VARIANTS + extra) + "\n")
    with pytest.warns(UserWarning, match=r"trainval: 8 images, published 6667"):
        FGVCAircraft(tmp_path / "air", "trainval")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # family level: 6 of 70 classes, no count check
        FGVCAircraft(tmp_path / "air", "trainval", level="family")
    make_cars_folders(tmp_path / "cars")
    names = CAR_NAMES + [f"Car {k}" for k in range(196 - len(CAR_NAMES))]
    (tmp_path / "cars" / "stanford_cars" / "names.csv").write_text("\n".join(names) + "\n")
    with pytest.warns(UserWarning, match=r"test: 4 images, published 8041"):
        dataset = StanfordCars(tmp_path / "cars", "test")
    assert dataset.count_problem == "Stanford Cars count mismatch (test: 4 images, published 8041)"


# -- what every dataset shares -----------------------------------------------------------------
def test_read_lines_drops_line_ends_and_blank_lines_only(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_bytes("1 Boeing 737X\r\n\r\n2 Café  \n   \n3 LAX\n".encode())
    assert read_lines(path) == ["1 Boeing 737X", "2 Café  ", "3 LAX"]
    with pytest.raises(FileNotFoundError, match="missing.txt is missing; the dataset folder"):
        read_lines(tmp_path / "missing.txt")


def test_resolve_folder_accepts_either_folder_and_says_where_it_looked(tmp_path):
    (tmp_path / "data" / "birds").mkdir(parents=True)
    (tmp_path / "data" / "birds" / "images.txt").write_text("")
    assert (
        resolve_folder(tmp_path / "data", "birds", ["x", "images.txt"])
        == tmp_path / "data" / "birds"
    )
    assert (
        resolve_folder(tmp_path / "data" / "birds", "birds", ["images.txt"])
        == tmp_path / "data" / "birds"
    )
    with pytest.raises(FileNotFoundError) as caught:
        resolve_folder(tmp_path, "cars", ["a.mat", "b/"])
    assert str(caught.value) == (
        f"no cars dataset under {tmp_path} (looked for a.mat, b/ in {tmp_path / 'cars'} and "
        f"{tmp_path}); pass the folder that holds cars/"
    )
    with pytest.raises(FileNotFoundError, match=r"; run this first, pass the folder"):
        resolve_folder(tmp_path, "cars", ["a.mat"], hint="run this first, ")


def test_reduced_scale_decoding_of_a_dataset_and_its_subsets(tmp_path):
    replica = make_cub(tmp_path)
    path = replica.samples["train"][0][0]
    write_jpeg(Path(path), pattern(300, 400, 5))
    full = CUB200(tmp_path, "train")
    assert repr(full) == "CUB200(split='train', samples=9, classes=3)"
    assert full.load(0).shape == (300, 400, 3)
    assert CUB200(tmp_path, "train", decode_min_size=(100, 100)).load(0).shape == (150, 200, 3)
    assert CUB200(tmp_path, "train", decode_min_size=(70, 90)).load(0).shape == (75, 100, 3)
    assert full.subset([0], decode_min_size=(100, 100)).load(0).shape == (150, 200, 3)
    assert full.subset([0]).load(0).shape == (300, 400, 3)
