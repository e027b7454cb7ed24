"""Stanford Cars: 196 classes, 8,144 train / 8,041 test images, in any of its three layouts."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fgvc.data.base import ImageDataset, read_lines
from fgvc.data.datasets.folder import list_classes
from fgvc.data.descriptor import DatasetSpec
from fgvc.data.io import IMAGE_EXTENSIONS
from fgvc.data.matfile import load_mat
from fgvc.data.presets import Preset

CARS_FOLDER = "stanford_cars"
CARS_COUNTS = {"train": 8144, "test": 8041}
CARS_NUM_CLASSES = 196
CARS_LAYOUTS = """\
Accepted Stanford Cars layouts (under <root>/stanford_cars/ or <root> itself):
  1. torchvision: cars_train/, cars_test/, devkit/cars_meta.mat, devkit/cars_train_annos.mat,
     cars_test_annos_withlabels.mat (at the top or in devkit/)
  2. all-in-one: cars_annos.mat (with class_names, or devkit/cars_meta.mat) + car_ims/
  3. class folders: car_data/{train,test}/<class>/<file>.jpg (car_data/car_data/ too)
     with names.csv and anno_train.csv / anno_test.csv"""


def _loadmat(path: Path) -> dict[str, Any]:
    return load_mat(path, "see `fgvc data download cars` for sources")


def _records(mat: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    """A struct array as a list of dicts; a one-record struct comes back as one dict."""
    if key not in mat:
        raise ValueError(f"{path} has no '{key}' variable; is it the right file?")
    value = mat[key]
    if isinstance(value, dict):
        return [value]
    return list(value)


def _field(record: dict[str, Any], name: str, path: Path) -> Any:
    try:
        return record[name]
    except KeyError:
        raise ValueError(
            f"{path}: annotation records have no '{name}' field (fields: {sorted(record)})"
        ) from None


def _class_names(mat: dict[str, Any], path: Path) -> list[str]:
    if "class_names" not in mat:
        raise ValueError(f"{path} has no 'class_names' variable")
    names = mat["class_names"]
    if isinstance(names, str):
        return [names]
    return [str(name) for name in list(names)]


def detect_cars_layout(root: str | os.PathLike) -> tuple[str, Path]:
    """``(layout, folder)`` with layout ``"torchvision"``, ``"all-in-one"`` or ``"folders"``.

    Raises:
        FileNotFoundError: no accepted layout under ``root`` (message lists them).
    """
    root = Path(root).expanduser()
    for folder in (root / CARS_FOLDER, root):
        if (folder / "devkit" / "cars_meta.mat").is_file() and (
            (folder / "cars_train").is_dir() or (folder / "cars_test").is_dir()
        ):
            return "torchvision", folder
        if (folder / "cars_annos.mat").is_file():
            return "all-in-one", folder
        if _find_class_folders(folder) is not None:
            return "folders", folder
    raise FileNotFoundError(f"no Stanford Cars dataset under {root}.\n{CARS_LAYOUTS}")


def _find_class_folders(folder: Path) -> Path | None:
    for candidate in (folder / "car_data" / "car_data", folder / "car_data"):
        if (candidate / "train").is_dir() or (candidate / "test").is_dir():
            return candidate
    return None


def _find_file(name: str, *folders: Path) -> Path | None:
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    return None


def _class_dirs(split_dir: Path) -> list[Path]:
    return [split_dir / name for name in list_classes(split_dir)]


def _images(class_dir: Path) -> list[Path]:
    return sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def _folder_name(class_name: str) -> str:
    """The class-folder spelling used by the mirror: '/' cannot be in a folder name."""
    return class_name.replace("/", "-")


class StanfordCars(ImageDataset):
    """`Stanford Cars <https://ai.stanford.edu/~jkrause/cars/car_dataset.html>`_ (196 models).

    The original links are dead; three layouts of the files users bring are accepted
    (``root`` is the folder holding ``stanford_cars/``, or that folder)::

        stanford_cars/                          # 1. torchvision layout
            cars_train/00001.jpg ...   cars_test/00001.jpg ...
            cars_test_annos_withlabels.mat      # or devkit/cars_test_annos_withlabels.mat
            devkit/cars_meta.mat  devkit/cars_train_annos.mat
        stanford_cars/                          # 2. all-in-one
            cars_annos.mat                      # relative_im_path, class, test, class_names
            car_ims/000001.jpg ...
        stanford_cars/                          # 3. class folders (common mirror)
            names.csv  anno_train.csv  anno_test.csv   # also accepted inside car_data/
            car_data/{train,test}/<class name, '/' written as '-'>/<file>.jpg

    ``classes`` are the real model names (``cars_meta`` / ``names.csv``, e.g.
    ``"Ram C/V Cargo Van Minivan 2012"``), labels 0-based. Struct fields are read by name;
    one-record ``.mat`` files are handled. ``ids`` are image file names (``relative_im_path``
    for the all-in-one layout).

    Args:
        root: folder holding ``stanford_cars/`` (or the dataset folder itself).
        split: ``"train"`` or ``"test"``.
        transform: albumentations pipeline or callable applied to the RGB ``uint8`` image.
        decode_min_size: see :class:`fgvc.data.base.ImageDataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        decode_min_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(transform, decode_min_size)
        if split not in ("train", "test"):
            raise ValueError(f"StanfordCars split must be 'train' or 'test', got {split!r}")
        self.split = split
        self.layout, self.folder = detect_cars_layout(root)
        parse = {
            "torchvision": self._parse_torchvision,
            "all-in-one": self._parse_all_in_one,
            "folders": self._parse_folders,
        }[self.layout]
        self.samples, self.ids = [], []
        parse()
        for path, label in self.samples:
            if not 0 <= label < len(self.classes):
                raise ValueError(
                    f"Stanford Cars ({self.layout} layout in {self.folder}): {path} has class "
                    f"{label + 1}, but there are {len(self.classes)} class names"
                )
        self._check_counts("Stanford Cars", CARS_COUNTS, CARS_NUM_CLASSES)

    def _parse_torchvision(self) -> None:
        devkit = self.folder / "devkit"
        self.classes = _class_names(_loadmat(devkit / "cars_meta.mat"), devkit / "cars_meta.mat")
        if self.split == "train":
            annos = devkit / "cars_train_annos.mat"
        else:
            found = _find_file("cars_test_annos_withlabels.mat", self.folder, devkit)
            if found is None:
                raise FileNotFoundError(
                    f"cars_test_annos_withlabels.mat not found in {self.folder} or {devkit} "
                    f"(devkit/cars_test_annos.mat has no labels); add it to evaluate"
                )
            annos = found
        images = self.folder / f"cars_{self.split}"
        for record in _records(_loadmat(annos), "annotations", annos):
            fname = str(_field(record, "fname", annos))
            self.samples.append((str(images / fname), int(_field(record, "class", annos)) - 1))
            self.ids.append(fname)

    def _parse_all_in_one(self) -> None:
        path = self.folder / "cars_annos.mat"
        mat = _loadmat(path)
        if "class_names" in mat:
            self.classes = _class_names(mat, path)
        else:
            meta = self.folder / "devkit" / "cars_meta.mat"
            self.classes = _class_names(_loadmat(meta), meta)
        wanted = 1 if self.split == "test" else 0
        for record in _records(mat, "annotations", path):
            if int(_field(record, "test", path)) != wanted:
                continue
            rel = str(_field(record, "relative_im_path", path))
            self.samples.append((str(self.folder / rel), int(_field(record, "class", path)) - 1))
            self.ids.append(rel)

    def _parse_folders(self) -> None:
        data = _find_class_folders(self.folder)
        assert data is not None
        search = (self.folder, self.folder / "car_data", data)
        names_csv = _find_file("names.csv", *search)
        if names_csv is None:
            raise FileNotFoundError(
                f"names.csv (one class name a line) not found in {self.folder} or "
                f"{self.folder / 'car_data'}; it gives the class order and real names"
            )
        self.classes = [line.strip() for line in read_lines(names_csv)]
        split_dir = data / self.split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"{split_dir} is missing")
        anno = _find_file(f"anno_{self.split}.csv", *search)
        if anno is not None:
            self._parse_anno_csv(anno, split_dir)
        else:
            self._parse_folder_names(split_dir)

    def _parse_anno_csv(self, anno: Path, split_dir: Path) -> None:
        by_name: dict[str, Path] = {}
        for class_dir in _class_dirs(split_dir):
            for image in _images(class_dir):
                by_name.setdefault(image.name, image)
        with open(anno, newline="", encoding="utf-8") as f:
            for number, row in enumerate(csv.reader(f), start=1):
                if not row:
                    continue
                if len(row) != 6 or not row[5].strip().isdigit():
                    raise ValueError(
                        f"{anno} line {number}: expected 'fname,x1,y1,x2,y2,class', got {row!r}"
                    )
                fname, label = row[0].strip(), int(row[5]) - 1
                path = by_name.get(fname)
                if path is None:
                    raise FileNotFoundError(
                        f"{anno} line {number}: {fname} is not in any class folder of {split_dir}"
                    )
                self.samples.append((str(path), label))
                self.ids.append(fname)

    def _parse_folder_names(self, split_dir: Path) -> None:
        index_of = {_folder_name(name): i for i, name in enumerate(self.classes)}
        for class_dir in _class_dirs(split_dir):
            if class_dir.name not in index_of:
                raise ValueError(f"class folder {class_dir} does not match any name in names.csv")
            for image in _images(class_dir):
                self.samples.append((str(image), index_of[class_dir.name]))
                self.ids.append(image.name)


CARS_HELP = f"""\
Stanford Cars cannot be downloaded automatically: the original links
(ai.stanford.edu/~jkrause/cars/) are dead, see https://github.com/pytorch/vision/issues/7545.
Where users find the files today (bring them yourself, then check them):
  - images: Kaggle dataset jessicali9530/stanford-cars-dataset (cars_train/, cars_test/;
    remove the doubled folders such as cars_test/cars_test/)
  - devkit: car_devkit.tgz attached to that issue
    (https://github.com/pytorch/vision/files/11644847/car_devkit.tgz)
  - test labels: cars_test_annos_withlabels.mat, linked from the issue
    (https://github.com/pytorch/vision/issues/7545#issuecomment-1631441616)
  - class-folder mirror: Kaggle jutrera/stanford-car-dataset-by-classes-folder
    (car_data/, names.csv, anno_train.csv, anno_test.csv)
Former md5s: car_devkit.tgz c3b158d763b6e2245038c8ad08e45376, cars_train.tgz
065e5b463ae28d29e77c1b4b166cfe61, cars_test.tgz 4ce7ebf6a94d07f1952d94dd34c4d501,
cars_test_annos_withlabels.mat b0a2b23655a3edd16d84508592a98d10.
{CARS_LAYOUTS}
Then check it: fgvc data check cars --root <root>"""


def locate_cars(root: str | os.PathLike) -> Path:
    """The Stanford Cars folder under ``root`` in any accepted layout (see
    :func:`detect_cars_layout`)."""
    return detect_cars_layout(root)[1]


DATASET = DatasetSpec(
    name="cars",
    title="Stanford Cars",
    homepage="https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
    parser=StanfordCars,
    locate=locate_cars,
    splits=("train", "test"),
    num_classes=CARS_NUM_CLASSES,
    counts=CARS_COUNTS,
    # the authors' fine-tuning code: resize to S x S, no crop
    preset=Preset("square"),
    datamodule="CarsDataModule",
    manual=CARS_HELP,
    citation="Krause et al., 3dRR 2013; counts and former md5s: shared/design/datasets.md",
)
