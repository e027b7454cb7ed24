"""``fgvc data shard``: a dataset's splits as litdata shards (see :mod:`fgvc.data.shards.meta`).

Every sample stores the image file's bytes as they are on disk (a JPEG stays the same JPEG:
nothing is decoded or re-encoded), its label, its id and its position in the split. The
splits are written with ``litdata.optimize`` on ``jobs`` processes, each taking a contiguous
slice in order, so the stored order is the one given: a random permutation of the dataset's
(see :mod:`fgvc.data.shards.meta` for why). Before anything is written every
image is decoded once, as ``fgvc data check`` does, so that a corrupt file stops the command
with the same one-line report instead of surfacing mid-training.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fgvc.data.base import ImageDataset
from fgvc.data.check import CheckReport, check_dataset
from fgvc.data.datasets import dataset_spec
from fgvc.data.io import ImageDecodeError
from fgvc.data.shards.meta import (
    SHARDS_FILE,
    ShardsInfo,
    encode_samples,
    is_url,
    join,
    samples_name,
    write_file,
)

#: litdata's advice for object storage: chunks of tens of MB
DEFAULT_CHUNK_BYTES = "64MB"


@dataclass
class ShardReport:
    """What :func:`write_shards` did: the metadata written, or the check that stopped it."""

    info: ShardsInfo | None = None
    check: CheckReport | None = None
    written: dict[str, str] = field(default_factory=dict)


#: a folder the writing processes report unreadable files into (litdata's workers hang the
#: whole write when the function they run raises)
ERRORS_ENV = "FGVC_SHARD_ERRORS"


def encode_file(sample: tuple[str, int, str, int]) -> dict[str, Any]:
    """The stored sample of ``(path, label, id, index)``: the file's bytes, unchanged.

    A file that cannot be read is reported into the ``FGVC_SHARD_ERRORS`` folder (one line,
    as ``fgvc data check`` words it) and stored empty; without that folder it raises.
    """
    path, label, image_id, index = sample
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        message = f"{path}: cannot read image ({err.strerror or err}); check the dataset root"
        folder = os.environ.get(ERRORS_ENV)
        if folder is None:
            raise ImageDecodeError(message) from err
        with open(os.path.join(folder, f"{os.getpid()}.txt"), "a", encoding="utf-8") as out:
            out.write(message + "\n")
        data = b""
    return {"image": data, "label": int(label), "id": str(image_id), "index": int(index)}


def _reported(folder: str) -> list[str]:
    return [
        line
        for name in sorted(os.listdir(folder))
        for line in Path(folder, name).read_text(encoding="utf-8").splitlines()
    ]


def _splits(name: str, root: Path) -> dict[str, str | None]:
    """``{split: None}`` in writing order, plus the roles (train/test/val/trainval) as
    ``{"@train": split, ...}`` (how the DataModules pick them)."""
    spec = dataset_spec(name)
    splits = list(spec.split_names(root))
    if name == "folder":  # as FolderDataModule: val/ is the official val, test/ else val/
        val = "val" if "val" in splits else None
        roles = {"train": "train", "val": val, "test": "test" if "test" in splits else val}
        roles["trainval"] = None
    else:
        roles = {
            "train": spec.train_split,
            "val": spec.val_split,
            "test": spec.test_split,
            "trainval": spec.trainval_split,
        }
    if roles["trainval"] and roles["trainval"] not in splits:
        splits.append(roles["trainval"])
    if roles["train"] not in splits:
        raise ValueError(f"{root}: no {roles['train']} split to write (found {splits or 'none'})")
    return {**dict.fromkeys(splits), **{f"@{k}": v for k, v in roles.items()}}


def _crop_bottom(dataset: ImageDataset) -> int:
    """Rows the dataset crops off its decoded images (only FGVC-Aircraft's banner)."""
    from fgvc.data.datasets.aircraft import BANNER_HEIGHT, FGVCAircraft

    return BANNER_HEIGHT if isinstance(dataset, FGVCAircraft) and dataset.crop_banner else 0


def prepare_output(out: str, force: bool) -> None:
    """Refuse an output that holds anything (with ``force``: anything but an earlier
    ``fgvc data shard`` output, which is then removed).

    Raises:
        FileExistsError: the output is not empty (the message names it and the way out).
    """
    if is_url(out):
        from litdata.streaming.fs_provider import _get_fs_provider

        provider = _get_fs_provider(out, {})
        if provider.is_empty(out):
            return
        if not force:
            raise FileExistsError(
                f"{out} is not empty; write to a new prefix, or pass --force to overwrite the "
                f"shards there"
            )
        metadata = join(out, SHARDS_FILE)
        if provider.exists(metadata):  # the old shards stop counting as complete first
            provider.delete_file_or_directory(metadata)
        return
    folder = Path(out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} is a file; pass a folder for --out")
    entries = sorted(os.listdir(folder)) if folder.is_dir() else []
    if not entries:
        return
    if not force:
        raise FileExistsError(
            f"{folder} is not empty ({entries[0]}{', ...' if len(entries) > 1 else ''}); write "
            f"to a new folder, or pass --force to replace the shards written there before"
        )
    foreign = [e for e in entries if not _ours(folder / e)]
    if foreign:
        raise FileExistsError(
            f"{folder / foreign[0]} is not a file fgvc data shard wrote; --force only replaces "
            f"shards - move it away or write to a new folder"
        )
    for entry in entries:
        path = folder / entry
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _ours(path: Path) -> bool:
    name = path.name
    if path.is_file():
        return name == SHARDS_FILE or (name.startswith("samples-") and name.endswith(".json.gz"))
    if path.is_dir() and not path.is_symlink():
        inside = os.listdir(path)
        return all(n == "index.json" or (n.startswith("chunk-") and ".bin" in n) for n in inside)
    return False


def write_shards(
    name: str,
    root: str | os.PathLike,
    out: str,
    jobs: int | None = None,
    force: bool = False,
    check: bool = True,
    chunk_bytes: str = DEFAULT_CHUNK_BYTES,
    log: Callable[[str], None] = print,
) -> ShardReport:
    """Write every split of dataset ``name`` under ``root`` as shards in ``out``.

    Args:
        name: a ``fgvc data`` dataset name (``folder`` included).
        root: the dataset root (as ``fgvc data check --root``).
        out: an empty folder (created) or object-store URL.
        jobs: processes (default: one a CPU).
        force: replace an earlier shard output in ``out`` (nothing else is ever removed).
        check: decode every image first (``fgvc data check``); a bad file stops everything.
        chunk_bytes: target size of a chunk file.

    Raises:
        FileExistsError: ``out`` is not empty (see :func:`prepare_output`).
        FileNotFoundError, ValueError, OSError: the dataset cannot be read.
    """
    from litdata import __version__ as litdata_version

    import fgvc

    root = Path(root).expanduser()
    jobs = jobs or os.cpu_count() or 1
    if not is_url(out):
        out = str(Path(out).expanduser().absolute())
    prepare_output(out, force)
    spec = dataset_spec(name)
    spec.locate(root)  # one line saying how to get it when it is not there
    plan = _splits(name, root)
    report = ShardReport()
    if check:
        report.check = check_dataset(name, root, workers=jobs, log=log)
        if not report.check.ok:
            return report
    splits = [s for s in plan if not s.startswith("@")]
    datasets = {split: spec.parser(root, split) for split in splits}
    train = datasets[plan["@train"]]  # type: ignore[index]
    classes = list(train.classes)
    for split, dataset in datasets.items():
        if list(dataset.classes) != classes:
            raise ValueError(f"{root}: split {split} has other classes than {plan['@train']}")
        if len(dataset) == 0:
            raise ValueError(f"{root}: split {split} has no image")
    info = ShardsInfo(
        dataset=name,
        classes=classes,
        splits={},
        class_counts={},
        train_split=str(plan["@train"]),
        test_split=str(plan["@test"] or plan["@train"]),
        val_split=plan["@val"],
        trainval_split=plan["@trainval"],
        preset=name if spec.preset is not None else "generic",
        crop_bottom=_crop_bottom(train),
        source=str(root.absolute()),
        writer={"fgvc": getattr(fgvc, "__version__", ""), "litdata": litdata_version},
    )
    fork = "fork" if sys.platform.startswith("linux") else None
    with tempfile.TemporaryDirectory() as errors:
        previous = os.environ.get(ERRORS_ENV)
        os.environ[ERRORS_ENV] = errors  # the writing processes inherit it
        try:
            _write_splits(datasets, out, jobs, force, chunk_bytes, fork, info, report, log)
        finally:
            if previous is None:
                os.environ.pop(ERRORS_ENV, None)
            else:
                os.environ[ERRORS_ENV] = previous
        bad = _reported(errors)
    if bad:  # files gone since they were listed: no metadata, the output stays incomplete
        report.check = CheckReport(bad_files=bad)
        return report
    write_file(out, SHARDS_FILE, info.to_json().encode("utf-8"))  # last: marks it complete
    report.info = info
    return report


def _write_splits(
    datasets: dict[str, ImageDataset],
    out: str,
    jobs: int,
    force: bool,
    chunk_bytes: str,
    fork: str | None,
    info: ShardsInfo,
    report: ShardReport,
    log: Callable[[str], None],
) -> None:
    """Each split's shards (``litdata.optimize``) and its samples file, into ``info``."""
    from litdata import optimize

    for split, dataset in datasets.items():
        order = np.random.default_rng(info.store_seed).permutation(len(dataset)).tolist()
        inputs = [
            (dataset.samples[index][0], dataset.samples[index][1], dataset.ids[index], index)
            for index in order
        ]
        where = join(out, split)
        log(f"{split}: writing {len(inputs)} images to {where} with {jobs} processes ...")
        optimize(
            encode_file,
            inputs,
            where,
            chunk_bytes=chunk_bytes,
            num_workers=min(jobs, len(inputs)),
            keep_data_ordered=True,  # stored in the order of ``inputs``
            reorder_files=False,
            mode="overwrite" if force else None,
            start_method=fork,
            verbose=False,
        )
        labels = [label for _, label in dataset.samples]
        positions = [0] * len(order)
        for position, index in enumerate(order):
            positions[index] = position
        samples = encode_samples(labels, list(dataset.ids), positions)
        write_file(out, samples_name(split), samples)
        counts = [0] * len(info.classes)
        for label in labels:
            counts[label] += 1
        info.splits[split] = len(inputs)
        info.class_counts[split] = counts
        report.written[split] = where
