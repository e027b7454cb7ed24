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
head: the trunk alone). ``imagenet``, ``isqrt-imagenet`` and other files pass unchanged.

Resolution happens here, where ``pretrained`` is consumed, because run folders and bundles
are known above :mod:`fgvc.models`, which must not import them.
"""

from __future__ import annotations

import os
from pathlib import Path

from pytorch_lightning.utilities import rank_zero_info

from fgvc.bundle_config import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    bundle_file,
    is_bundle,
    parse_config,
    read_config,
)
from fgvc.errors import CheckpointError, FgvcError
from fgvc.models.pretrained import PretrainedFile
from fgvc.models.trunks import parse_imagenet
from fgvc.runs import read_fit_checkpoint, resolve_checkpoint, run_of_checkpoint

#: The suffix of the checkpoints ``fgvc fit`` writes (only these are read for their record).
CHECKPOINT_SUFFIX = ".ckpt"


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
        return PretrainedFile(path, ckpt.spec, "checkpoint", found="a checkpoint of fgvc fit")
    return source


def _bundle_weights(
    folder: Path, given: str | os.PathLike, config: dict | None = None
) -> PretrainedFile:
    config = read_config(folder) if config is None else config
    spec, _, _ = parse_config(config, folder / CONFIG_FILE)
    weights = bundle_file(folder, config, "weights", WEIGHTS_FILE)
    if not weights.is_file():
        raise CheckpointError(
            f"the export bundle {folder} has no weights file {weights.name}; export the run "
            f"again (fgvc export <run folder>) or give its run folder"
        )
    given = None if Path(given).expanduser().name == weights.name else str(given)
    return PretrainedFile(
        weights, spec, "export", given=given, found=f"the weights of the export bundle {folder}"
    )


def _run_checkpoint(folder: Path, given: str | os.PathLike) -> PretrainedFile:
    ckpt = resolve_checkpoint(folder)
    spec = read_fit_checkpoint(ckpt).spec
    run = run_of_checkpoint(ckpt) or ckpt.parent
    return PretrainedFile(
        ckpt,
        spec,
        "run",
        given=str(given),
        found=f"the best checkpoint of the run folder {run}, as fgvc export picks it",
    )
