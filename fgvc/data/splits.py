"""Seeded, stratified validation splits and the file that records them."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fgvc.utils.atomic import atomic_write_text


def stratified_split(
    labels: Sequence[int], fraction: float, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Split indices into ``(train, val)``, taking ``round(fraction * n_c)`` of each class.

    Every class with at least two samples keeps at least one sample on each side; a class
    with one sample stays in training. The draw depends only on ``labels``, ``fraction``
    and ``seed``. Both index lists are sorted.

    Raises:
        ValueError: ``fraction`` outside ``[0, 1)``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_split must be in [0, 1), got {fraction}")
    labels_arr = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for label in np.unique(labels_arr):
        members = np.flatnonzero(labels_arr == label)
        count = len(members)
        take = int(round(fraction * count))
        if fraction > 0 and count >= 2:
            take = min(max(take, 1), count - 1)
        elif count < 2:
            take = 0
        if take:
            val.extend(rng.permutation(members)[:take].tolist())
    val_set = set(val)
    train = [i for i in range(len(labels_arr)) if i not in val_set]
    return train, sorted(val)


def write_split_file(path: str | os.PathLike, val_ids: Sequence[str], **meta: Any) -> Path:
    """Record the validation ids (and how they were drawn) as JSON at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**meta, "num_val": len(val_ids), "val_ids": list(val_ids)}
    atomic_write_text(path, json.dumps(payload, indent=1) + "\n")
    return path


def read_split_file(path: str | os.PathLike) -> list[str]:
    """The validation ids recorded by :func:`write_split_file`.

    Raises:
        FileNotFoundError / ValueError: missing file or not a split file (names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"validation split file {path} not found")
    try:
        payload = json.loads(path.read_text())
        return [str(i) for i in payload["val_ids"]]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a validation split file ({err})") from err


def indices_from_file(
    ids: Sequence[str], path: str | os.PathLike, where: str
) -> tuple[list[int], list[int]]:
    """(training, validation) positions in ``ids`` from a ``val_split.json`` written for them.

    Args:
        ids: the image ids of the split the file was drawn from, in dataset order.
        path: the file (:func:`write_split_file`).
        where: that split, for the message (``"the train split of data"``).

    Raises:
        ValueError: the file names ids that ``ids`` does not have.
    """
    wanted = read_split_file(path)
    position = {image_id: i for i, image_id in enumerate(ids)}
    missing = [i for i in wanted if i not in position]
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} validation ids are not in {where} (first: {missing[:5]}); "
            f"was it written for this dataset?"
        )
    val_idx = sorted(position[i] for i in wanted)
    chosen = set(val_idx)
    return [i for i in range(len(ids)) if i not in chosen], val_idx
