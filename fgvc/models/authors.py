"""The authors' ImageNet iSQRT-COV checkpoints (fast-MPN-COV release) and where to get them.

``pretrained: isqrt-imagenet`` tries, in order, until one gives a file that loads:

1. ``FGVC_ISQRT_IMAGENET_URL`` / ``FGVC_MIRROR``, when set (then only that: the user's word);
2. the local cache, ``<torch.hub.get_dir()>/checkpoints``: the published file under its hub
   name (``mpncovresnet50-15991845.pth``), or a Google Drive copy fetched before
   (``mpncovresnet50-gdrive.pth``);
3. the authors' HTTP server (dead since 2019-2021, kept as one source among many), sha256
   prefix checked;
4. their Google Drive copy, through ``gdown`` (it answers large files with a confirmation
   page): no checksum is published for it, so what arrives is checked by its size and by
   loading it — the authors' key layout with every shape of the network — and its sha256 is
   recorded; only then is it kept in the cache;
5. otherwise one line: what each source said, the Baidu copy, and the alternatives.

The source used is recorded (:class:`WeightsRecord`) and ends up in the run's ``run.json``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fgvc.errors import CheckpointError, DownloadError
from fgvc.utils.download import download_url, env_var, resolve_url
from fgvc.utils.locks import file_lock

logger = logging.getLogger(__name__)

AUTHORS_BASE_URL = "http://jtxie.com/models/"
#: Its README links Google Drive and Baidu copies of the ImageNet checkpoints.
AUTHORS_REPO = "https://github.com/jiangtaoxie/fast-MPN-COV"
#: The variable that overrides :data:`AUTHORS_BASE_URL` (``FGVC_ISQRT_IMAGENET_URL``).
AUTHORS_URL_ENV = env_var("isqrt-imagenet")
#: Google Drive's download endpoint (tests point it at a loopback server).
GDRIVE_URL = "https://drive.google.com/uc?export=download&id={id}"
#: A download smaller than this share of the published size is not the checkpoint (Drive
#: answers quota and confirmation problems with small HTML pages).
MIN_SIZE_SHARE = 0.5


@dataclass(frozen=True)
class AuthorsCheckpoint:
    """One published iSQRT-COV checkpoint in the authors' layout.

    Attributes:
        url: the authors' HTTP download.
        filename: its name in the hub cache (``<name>-<sha256 prefix>.pth``).
        sha256_prefix: the start of that file's sha256 (torch.hub's convention).
        num_classes: classes of its ``fc``.
        reduce_dim: channels after its 1x1 reduction (the covariance size).
        drive_id: the Google Drive file id of the authors' copy, if any.
        baidu: the Baidu copy's address, if any.
        size_mb: the published size (MB), to tell a checkpoint from an error page.
    """

    url: str
    filename: str
    sha256_prefix: str
    num_classes: int = 1000
    reduce_dim: int = 256
    drive_id: str | None = None
    baidu: str | None = None
    size_mb: float | None = None

    @property
    def drive_filename(self) -> str:
        """The cache name of a Google Drive copy (it need not be the hub file itself)."""
        return f"{self.filename.rsplit('-', 1)[0]}-gdrive.pth"


@dataclass(frozen=True)
class WeightsRecord:
    """Where a network's starting weights came from (written into ``run.json``).

    Attributes:
        source: how the file was found: ``mirror``, ``cache``, ``authors-http``,
            ``google-drive``, ``file``, or for fgvc's own runs ``run`` (a run folder's best
            checkpoint), ``checkpoint`` (a checkpoint of ``fgvc fit``), ``export`` (an export
            bundle's weights).
        file: the file read.
        sha256: its checksum, where one was checked.
        given: what ``pretrained`` said, when it named something else than ``file`` (a run
            or export folder).
        loaded: ``"trunk"`` when only the trunk was taken (another head), ``"all but the
            classifier"`` when a classifier for other classes of the same count was reset
            (:func:`fgvc.train.pretrained.build_network`), else absent.
    """

    source: str
    file: str
    sha256: str | None = None
    given: str | None = None
    loaded: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        optional = ("given", "loaded")  # absent rather than null: older records lack them
        return {k: v for k, v in asdict(self).items() if k not in optional or v is not None}


def _authors(filename: str, drive_id: str, baidu: str, size_mb: float) -> AuthorsCheckpoint:
    prefix = filename.rsplit("-", 1)[1].split(".", 1)[0]
    return AuthorsCheckpoint(
        AUTHORS_BASE_URL + filename, filename, prefix, drive_id=drive_id, baidu=baidu,
        size_mb=size_mb,
    )  # fmt: skip


#: ``"isqrt-imagenet"`` checkpoints by arch (fast-MPN-COV README: Drive ids, Baidu links,
#: sizes). One dict so tests (and mirrors) can repoint it.
AUTHORS_CHECKPOINTS: dict[str, AuthorsCheckpoint] = {
    "resnet50": _authors(  # top-1 error 21.71 (their PyTorch reproduction)
        "mpncovresnet50-15991845.pth",
        "19TWen7p9UDyM0Ueu9Gb22NtouR109C6j",
        "https://pan.baidu.com/s/17TxANPJg_j2VyYgXV05OOQ",
        217.3,
    ),
    "resnet101": _authors(  # top-1 error 20.99
        "mpncovresnet101-ade9737a.pth",
        "1riur7v3rZ7vnrdj2UZ7EBaTKEGSccYwg",
        "https://pan.baidu.com/s/1_H8MosgzPH0BBmlKw2sr5A",
        289.9,
    ),
}


def hub_checkpoint_dir() -> Path:
    """``<torch.hub.get_dir()>/checkpoints``, where torchvision caches its weights too."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def fetch_authors_checkpoint(
    arch: str, load: Callable[[Path], None], progress: bool = True
) -> WeightsRecord:
    """Get the authors' ``arch`` checkpoint and ``load`` it (see the module doc for the order).

    Args:
        arch: a key of :data:`AUTHORS_CHECKPOINTS`.
        load: loads a candidate file into the network, raising :class:`CheckpointError` when
            it does not fit; a source whose file does not load counts as failed.
        progress: show download progress.

    Raises:
        DownloadError: no source gave a file that loads (one line: every source's answer,
            the Baidu copy and the alternatives).
    """
    entry = AUTHORS_CHECKPOINTS[arch]
    cache = hub_checkpoint_dir()
    hub_file, drive_file = cache / entry.filename, cache / entry.drive_filename
    failures: list[str] = []

    def attempt(source: str, path: Path, fetch: Callable[[], None] | None) -> bool:
        try:
            if fetch is not None:
                fetch()
            load(path)
        except (DownloadError, CheckpointError, OSError) as err:  # each names its file or URL
            failures.append(_short(err))
            return False
        return True

    override = resolve_url("isqrt-imagenet", "", entry.filename)
    if override:  # the user's mirror: nothing else is tried behind their back
        fetch = _http(override, hub_file, entry, progress)
        if attempt(override, hub_file, fetch):
            return WeightsRecord("mirror", str(hub_file), entry.sha256_prefix)
    else:
        if hub_file.is_file() and attempt("cache", hub_file, _same_file(hub_file, entry)):
            return WeightsRecord("cache", str(hub_file), entry.sha256_prefix)
        if drive_file.is_file() and attempt("cache", drive_file, None):
            return WeightsRecord("cache", str(drive_file), _sha256(drive_file))
        if attempt(entry.url, hub_file, _http(entry.url, hub_file, entry, progress)):
            return WeightsRecord("authors-http", str(hub_file), entry.sha256_prefix)
        if entry.drive_id:
            url = GDRIVE_URL.format(id=entry.drive_id)
            if attempt("Google Drive", drive_file, _drive(url, drive_file, entry, load, progress)):
                return WeightsRecord("google-drive", str(drive_file), _sha256(drive_file))
    raise DownloadError(_every_way_forward(arch, entry, hub_file, failures, bool(override)))


