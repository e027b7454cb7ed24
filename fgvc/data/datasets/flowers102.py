"""Oxford Flowers-102: 102 classes, 1,020 train / 1,020 val / 6,149 test images.

Sources of the figures below (gathered in the shared design note datasets-more.md, section 1):

* counts 1,020 / 1,020 / 6,149 (8,189 in all): the TFDS catalog
  (https://www.tensorflow.org/datasets/catalog/oxford_flowers102), recomputed from
  ``setid.mat`` whose md5 matches the published one;
* md5s: torchvision ``datasets/flowers102.py`` (``_file_dict``); sha256s and sizes: TFDS
  ``url_checksums/oxford_flowers102.txt``; the same md5s in ``datasets-mila/datasets--flowers102``;
* class names: no official list exists; the one commonly used (inferred from the per-class
  counts on the VGG page, tensorflow/datasets#1641) is TFDS's ``_NAMES`` and torchvision's
  ``Flowers102.classes`` (pytorch/vision#8838), typed below as data;
* protocol: papers train on train + val (2,040 images, mmpretrain's ``trainval``) and
  report on test.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fgvc.data.base import ImageDataset, resolve_folder
from fgvc.data.descriptor import DatasetSource, DatasetSpec
from fgvc.data.matfile import load_mat, mat_integers
from fgvc.data.presets import Preset

FLOWERS_FOLDER = "flowers-102"
FLOWERS_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
FLOWERS_COUNTS = {"train": 1020, "val": 1020, "trainval": 2040, "test": 6149}
#: ``setid.mat`` variable of each split (trainval: the first two, in this order)
FLOWERS_SPLIT_IDS = {
    "train": ("trnid",),
    "val": ("valid",),
    "trainval": ("trnid", "valid"),
    "test": ("tstid",),
}
FLOWERS_CLASSES = [
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea",
    "english marigold", "tiger lily", "moon orchid", "bird of paradise", "monkshood",
    "globe thistle", "snapdragon", "colt's foot", "king protea", "spear thistle", "yellow iris",
    "globe-flower", "purple coneflower", "peruvian lily", "balloon flower",
    "giant white arum lily", "fire lily", "pincushion flower", "fritillary", "red ginger",
    "grape hyacinth", "corn poppy", "prince of wales feathers", "stemless gentian", "artichoke",
    "sweet william", "carnation", "garden phlox", "love in the mist", "mexican aster",
    "alpine sea holly", "ruby-lipped cattleya", "cape flower", "great masterwort", "siam tulip",
    "lenten rose", "barbeton daisy", "daffodil", "sword lily", "poinsettia", "bolero deep blue",
    "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion", "petunia",
    "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura",
    "geranium", "orange dahlia", "pink-yellow dahlia?", "cautleya spicata", "japanese anemone",
    "black-eyed susan", "silverbush", "californian poppy", "osteospermum", "spring crocus",
    "bearded iris", "windflower", "tree poppy", "gazania", "azalea", "water lily", "rose",
    "thorn apple", "morning glory", "passion flower", "lotus", "toad lily", "anthurium",
    "frangipani", "clematis", "hibiscus", "columbine", "desert-rose", "tree mallow", "magnolia",
    "cyclamen", "watercress", "canna lily", "hippeastrum", "bee balm", "ball moss", "foxglove",
    "bougainvillea", "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower",
    "trumpet creeper", "blackberry lily",
]  # fmt: skip


def locate_flowers(root: str | os.PathLike) -> Path:
    """The ``flowers-102`` folder under ``root`` (or ``root`` itself).

    Raises:
        FileNotFoundError: neither holds ``jpg/``, ``imagelabels.mat`` or ``setid.mat``.
    """
    return resolve_folder(
        root,
        FLOWERS_FOLDER,
        ["jpg", "imagelabels.mat", "setid.mat"],
        f"run `fgvc data download flowers102 --root {root}`, set download: true, or ",
    )


def _read_labels(path: Path) -> np.ndarray:
    """``imagelabels.mat``: the 1-based class of image ``i`` at index ``i - 1``."""
    mat = load_mat(path, f"download it from {FLOWERS_URL}{path.name}")
    labels = mat_integers(mat, "labels", path)
    bad = np.flatnonzero((labels < 1) | (labels > len(FLOWERS_CLASSES)))
    if bad.size:
        raise ValueError(
            f"{path}: image {bad[0] + 1} has class {labels[bad[0]]}; classes run from 1 to "
            f"{len(FLOWERS_CLASSES)}"
        )
    return labels


def _read_set_ids(path: Path, num_images: int) -> dict[str, np.ndarray]:
    """``setid.mat``'s three id lists (1-based, unsorted), checked against the labels: each
    id in range, in one list only, and every labelled image listed."""
    mat = load_mat(path, f"download it from {FLOWERS_URL}{path.name}")
    ids = {name: mat_integers(mat, name, path) for name in ("trnid", "valid", "tstid")}
    for name, values in ids.items():
        bad = values[(values < 1) | (values > num_images)]
        if bad.size:
            raise ValueError(
                f"{path}: '{name}' holds image id {bad[0]}, but imagelabels.mat labels images "
                f"1..{num_images}; are both files from the same copy?"
            )
    owner: dict[int, str] = {}
    for name, values in ids.items():
        for value in values.tolist():
            if value in owner:
                raise ValueError(
                    f"{path}: image id {value} is listed in both '{owner[value]}' and '{name}'; "
                    f"restore setid.mat from {FLOWERS_URL}"
                )
            owner[value] = name
    if len(owner) != num_images:
        raise ValueError(
            f"{path} lists {len(owner)} images but imagelabels.mat labels {num_images}; are "
            f"both files from the same copy?"
        )
    return ids


class Flowers102(ImageDataset):
    """`Oxford Flowers-102 <https://www.robots.ox.ac.uk/~vgg/data/flowers/102/>`_ (v1.1).

    Expected layout, torchvision's (``root`` is the folder holding ``flowers-102/``, or
    that folder)::

        flowers-102/
            jpg/image_00001.jpg ... image_08189.jpg    1-based image id, 5 digits
            imagelabels.mat     labels: 1 x 8189 uint8, class 1..102 of image id i at i - 1
            setid.mat           trnid, valid, tstid: 1 x k uint16 image ids, not sorted

    Samples follow the order of ``setid.mat`` (as torchvision's); ``trainval`` is ``train``
    then ``val``. Labels are 0-based; ``classes`` are the 102 commonly used names
    (torchvision's ``Flowers102.classes``, TFDS's ``_NAMES``), spelled as there
    (``"pink-yellow dahlia?"``). ``ids`` are the file names without ``.jpg``
    (``"image_06765"``). The two ``.mat`` files are checked against each other: ids in
    range, each image in one split, every labelled image in a split.

    Args:
        root: folder holding ``flowers-102/`` (or the dataset folder itself).
        split: ``"train"``, ``"val"``, ``"trainval"`` or ``"test"``.
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
        if split not in FLOWERS_SPLIT_IDS:
            raise ValueError(
                f"Flowers102 split must be one of {list(FLOWERS_SPLIT_IDS)}, got {split!r}"
            )
        self.split = split
        self.folder = locate_flowers(root)
        labels = _read_labels(self.folder / "imagelabels.mat")
        set_ids = _read_set_ids(self.folder / "setid.mat", len(labels))
        self.classes = list(FLOWERS_CLASSES)
        self.samples, self.ids = [], []
        images = self.folder / "jpg"
        for name in FLOWERS_SPLIT_IDS[split]:
            for image_id in set_ids[name].tolist():
                stem = f"image_{image_id:05d}"
                self.samples.append((str(images / f"{stem}.jpg"), int(labels[image_id - 1]) - 1))
                self.ids.append(stem)
        # published counts are those of the full label file (a replica of a few classes is
        # not compared with them)
        if len(np.unique(labels)) == len(FLOWERS_CLASSES):
            self._check_counts("Flowers-102", FLOWERS_COUNTS, len(FLOWERS_CLASSES))


DATASET = DatasetSpec(
    name="flowers102",
    title="Oxford Flowers-102",
    homepage=FLOWERS_URL,
    parser=Flowers102,
    locate=locate_flowers,
    splits=("train", "val", "test"),
    num_classes=len(FLOWERS_CLASSES),
    counts=FLOWERS_COUNTS,
    # CUB's protocol (short side to S, center crop S): the iSQRT-COV authors published no
    # recipe for Flowers, and its photos, like CUB's, are not square
    preset=Preset("short_side"),
    datamodule="Flowers102DataModule",
    # the archive holds jpg/, unpacked into flowers-102/; the .mat files are copied beside it
    sources=(
        DatasetSource(
            url=FLOWERS_URL + "102flowers.tgz",  # 344,862,509 bytes
            filename="102flowers.tgz",
            folder=FLOWERS_FOLDER,
            md5="52808999861908f626f3c1f4e79d11fa",
            sha256="2d01ecc807db462958cfe3d92f57a8c252b4abd240eb955770201e45f783b246",
            into="",
        ),
        DatasetSource(
            url=FLOWERS_URL + "imagelabels.mat",  # 502 bytes
            filename="imagelabels.mat",
            folder=FLOWERS_FOLDER,
            md5="e0620be6f572b9609742df49c70aed4d",
            sha256="4903e94206bac23bf772aadf06451916df56b58fc483a62db32a97b82656651d",
            into="",
            extract=False,
        ),
        DatasetSource(
            url=FLOWERS_URL + "setid.mat",  # 14,989 bytes
            filename="setid.mat",
            folder=FLOWERS_FOLDER,
            md5="a5357ecc9cb78c4bef273ce3793fc85c",
            sha256="46b8678f91fd95d3c8f4feab80d271a6c834a1dd896fe29fd3e6ad9ce5c8dccd",
            into="",
            extract=False,
        ),
    ),
    val_split="val",
    trainval_split="trainval",
    citation=(
        "Nilsback & Zisserman, ICVGIP 2008; counts: TFDS catalog oxford_flowers102; md5s: "
        "torchvision datasets/flowers102.py; sha256s: TFDS url_checksums/oxford_flowers102.txt; "
        "class names: TFDS _NAMES = torchvision Flowers102.classes"
    ),
)
