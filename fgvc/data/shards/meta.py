"""The ``fgvc_shards.json`` of a shard folder: what the DataModule knows without reading shards.

Layout written by ``fgvc data shard`` (a local folder or an object-store prefix)::

    <out>/
        fgvc_shards.json            this metadata (written last: its presence means complete)
        samples-<split>.json.gz     the split in the dataset's order: labels, image ids and
                                    where each image is stored
        <split>/index.json          litdata's index of the split's chunks
        <split>/chunk-*.bin         the samples: {image: JPEG bytes as on disk, label, id, index}

``index`` is the sample's position in the dataset's order of its split. The samples are
stored in a random order (fixed by ``store_seed``), not the dataset's: a dataset lists its
images class by class, and a chunk (tens of MB, hundreds of images) of a class-sorted split
would feed batches of one class to a stream, which shuffles chunks and the images inside
them but can only batch images of the same chunk together.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fgvc.utils.atomic import atomic_write_bytes

SHARDS_FILE = "fgvc_shards.json"
FORMAT = 1


def is_url(location: str) -> bool:
    """Whether ``location`` is an object-store URL (``s3://``, ``gs://``...) for litdata."""
    return "://" in str(location)


def join(location: str, name: str) -> str:
    """``location/name`` for a folder or a URL."""
    return (
        f"{str(location).rstrip('/')}/{name}" if is_url(location) else os.path.join(location, name)
    )


def samples_name(split: str) -> str:
    return f"samples-{split}.json.gz"


@dataclass
class ShardsInfo:
    """Metadata of a shard folder.

    Attributes:
        dataset: the ``fgvc data`` name it was written from (``cub``, ``imagenet``, ``folder``).
        classes: class names in label order.
        splits: images per written split.
        class_counts: per split, images per class in label order.
        train_split, test_split: the splits training and testing use.
        val_split: the official validation split, if there is one.
        trainval_split: train + val, trained on when ``val_split`` is a number (Aircraft).
        preset: the dataset's transform preset (its evaluation preprocessing default).
        crop_bottom: rows removed at the bottom of every decoded image (Aircraft's banner).
        source: the dataset root the shards were written from.
        store_seed: the seed of the stored order (see the module).
    """

    dataset: str
    classes: list[str]
    splits: dict[str, int]
    class_counts: dict[str, list[int]]
    train_split: str = "train"
    test_split: str = "test"
    val_split: str | None = None
    trainval_split: str | None = None
    preset: str = "generic"
    crop_bottom: int = 0
    source: str = ""
    store_seed: int = 0
    format: int = FORMAT
    writer: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> ShardsInfo:
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, this fgvc reads {FORMAT}")
            names = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in names})
        except (ValueError, TypeError, AttributeError) as err:
            raise ValueError(f"{where} is not an fgvc shard metadata file ({err})") from None


def write_file(location: str, name: str, data: bytes, storage_options: dict | None = None) -> None:
    """Write ``location/name`` whole: atomically in a folder, one upload to a URL."""
    if not is_url(location):
        atomic_write_bytes(Path(location) / name, data)
        return
    from litdata.streaming.fs_provider import _get_fs_provider

    target = join(location, name)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, name)
        Path(local).write_bytes(data)
        _get_fs_provider(target, storage_options or {}).upload_file(local, target)


def read_file(location: str, name: str, storage_options: dict | None = None) -> bytes:
    """The bytes of ``location/name``.

    Raises:
        FileNotFoundError: no such file (the message says what the folder should hold).
    """
    target = join(location, name)
    try:
        if not is_url(location):
            return Path(target).read_bytes()
        from litdata.streaming.fs_provider import _get_fs_provider

        provider = _get_fs_provider(target, storage_options or {})
        if not provider.exists(target):
            raise FileNotFoundError(target)
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, name)
            provider.download_file(target, local)
            return Path(local).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{target} not found: {location} is not a complete shard folder; write one with "
            f"`fgvc data shard NAME --root DIR --out {location}`"
        ) from None


def read_info(location: str, storage_options: dict | None = None) -> ShardsInfo:
    """The metadata of the shard folder or URL ``location``."""
    text = read_file(location, SHARDS_FILE, storage_options).decode("utf-8")
    return ShardsInfo.from_json(text, join(location, SHARDS_FILE))


def encode_samples(labels: list[int], ids: list[str], positions: list[int]) -> bytes:
    """The samples file: per image in the dataset's order, its label, id and stored position."""
    payload = {"labels": labels, "ids": ids, "positions": positions}
    return gzip.compress(json.dumps(payload).encode("utf-8"), mtime=0)


def read_samples(
    location: str, split: str, storage_options: dict | None = None
) -> tuple[list[int], list[str], list[int]]:
    """Labels, ids and stored positions of ``split``, in the dataset's order."""
    name = samples_name(split)
    try:
        data = json.loads(gzip.decompress(read_file(location, name, storage_options)))
        labels = [int(v) for v in data["labels"]]
        ids = [str(v) for v in data["ids"]]
        positions = [int(v) for v in data["positions"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{join(location, name)} is damaged ({err}); rewrite the shards") from None
    if not len(labels) == len(ids) == len(positions) or sorted(positions) != list(
        range(len(positions))
    ):
        raise ValueError(f"{join(location, name)} is damaged; rewrite the shards")
    return labels, ids, positions
