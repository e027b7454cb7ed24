"""NABirds (North American birds): 555 classes, 23,929 train / 24,633 test images.

Facts (counts, layout, the 555 leaf classes, pitfalls) and their sources: Van Horn et al.,
"Building a bird recognition app and large scale dataset with citizen scientists", CVPR 2015
(48,562 images, 555 categories); split counts from ``train_test_split.txt`` of a copy of
the annotation files (github.com/Rice-Field/NABirds), the same figures in the common loaders
(lvyilin/pytorch-fgvc-dataset, TACJu/TransFG ``utils/dataset.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

from fgvc.data.base import resolve_folder
from fgvc.data.datasets.cub import CUB200
from fgvc.data.descriptor import DatasetSpec
from fgvc.data.presets import Preset

NABIRDS_FOLDER = "nabirds"
NABIRDS_COUNTS = {"train": 23929, "test": 24633}
NABIRDS_NUM_CLASSES = 555

NABIRDS_HELP = """\
NABirds cannot be downloaded automatically: the Cornell Lab of Ornithology hands it out after
you accept its terms of use, at https://dl.allaboutbirds.org/nabirds (an e-mail address and
the terms; non-commercial research use).
Download nabirds.tar.gz there (about 9 GB), then unpack it into the data root:
    tar -xzf nabirds.tar.gz -C <root>      # gives <root>/nabirds/images.txt, images/, ...
Then check it: fgvc data check nabirds --root <root>"""


def locate_nabirds(root: str | os.PathLike) -> Path:
    """The ``nabirds`` folder under ``root`` (or ``root`` itself).

    Raises:
        FileNotFoundError: neither holds ``images.txt`` (the message says how to get it).
    """
    return resolve_folder(
        root,
        NABIRDS_FOLDER,
        ["images.txt"],
        "see `fgvc data download nabirds` for where to get it, or ",
    )


class NABirds(CUB200):
    """`NABirds <https://dl.allaboutbirds.org/nabirds>`_: CUB's file layout, 555 classes.

    Expected layout (``root`` is the folder holding ``nabirds/``, or that folder)::

        nabirds/
            images.txt              <image uuid> <path>, e.g. "0000139e-... 0817/0000139e....jpg"
            image_class_labels.txt  <image uuid> <class id>
            train_test_split.txt    <image uuid> <is_training: 1 train, 0 test>
            classes.txt             <class id> <name>: all 1,011 nodes of the taxonomy
            images/<4-digit class id>/<uuid>.jpg    (35 end in .JPG: paths are images.txt's)

    ``classes.txt`` lists every node of the bird taxonomy (orders, families, species and
    their visual sub-categories); the classes are the ones images are labelled with - the
    555 leaves - in increasing order of class id (labels 0..554, as the common loaders map
    them). Names are kept as written (some hold a double space). ``ids`` are image uuids.

    Args:
        root: folder holding ``nabirds/`` (or the dataset folder itself).
        split: ``"train"`` or ``"test"``.
        transform: albumentations pipeline or callable applied to the RGB ``uint8`` image.
        decode_min_size: see :class:`fgvc.data.base.ImageDataset`.
    """

    title = "NABirds"
    published = NABIRDS_COUNTS
    published_classes = NABIRDS_NUM_CLASSES

    @staticmethod
    def locate(root: str | os.PathLike) -> Path:
        return locate_nabirds(root)

    def label_classes(self, class_ids: list[int], labels: dict[str, str]) -> list[int]:
        """The class ids some image has (both splits, so labels agree), in increasing order."""
        used = {int(value) for value in labels.values() if value.isdigit()}
        return [class_id for class_id in class_ids if class_id in used]


DATASET = DatasetSpec(
    name="nabirds",
    title="NABirds",
    homepage="https://dl.allaboutbirds.org/nabirds",
    parser=NABirds,
    locate=locate_nabirds,
    splits=("train", "test"),
    num_classes=NABIRDS_NUM_CLASSES,
    counts=NABIRDS_COUNTS,
    # birds at CUB's scale: the authors' CUB protocol (short side S, center crop S)
    preset=Preset("short_side"),
    datamodule="NABirdsDataModule",
    manual=NABIRDS_HELP,
    citation=(
        "Van Horn et al., CVPR 2015 (555 classes, 48,562 images); split counts from the "
        "annotation files (github.com/Rice-Field/NABirds copy; lvyilin/pytorch-fgvc-dataset)"
    ),
)
