"""``model.pretrained`` naming one of fgvc's own runs, resolved to the file to read::

    model.pretrained: runs/imagenet_isqrt_r50/version_0          # its best checkpoint
    model.pretrained: runs/imagenet_isqrt_r50/version_0/export   # the bundle's weights
    model.pretrained: runs/imagenet_isqrt_r50/version_0/export/model.safetensors
    model.pretrained: runs/imagenet_isqrt_r50/version_0/checkpoints/best-epoch064-top1_0.7829.ckpt

A run folder gives the checkpoint ``fgvc export`` and :func:`fgvc.load` take from it
(:func:`fgvc.runs.resolve_checkpoint`: the one its ModelCheckpoint names best; a folder of
runs such as ``runs/imagenet_isqrt_r50`` means its newest run); an export bundle gives its
weights file (``files.weights`` of its ``model.json``, :mod:`fgvc.bundle_config`). Each comes
with the network its run or bundle recorded, as a
:class:`~fgvc.models.pretrained.PretrainedFile` that :func:`fgvc.models.load_pretrained`
compares with the config's network before reading a tensor (another trunk: refused; another
head: the trunk alone; another class count: a fresh classifier). :func:`build_network` also
gives a fresh classifier where the count is the same but the classes are not (the recorded
class names differ from the data's). ``imagenet``, ``isqrt-imagenet`` and other files pass
unchanged.

Resolution happens here, where ``pretrained`` is consumed, because run folders and bundles
are known above :mod:`fgvc.models`, which must not import them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from fgvc.bundle_config import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    bundle_file,
    is_bundle,
    parse_config,
    read_config,
)
from fgvc.errors import CheckpointError, FgvcError
from fgvc.models import FGVCNet, NetSpec, build_model
from fgvc.models.pretrained import PretrainedFile
from fgvc.models.trunks import parse_imagenet
from fgvc.runs import read_fit_checkpoint, resolve_checkpoint, run_of_checkpoint

#: The suffix of the checkpoints ``fgvc fit`` writes (only these are read for their record).
CHECKPOINT_SUFFIX = ".ckpt"

#: Class names shown when a run's classifier is for other classes.
_SHOWN = 2


def build_network(
    spec: NetSpec, pretrained: str | os.PathLike | None, class_names: list[str] | None = None
) -> FGVCNet:
    """:func:`fgvc.models.build_model` with ``pretrained`` resolved (:func:`resolve_pretrained`).

    A classifier loaded whole for as many classes as the run had, but other ones (its class
    names differ from ``class_names``), is freshly initialized with one log line: its rows
    would score the run's classes under the new labels.
    """
    source = resolve_pretrained(pretrained)
    net = build_model(spec, pretrained=source)
    if isinstance(source, PretrainedFile) and class_names is not None:
        _fresh_classifier_for_other_classes(net, source, list(class_names))
    return net


def _fresh_classifier_for_other_classes(
    net: FGVCNet, source: PretrainedFile, class_names: list[str]
) -> None:
    recorded = list(source.class_names or ())
    record = net.pretrained_record
    if getattr(record, "loaded", None) == "trunk" or len(recorded) != len(class_names):
        return  # the classifier is fresh already
    other = [(old, new) for old, new in zip(recorded, class_names, strict=True) if old != new]
    if not other:
        return
    net.classifier.reset_parameters()
    net.pretrained_record = dataclasses.replace(record, loaded="all but the classifier")
    shown = ", ".join(f"{old!r} -> {new!r}" for old, new in other[:_SHOWN])
    more = f" and {len(other) - _SHOWN} more" if len(other) > _SHOWN else ""
    rank_zero_warn(
        f"{source.path}: its classifier is for other classes ({len(other)} of "
        f"{len(class_names)} class names differ: {shown}{more}): classifier freshly "
        f"initialized, all other weights loaded"
    )


def resolve_pretrained(
    source: str | os.PathLike | None,
) -> str | os.PathLike | PretrainedFile | None:
    """What :func:`fgvc.models.build_model` gets for ``pretrained: source``.

    Returns:
        A :class:`~fgvc.models.pretrained.PretrainedFile` for a run folder, an export bundle,
        a bundle's weights file or a checkpoint of ``fgvc fit``; ``source`` itself otherwise.

    Raises:
        CheckpointError: a run folder without a checkpoint to take (or several and none
            named best), an incomplete or unreadable bundle.
    """
    if source is None or parse_imagenet(source)[0] or str(source) == "isqrt-imagenet":
        return source
    try:
        resolved = _resolve(Path(source).expanduser(), source)
    except FgvcError as err:
        raise CheckpointError(f"model.pretrained {source}: {err}") from err
    if isinstance(resolved, PretrainedFile):  # which file, on the console of fgvc fit
        rank_zero_info(
            f"model.pretrained: {resolved.path}, {resolved.found} ({resolved.spec.describe()})"
        )
    return resolved


def _resolve(path: Path, source: str | os.PathLike) -> str | os.PathLike | PretrainedFile | None:
    if is_bundle(path):
        return _bundle_weights(path, source)
    if path.is_dir():
        return _run_checkpoint(path, source)
    if path.is_file() and is_bundle(path.parent):
        config = read_config(path.parent)
        if path.name == bundle_file(path.parent, config, "weights", WEIGHTS_FILE).name:
            return _bundle_weights(path.parent, source, config)
    if path.is_file() and path.suffix == CHECKPOINT_SUFFIX:
        try:
            ckpt = read_fit_checkpoint(path)
        except CheckpointError:  # not one of fgvc fit's: read as any other file is
            return source
        return PretrainedFile(
            path,
            ckpt.spec,
            "checkpoint",
            found="a checkpoint of fgvc fit",
            class_names=tuple(ckpt.class_names),
        )
    return source


def _bundle_weights(
    folder: Path, given: str | os.PathLike, config: dict | None = None
) -> PretrainedFile:
    config = read_config(folder) if config is None else config
    spec, names, _ = parse_config(config, folder / CONFIG_FILE)
    weights = bundle_file(folder, config, "weights", WEIGHTS_FILE)
    if not weights.is_file():
        raise CheckpointError(
            f"the export bundle {folder} has no weights file {weights.name}; export the run "
            f"again (fgvc export <run folder>) or give its run folder"
        )
    given = None if Path(given).expanduser().name == weights.name else str(given)
    found = f"the weights of the export bundle {folder}"
    return PretrainedFile(weights, spec, "export", given, found, tuple(names))


def _run_checkpoint(folder: Path, given: str | os.PathLike) -> PretrainedFile:
    ckpt = resolve_checkpoint(folder)
    fit = read_fit_checkpoint(ckpt)
    run = run_of_checkpoint(ckpt) or ckpt.parent
    found = f"the best checkpoint of the run folder {run}, as fgvc export picks it"
    return PretrainedFile(ckpt, fit.spec, "run", str(given), found, tuple(fit.class_names))
