"""``model.json``: what an export bundle says about its network, read and checked.

An export bundle (:mod:`fgvc.deploy.bundle`) is a folder with ``model.json`` (format
``fgvc-export``, version 2: the :class:`~fgvc.models.NetSpec` under ``net``, ``class_names``,
``preprocessing``, ``files``, ...) beside ``model.safetensors`` and the other formats. Reading
that description lives here, below :mod:`fgvc.train`, because training reads it too:
``model.pretrained: <export folder>`` takes the bundle's weights and checks its network
against the config's before a tensor is read (:mod:`fgvc.train.pretrained`).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from fgvc.data.files import confusable_message, confusable_names
from fgvc.data.preprocessing import EvalPreprocessing
from fgvc.errors import CheckpointError
from fgvc.models import NetSpec

logger = logging.getLogger(__name__)

CONFIG_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
BUNDLE_FORMAT = "fgvc-export"
BUNDLE_VERSION = 2


def is_bundle(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is an export bundle (it holds a ``model.json``)."""
    path = Path(folder).expanduser()
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """``model.json`` of a bundle folder, checked so that it can rebuild the network.

    Raises:
        CheckpointError: no ``model.json`` there, or one that is not fgvc's, is from another
            format version, or is inconsistent (the message names the file and the value).
    """
    path = Path(folder).expanduser() / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found; is {path.parent} an fgvc export folder?")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(config, dict) or config.get("format") != BUNDLE_FORMAT:
        raise CheckpointError(f"{path} is not an fgvc export description")
    if config.get("format_version") != BUNDLE_VERSION:
        raise CheckpointError(
            f"{path} has format version {config.get('format_version')!r}; this fgvc reads "
            f"{BUNDLE_VERSION} - export the checkpoint again with this fgvc (fgvc export)"
        )
    parse_config(config, path)  # every value checked now, not at first use
    return config


def parse_config(
    config: dict[str, Any], path: Path
) -> tuple[NetSpec, list[str], EvalPreprocessing]:
    """The network, class names and preprocessing ``model.json`` describes.

    Raises:
        CheckpointError: a missing or bad value (named with the file).
    """
    try:
        spec = NetSpec.from_mapping(_mapping(config, "net"))
        prep = EvalPreprocessing.from_dict(_mapping(config, "preprocessing"))
        names = config.get("class_names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("class_names must be a list of strings")
        if len(names) != spec.num_classes:
            raise ValueError(
                f"{len(names)} class_names for a network with {spec.num_classes} outputs"
            )
        if not isinstance(config.get("files", {}), dict):
            raise ValueError("files must be a mapping")
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: {err}; export the checkpoint again") from err
    _warn_about_names(names, path)
    return spec, names, prep


_warned: set[str] = set()  # each message once per process (a bundle's file is read twice)


def _warn_about_names(names: list[str], path: Path) -> None:
    """Class names a reader cannot tell apart: the same name twice (predictions of either
    class print alike), or names that differ only in case or Unicode normalization."""
    counts = Counter(names)
    messages = [
        f"{path}: class name {name!r} appears {count} times in class_names: predictions of "
        f"those classes cannot be told apart; give each class its own name"
        for name, count in counts.items()
        if count > 1
    ]
    messages += [confusable_message(str(path), group) for group in confusable_names(names)]
    for message in messages:
        if message not in _warned:
            _warned.add(message)
            logger.warning("warning: %s", message)


def _mapping(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a mapping, got {type(value).__name__}")
    return value


def bundle_file(folder: Path, config: dict[str, Any], kind: str, default: str) -> Path:
    """The path of one of the bundle's files (``files[kind]``, a plain name inside it)."""
    name = config.get("files", {}).get(kind, default)
    if not isinstance(name, str) or Path(name).name != name:
        raise CheckpointError(f"{folder / CONFIG_FILE}: files.{kind} must be a file name")
    return folder / name
