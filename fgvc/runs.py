"""The run folder ``fgvc fit`` writes, and finding and reading what is in it.

One run, one folder (the CSVLogger's ``<save_dir>/<name>/version_<n>``, never reused)::

    runs/<name>/version_<n>/
        config.yaml                  the resolved config (config.resume-<k>.yaml per resume)
        hparams.yaml  metrics.csv
        checkpoints/best-epoch<e>-top1_<v>.ckpt    the best on val/top1
        checkpoints/last.ckpt        rewritten after every epoch (and every N steps with
                                     checkpoint_every_n_steps): the resume point
        export/                      the best checkpoint as a bundle
        explain/                     Grad-CAM of validation images from that bundle
        val_split.json  val_per_class.csv  test_per_class.csv
        wandb_run_id                 the W&B run a resumed run continues
        run.json                     the command that created the folder (fit, validate, test)

    runs/<name>/tune_<n>/            a learning-rate search (``fgvc tune``): config.yaml,
        run.json  lr_find.png  lr_find.csv  lr_find.json       never a run to resume

Every file here is written whole (:mod:`fgvc.utils.atomic`: beside its place, fsynced,
renamed): a kill or a full disk leaves the previous version, never a truncated file, and the
hidden ``.<name>.tmp-<host>-<pid>-*`` a killed write leaves is never read (not ``*.ckpt``)
and is removed by the next write in its folder. A resumed run keeps one ``export/`` and one
``explain/``: the new ones replace them whole once complete (a failed export keeps the
earlier pair; a failed Grad-CAM removes ``explain/``, which would no longer match).

:func:`read_fit_checkpoint` is the one definition of "a checkpoint of ``fgvc fit``": a
Lightning checkpoint whose hyperparameters hold a :class:`~fgvc.models.NetSpec` and whose
state dict holds the network under ``model.``; it is read with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fgvc.data.preprocessing import EvalPreprocessing
from fgvc.errors import CheckpointError, UsageError
from fgvc.models import FGVCNet, NetSpec, build_model, load_state_dict_checked
from fgvc.models.checkpoint import extract_state_dict, read_checkpoint

logger = logging.getLogger(__name__)

RUNS_ROOT = "runs"
MONITOR = "val/top1"
CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
BEST_PREFIX = "best"
EXPORT = "export"
EXPLAIN = "explain"
WANDB_ID = "wandb_run_id"
RUN_RECORD = "run.json"
TUNE_PREFIX = "tune_"


# --------------------------------------------------------------------- reading checkpoints
@dataclass(frozen=True)
class FitCheckpoint:
    """What fgvc needs from a checkpoint of ``fgvc fit``.

    Attributes:
        path: the file.
        spec: the network.
        class_names: names in label order.
        preprocessing: the DataModule's evaluation preprocessing with the run's test-time
            flip setting, or None when the DataModule did not record it.
        hparams: the LightningModule's hyperparameters.
        epoch, global_step: where training was when it was saved.
        monitor: the ModelCheckpoint state on ``val/top1`` (``monitor``, ``current_score``,
            ``best_model_score``, ``best_model_path``), if any.
        raw: the checkpoint itself (tensors memory-mapped where the format allows).
    """

    path: Path
    spec: NetSpec
    class_names: list[str]
    preprocessing: EvalPreprocessing | None
    hparams: dict[str, Any]
    epoch: int | None
    global_step: int | None
    monitor: dict[str, Any] | None
    raw: Mapping[str, Any] = dataclasses.field(repr=False)

    def build_net(self) -> FGVCNet:
        """The network with this checkpoint's weights, in eval mode on the CPU."""
        net = build_model(self.spec)
        load_state_dict_checked(net, extract_state_dict(self.raw, str(self.path)), str(self.path))
        return net.eval()

    def eval_preprocessing(
        self, image_size: int | None = None, preset: str | None = None
    ) -> EvalPreprocessing:
        """The preprocessing to replay: the recorded one with ``image_size`` / ``preset``
        overriding it (both needed where the DataModule recorded none).

        Raises:
            UsageError: nothing recorded and no override, or a bad override.
        """
        overrides = {k: v for k, v in (("image_size", image_size), ("preset", preset)) if v}
        try:
            if self.preprocessing is not None:
                return dataclasses.replace(self.preprocessing, **overrides)
            if len(overrides) == 2:
                tta = bool(self.hparams.get("test_tta", False))
                return EvalPreprocessing(tta=tta, **overrides)
        except ValueError as err:
            raise UsageError(str(err)) from err
        raise UsageError(
            f"{self.path} does not record its evaluation preprocessing (its DataModule is not "
            f"an fgvc one); give the image size and preset (fgvc export --image-size --preset)"
        )

    def score(self, key: str) -> float | None:
        """A finite number from :attr:`monitor` (``current_score``, ``best_model_score``)."""
        return _finite((self.monitor or {}).get(key))

    def own_score(self) -> float | None:
        """The monitored value of these weights: what the ModelCheckpoint recorded for this
        file among its best ones; None for any other file (``last.ckpt``, where the
        callback's ``current_score`` is that of the last best saved, not of these weights)."""
        saved = (self.monitor or {}).get("best_k_models")
        if not isinstance(saved, Mapping):
            return None
        for path, value in saved.items():
            if Path(str(path)).name == self.path.name:
                return _finite(value)
        return None


