"""Where the benchmark datasets come from, and fetching them safely.

:data:`SOURCES` is the one registry of URLs and checksums (tests point it elsewhere).
``FGVC_<NAME>_URL`` (``FGVC_CUB_URL``, ``FGVC_AIRCRAFT_URL``: the archive's URL, or a folder
URL ending in ``/``) or ``FGVC_MIRROR`` (a folder URL holding the archives under their usual
names) download from elsewhere; the checksums stay those of the registry (see
:mod:`fgvc.utils.download`).

Downloads go through :func:`fgvc.utils.download.download_url` (own partial file, resume,
checksum, rename) and :func:`fgvc.utils.archive.safe_extract` (path-safe, into an empty
staging folder); only the dataset's own folder is then moved into ``root``, never over
anything (CUB's archive also holds a stray ``attributes.txt``). Download, extraction and
move run under a lock (``<root>/<folder>.lock``): of several processes (DDP ranks, two
users), one fetches the dataset and the others wait, then use its folder.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fgvc.data.aircraft import AIRCRAFT_FOLDER
from fgvc.data.cars import CARS_LAYOUTS
from fgvc.data.cub import CUB_FOLDER
from fgvc.utils.archive import safe_extract
from fgvc.utils.download import (
    MIRROR_ENV,
    DownloadError,
    download_url,
    env_var,
    resolve_url,
)
from fgvc.utils.locks import file_lock


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

    An existing dataset folder is left alone (and returned), also one that another process
    finished while this one waited for the lock. The archive is verified against the
    published sha256 and/or md5 while it downloads, and deleted after extraction unless
    ``keep_archive`` (an archive that was already in ``root`` is kept and used).

    Raises:
        DownloadError: network failure, checksum mismatch or unsafe archive.
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
    try:
        root.mkdir(parents=True, exist_ok=True)
        with file_lock(root / f"{source.folder}.lock") as locked:
            if not target.exists():  # else another process finished it while this one waited
                _fetch_and_extract(name, source, root, locked, progress, keep_archive)
    except OSError as err:  # the folder, the lock, extraction: disk problems
        raise DownloadError(
            f"cannot write {target} ({err.strerror or err}); free some space or choose another root"
        ) from err
    return target


def _fetch_and_extract(
    name: str, source: DatasetSource, root: Path, locked: bool, progress: bool, keep: bool
) -> None:
    staging_prefix = f".{source.folder}.staging-"
    if locked:  # staging folders are only made under the lock: these are from killed runs
        for stale in root.glob(glob.escape(staging_prefix) + "*"):
            shutil.rmtree(stale, ignore_errors=True)
    archive = root / source.filename
    existed = archive.exists()
    url = resolve_url(name, source.url, source.filename)
    try:
        download_url(url, archive, sha256=source.sha256, md5=source.md5, progress=progress)
    except DownloadError as err:
        raise DownloadError(
            f"{err}; or set {env_var(name)} (the archive's URL) or {MIRROR_ENV} (a folder URL "
            f"holding {source.filename}) to download from a mirror"
        ) from err
    staging = Path(tempfile.mkdtemp(dir=root, prefix=staging_prefix))
    try:
        safe_extract(archive, staging)
        extracted = staging / source.folder
        if not extracted.is_dir():
            found = sorted(p.name for p in staging.iterdir())
            raise DownloadError(
                f"{archive.name} does not hold {source.folder}/ (found {found}); "
                f"is the registry entry for {name!r} right?"
            )
        target = root / source.folder
        try:
            os.rename(extracted, target)
        except OSError:
            if not target.is_dir():  # else a process without file locks was first: use it
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not keep and not existed:
        archive.unlink(missing_ok=True)