def _same_file(path: Path, entry: AuthorsCheckpoint) -> Callable[[], None]:
    """A file under the hub name must be the published one (its name carries the hash)."""

    def check() -> None:
        if not _sha256(path).startswith(entry.sha256_prefix):
            raise DownloadError(
                f"{path} is not the published {entry.filename} (another sha256); remove it"
            )

    return check


def _http(url: str, dest: Path, entry: AuthorsCheckpoint, progress: bool) -> Callable[[], None]:
    return lambda: download_url(url, dest, sha256_prefix=entry.sha256_prefix, progress=progress)


def _drive(
    url: str, dest: Path, entry: AuthorsCheckpoint, load: Callable[[Path], None], progress: bool
) -> Callable[[], None]:
    def fetch() -> None:
        import gdown

        dest.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(dest.with_name(dest.name + ".lock")):  # DDP ranks: one download
            if dest.is_file():
                return
            part = dest.with_name(f".{dest.name}.part-{os.getpid()}")
            try:
                try:
                    got = gdown.download(url=url, output=str(part), quiet=not progress)
                except OSError as err:  # requests' connection errors (their text is pages long)
                    raise DownloadError(f"{url}: cannot connect ({type(err).__name__})") from err
                except Exception as err:  # noqa: BLE001 - gdown's own errors
                    raise DownloadError(f"{url}: {_short(err)}") from err
                if not got or not part.is_file():
                    raise DownloadError(f"{url}: nothing was downloaded")
                size = part.stat().st_size
                if entry.size_mb and size < MIN_SIZE_SHARE * entry.size_mb * 1e6:
                    raise DownloadError(
                        f"{url} gave {size:,} bytes, not the {entry.size_mb:g} MB checkpoint (an "
                        f"error or quota page)"
                    )
                load(part)  # the layout and every shape, before the file is kept
                os.replace(part, dest)
                logger.info("kept the authors' Google Drive copy as %s", dest)
            finally:
                part.unlink(missing_ok=True)

    return fetch


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _short(err: BaseException) -> str:
    return " ".join(str(err).split())[:300] or type(err).__name__


def _every_way_forward(
    arch: str, entry: AuthorsCheckpoint, hub_file: Path, failures: list[str], mirror: bool
) -> str:
    tried = "; ".join(failures) or "no source"
    baidu = f" or Baidu copy ({entry.baidu})" if entry.baidu else ""
    mirror_hint = (
        f"fix or unset {AUTHORS_URL_ENV} / FGVC_MIRROR"
        if mirror
        else f"set {AUTHORS_URL_ENV} to a mirror folder URL holding {entry.filename}"
    )
    return (
        f"could not get the authors' iSQRT-COV {arch} ImageNet weights ({tried}). Other ways: "
        f"put a copy of {entry.filename} at {hub_file}; download their Google Drive copy{baidu} "
        f"by hand (links in the README of {AUTHORS_REPO}) and set `pretrained: "
        f"/path/to/that/file` (their .pth/.pth.tar files load as they are); {mirror_hint}; or "
        f"use `pretrained: imagenet` (torchvision's ImageNet backbone weights, head trained "
        f"from scratch: expect accuracy a few points lower)"
    )