def _finite(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else None
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return float(value)
    return None


def read_fit_checkpoint(path: str | os.PathLike) -> FitCheckpoint:
    """Read a checkpoint of ``fgvc fit`` safely (``weights_only``, memory-mapped).

    Raises:
        CheckpointError: missing, truncated, unsafe (a pickle carrying code), not written by
            ``fgvc fit``, or holding hyperparameters that do not describe a network.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    raw = read_checkpoint(path, mmap=True)  # mapped: the optimizer state is never read
    hparams = raw.get("hyper_parameters")
    state = raw.get("state_dict")
    if (
        not isinstance(hparams, Mapping)
        or "arch" not in hparams
        or not isinstance(state, Mapping)
        or not any(str(k).startswith("model.") for k in state)
    ):
        raise CheckpointError(
            f"{path} is not a checkpoint of `fgvc fit` (no FGVCClassifier hyperparameters and "
            f"'model.' weights); to fine-tune from its weights use --model.pretrained {path}"
        )
    try:
        spec = NetSpec.from_mapping(hparams)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: its hyperparameters do not build a model: {err}") from err
    names = hparams.get("class_names")
    class_names = [str(n) for n in names] if names else [str(i) for i in range(spec.num_classes)]
    if len(class_names) != spec.num_classes:
        raise CheckpointError(
            f"{path}: {len(class_names)} class names for {spec.num_classes} classes"
        )
    epoch, step = raw.get("epoch"), raw.get("global_step")
    return FitCheckpoint(
        path=path,
        spec=spec,
        class_names=class_names,
        preprocessing=_preprocessing(raw, path, tta=bool(hparams.get("test_tta", False))),
        hparams=dict(hparams),
        epoch=epoch if isinstance(epoch, int) else None,
        global_step=step if isinstance(step, int) else None,
        monitor=model_checkpoint_state(raw),
        raw=raw,
    )


def _preprocessing(raw: Mapping[str, Any], path: Path, tta: bool) -> EvalPreprocessing | None:
    """The DataModule's ``state_dict`` entry (Lightning files it under the class name)."""
    for value in raw.values():
        if isinstance(value, Mapping) and isinstance(value.get("eval_preprocessing"), Mapping):
            try:
                prep = EvalPreprocessing.from_dict(value["eval_preprocessing"])
            except (ValueError, TypeError) as err:
                raise CheckpointError(f"{path}: bad eval_preprocessing ({err})") from err
            return dataclasses.replace(prep, tta=tta)
    return None


def model_checkpoint_state(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ModelCheckpoint callback state saved in a Lightning checkpoint (``val/top1`` first)."""
    callbacks = checkpoint.get("callbacks")
    if not isinstance(callbacks, Mapping):
        return None
    states = [
        s
        for k, s in callbacks.items()
        if isinstance(k, str) and k.startswith("ModelCheckpoint") and isinstance(s, Mapping)
    ]
    states.sort(key=lambda s: (s.get("monitor") != MONITOR, s.get("monitor") is None))
    return dict(states[0]) if states else None


# ------------------------------------------------------------------- finding checkpoints
def _checkpoint_files(folder: Path) -> list[Path]:
    # hidden ones are temporary: a killed write's, or a learning-rate search's .lr_find_*.ckpt
    return sorted(p for p in folder.glob("*.ckpt") if p.is_file() and not p.name.startswith("."))


def _checkpoint_dir(run: Path) -> Path:
    """``run/checkpoints`` when it exists (a run folder), else ``run`` itself."""
    sub = run / CHECKPOINTS
    return sub if sub.is_dir() else run


def find_latest_run(runs_root: str | os.PathLike = RUNS_ROOT) -> Path:
    """The run folder (``<root>/<name>/version_<n>``) whose newest checkpoint is the newest.

    Raises:
        UsageError: no checkpoint anywhere under ``runs_root``.
    """
    root = Path(runs_root).expanduser()
    newest: tuple[float, Path] | None = None
    if root.is_dir():
        for ckpt in root.rglob("*.ckpt"):
            if not ckpt.is_file() or ckpt.name.startswith("."):
                continue
            run = ckpt.parent.parent if ckpt.parent.name == CHECKPOINTS else ckpt.parent
            mtime = ckpt.stat().st_mtime
            if newest is None or mtime > newest[0]:
                newest = (mtime, run)
    if newest is None:
        raise UsageError(
            f"no checkpoint found under {root}/; train first (fgvc fit) or pass "
            f"a checkpoint file or run folder"
        )
    return newest[1]


def best_checkpoint_in_run(run: str | os.PathLike) -> Path:
    """The best checkpoint of a run folder (or of its ``checkpoints/`` folder).

    The newest checkpoint's ModelCheckpoint state names the best one (``last.ckpt`` is saved
    after it in the same epoch); if that does not resolve, a single ``best-*.ckpt`` is taken.

    Raises:
        UsageError: no checkpoint, or several candidates and nothing to choose between them.
    """
    folder = _checkpoint_dir(Path(run).expanduser())
    files = _checkpoint_files(folder)
    if not files:
        raise UsageError(f"no .ckpt file in {folder}")
    pointer = None
    for newest in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True):
        try:  # an interrupted save can leave a broken newest file: try the next one
            state = model_checkpoint_state(read_checkpoint(newest, mmap=True))
        except (CheckpointError, OSError) as err:
            logger.warning("could not read %s to find the best checkpoint: %s", newest, err)
            continue
        pointer = state.get("best_model_path") if state else None
        break
    if pointer:
        candidate = folder / Path(str(pointer)).name  # by name: the run may have moved
        if candidate.is_file():
            return candidate
    best = [p for p in files if p.name.startswith(BEST_PREFIX)]
    if len(best) == 1:
        return best[0]
    if not best and len(files) == 1:
        return files[0]
    listing = ", ".join(p.name for p in (best or files))
    raise UsageError(f"cannot tell the best checkpoint in {folder} ({listing}); name the file")


def resolve_checkpoint(
    spec: str | os.PathLike = "best",
    run: str | os.PathLike | None = None,
    runs_root: str | os.PathLike = RUNS_ROOT,
) -> Path:
    """A checkpoint file from ``spec``: a ``.ckpt`` path, a run folder, or ``"best"``.

    ``"best"``: the best checkpoint of ``run``, or of the most recent run under ``runs_root``.
    A folder without checkpoints of its own (``runs/``, ``runs/<name>``) means its most
    recent run.

    Raises:
        UsageError: nothing found (the message says where it looked).
    """
    if str(spec) == "best":
        folder = Path(run).expanduser() if run is not None else find_latest_run(runs_root)
        if not folder.is_dir():
            raise UsageError(f"run folder not found: {folder}")
        return best_checkpoint_in_run(folder)
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if not _checkpoint_files(_checkpoint_dir(path)):  # a folder of runs, like runs/
            return best_checkpoint_in_run(find_latest_run(path))
        return best_checkpoint_in_run(path)
    raise UsageError(f"checkpoint not found: {path} (give a .ckpt file, a run folder or 'best')")


def run_folders(save_dir: str | os.PathLike, name: str) -> list[Path]:
    """The run folders ``<save_dir>/<name>/version_<n>``, oldest first (by ``n``: the order
    in which runs claimed them)."""
    found = []
    for run in Path(save_dir, name).expanduser().glob("version_*"):
        version = run.name.split("_", 1)[1]
        if version.isdigit() and run.is_dir():
            found.append((int(version), run))
    return [run for _, run in sorted(found)]


def claim_tune_folder(save_dir: str | os.PathLike, name: str) -> Path:
    """Create and return a new ``<save_dir>/<name>/tune_<n>`` (``mkdir`` fails where another
    search got there first, so searches started together get distinct folders). Its name
    keeps it out of :func:`run_folders`: ``--ckpt_path last`` never resumes a search."""
    root = Path(save_dir, name).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    taken = [p.name[len(TUNE_PREFIX) :] for p in root.glob(TUNE_PREFIX + "*")]
    number = max((int(n) + 1 for n in taken if n.isdigit()), default=0)
    while True:
        try:
            (root / f"{TUNE_PREFIX}{number}").mkdir()
        except FileExistsError:
            number += 1
            continue
        return root / f"{TUNE_PREFIX}{number}"


def run_record(run: Path) -> dict[str, Any]:
    """A run folder's :data:`RUN_RECORD` (the command that created it, its launch, the
    starting weights), or ``{}`` when there is none (fgvc before 0.5, a run stopped before
    set-up) or it cannot be read."""
    try:
        record = json.loads((run / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def run_command(run: Path) -> str | None:
    """The command that created a run folder (None: not recorded)."""
    return run_record(run).get("command")


def run_of_checkpoint(ckpt: str | os.PathLike) -> Path | None:
    """The run folder holding ``<run>/checkpoints/<file>``, or None for a loose file."""
    ckpt = Path(ckpt).expanduser()
    return ckpt.parent.parent if ckpt.parent.name == CHECKPOINTS else None


def resume_point(target: str, save_dir: str | os.PathLike, name: str) -> tuple[Path, Path | None]:
    """What ``fgvc fit --ckpt_path <target>`` continues: ``(checkpoint, run folder)``.

    ``target`` is ``last`` (the newest run of ``<save_dir>/<name>`` started by ``fit``), a
    run folder (its ``checkpoints/last.ckpt``) or a checkpoint file (its run folder when it
    sits in one's ``checkpoints/``, else None).

    Raises:
        UsageError: the run meant has no ``last.ckpt`` (the message names the run and the
            alternatives), or ``target`` does not exist.
    """
    if target != "last":
        path = Path(target).expanduser()
        if path.is_dir():
            ckpt = _checkpoint_dir(path) / LAST
            if not ckpt.is_file():
                raise UsageError(
                    f"--ckpt_path {target}: no {CHECKPOINTS}/{LAST} in this run folder (it "
                    f"stopped before its first epoch ended, or is not a run folder); nothing "
                    f"to resume there"
                )
            return ckpt, path
        if not path.is_file():
            raise UsageError(
                f"--ckpt_path {target}: no such file or folder; give a checkpoint, a run "
                f"folder or last"
            )
        return path, run_of_checkpoint(path)
    root = Path(save_dir, name).expanduser()
    runs = [run for run in run_folders(save_dir, name) if run_command(run) in (None, "fit")]
    if not runs:
        raise UsageError(
            f"--ckpt_path last: no run of this config under {root}/version_*; nothing to resume"
        )
    newest = runs[-1]
    if (newest / CHECKPOINTS / LAST).is_file():
        return newest / CHECKPOINTS / LAST, newest
    earlier = [run for run in runs[:-1] if (run / CHECKPOINTS / LAST).is_file()]
    other = f", or continue an earlier run: --ckpt_path {earlier[-1]}" if earlier else ""
    raise UsageError(
        f"--ckpt_path last: the newest run of this config, {newest}, has no "
        f"{CHECKPOINTS}/{LAST} (it stopped before its first epoch ended); nothing to resume "
        f"there - start afresh without --ckpt_path{other}"
    )


def hpc_checkpoint(root_dir: str | os.PathLike) -> Path | None:
    """The checkpoint Lightning's SLURM auto-requeue would resume from: the highest
    ``hpc_ckpt_<n>.ckpt`` in the trainer's ``default_root_dir``, or None."""
    found = []
    for path in Path(root_dir).expanduser().glob("hpc_ckpt_*.ckpt"):
        number = path.stem.rsplit("_", 1)[-1]
        if number.isdigit() and path.is_file():
            found.append((int(number), path))
    return max(found)[1] if found else None


# ------------------------------------------------------------------------- export folders
def default_export_dir(ckpt: str | os.PathLike) -> Path:
    """``<run>/export`` for ``<run>/checkpoints/x.ckpt``, else ``<x>-export`` beside it."""
    ckpt = Path(ckpt)
    if ckpt.parent.name == CHECKPOINTS:
        return ckpt.parent.parent / EXPORT
    return ckpt.with_name(f"{ckpt.stem}-export")
