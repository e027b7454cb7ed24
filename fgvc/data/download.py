"""Where the benchmark datasets come from, and fetching them safely.

:data:`SOURCES` is the one registry of URLs and checksums (tests point it elsewhere).
Downloads go through :func:`fgvc.utils.download.download_url` (partial file, checksum,
rename) and :func:`fgvc.utils.download.safe_extract` (path-safe, into an empty staging
folder); only the dataset's own folder is then moved into ``root``, never over anything
(CUB's archive also holds a stray ``attributes.txt``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fgvc.data.aircraft import AIRCRAFT_FOLDER
from fgvc.data.cars import CARS_LAYOUTS
from fgvc.data.cub import CUB_FOLDER
from fgvc.utils.download import DownloadError, download_url, safe_extract


@dataclass(frozen=True)
class DatasetSource:
    """One downloadable archive: where it is, what it hashes to, what it unpacks to."""

    url: str
    filename: str
    folder: str
    sha256: str | None = None
    md5: str | None = None


SOURCES: dict[str, DatasetSource] = {
    "cub": DatasetSource(
        url="https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
        filename="CUB_200_2011.tgz",
        folder=CUB_FOLDER,
        sha256="0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081",
        md5="97eceeb196236b17998738112f37df78",
    ),
    "aircraft": DatasetSource(
        url="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
        filename="fgvc-aircraft-2013b.tar.gz",
        folder=AIRCRAFT_FOLDER,
        md5="d4acdd33327262359767eeaa97a4f732",
    ),
}

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


def download_dataset(
    name: str,
    root: str | os.PathLike,
    sources: dict[str, DatasetSource] | None = None,
    progress: bool = True,
    keep_archive: bool = False,
) -> Path:
    """Download and extract dataset ``name`` into ``root``; returns the dataset folder.

    An existing dataset folder is left alone (and returned). The archive is verified
    against the published sha256 and/or md5 while it downloads, and deleted after
    extraction unless ``keep_archive``.

    Raises:
        DownloadError: network failure, checksum mismatch, unsafe archive, or a target
            that already exists.
        KeyError: ``name`` is not in the registry.
    """
    sources = SOURCES if sources is None else sources
    if name not in sources:
        raise KeyError(f"no download source for {name!r}; known: {sorted(sources)}")
    source = sources[name]
    root = Path(root).expanduser()
    target = root / source.folder
    if target.exists():
        return target
    archive = root / source.filename
    existed = archive.exists()
    download_url(source.url, archive, sha256=source.sha256, md5=source.md5, progress=progress)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{source.folder}-"))
    try:
        safe_extract(archive, staging)
        extracted = staging / source.folder
        if not extracted.is_dir():
            found = sorted(p.name for p in staging.iterdir())
            raise DownloadError(
                f"{archive.name} does not hold {source.folder}/ (found {found}); "
                f"is the registry entry for {name!r} right?"
            )
        if target.exists():
            raise DownloadError(f"{target} appeared meanwhile; nothing was overwritten")
        os.rename(extracted, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not keep_archive and not existed:
        archive.unlink(missing_ok=True)
    return target
