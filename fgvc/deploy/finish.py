"""What a fit ends with, for ``fgvc fit`` and for a ``Trainer.fit`` in a notebook alike: the
best checkpoint exported into ``<run>/export`` (and logged to W&B), Grad-CAM of validation
images from that export in ``<run>/explain`` (and a W&B panel), and a summary of where
everything is.

    trainer.fit(model, datamodule=data)
    outputs = finish_fit(trainer)          # or callbacks=[..., FinishFit()]
    print(outputs.summary)
    fgvc.load(outputs.export).predict(...)

Each step runs on rank 0 (every rank must call :func:`finish_fit`: finding the run folder is
a collective under DDP); a failed export or Grad-CAM is reported on one line and leaves the
checkpoints as they are.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from fgvc.deploy.publish import replaced_folder
from fgvc.errors import FgvcError, one_line
from fgvc.runs import EXPLAIN, EXPORT
from fgvc.train.callbacks import best_checkpoint
from fgvc.train.loggers import active_wandb_loggers

#: How many classes get an explained validation image, before the most-confused pairs.
EXPLAINED_CLASSES = 8
#: How many of the most-confused pairs get an image explained as both classes.
EXPLAINED_PAIRS = 2


@dataclasses.dataclass(frozen=True)
class FitOutputs:
    """Where a finished fit's results are, as absolute paths (None: not made, or not on
    rank 0).

    Attributes:
        run_dir: the run folder (``trainer.log_dir``).
        best_checkpoint, best_score: the best checkpoint on ``val/top1`` and its score.
        last_checkpoint: ``last.ckpt``, the resume point.
        export: the best checkpoint's bundle (``<run>/export``).
        explain: Grad-CAM of validation images from that bundle (``<run>/explain``).
        summary: all of the above in a few lines (empty on other ranks than 0).
    """

    run_dir: Path | None = None
    best_checkpoint: Path | None = None
    best_score: float | None = None
    last_checkpoint: Path | None = None
    export: Path | None = None
    explain: Path | None = None
    summary: str = ""


def finish_fit(
    trainer: pl.Trainer, export: bool = True, explain: bool = True, prog: str = "fgvc fit"
) -> FitOutputs:
    """Export the best checkpoint, explain validation images with it and summarize the run,
    after ``trainer.fit`` returned (call it on every rank).

    Args:
        trainer: a trainer whose ``fit`` has finished, with the ``val/top1``
            ModelCheckpoint of :func:`fgvc.train.resume.checkpoint_callbacks` and a
            logger that gives it a run folder (e.g. :class:`fgvc.train.loggers.CSVLogger`).
        export: export the best checkpoint (and then explain validation images from it).
        explain: Grad-CAM of validation images (needs ``export``; the images: see
            :func:`explain_best`).
        prog: the name warnings start with.
    """
    log_dir = trainer.log_dir  # every rank: a collective under DDP
    bundle = export_best(trainer, log_dir, prog) if export else None
    explained = explain_best(trainer, bundle, log_dir, prog) if explain else None
    if not trainer.is_global_zero:
        return FitOutputs()
    best = best_callback(trainer)
    score = best.best_model_score if best is not None else None
    last = _last_callback(trainer)
    return FitOutputs(
        run_dir=_absolute(log_dir),
        best_checkpoint=_absolute(best.best_model_path if best else None),
        best_score=float(score) if score is not None else None,
        last_checkpoint=_absolute(last.best_model_path if last else None),
        export=_absolute(bundle),
        explain=_absolute(explained),
        summary=fit_summary(trainer, log_dir, bundle, explained),
    )


def _absolute(path: str | Path | None) -> Path | None:
    """Absolute: a notebook may change its working folder after the fit."""
    return Path(path).absolute() if path else None


class FinishFit(pl.Callback):
    """:func:`finish_fit` at the end of every ``Trainer.fit``, its summary printed (rank 0)
    and kept in :attr:`outputs`: what ``fgvc fit`` ends with, for a trainer built in Python.

    Args:
        export, explain: see :func:`finish_fit`.
        print_summary: print :attr:`FitOutputs.summary` when done.
    """

    def __init__(self, export: bool = True, explain: bool = True, print_summary: bool = True):
        self.export, self.explain, self.print_summary = export, explain, print_summary
        self.outputs: FitOutputs | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.outputs = finish_fit(trainer, self.export, self.explain)
        if self.print_summary and self.outputs.summary:
            print(self.outputs.summary, flush=True)


def best_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    """The run's best-checkpoint callback, on ``model.monitor`` (a config may add others)."""
    return best_checkpoint(trainer)


def _last_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    return next((c for c in trainer.checkpoint_callbacks if c.monitor is None), None)


def export_best(trainer: pl.Trainer, log_dir: str | None, prog: str = "fgvc fit") -> Path | None:
    """Export the best checkpoint into ``<run>/export`` and log the bundle to W&B (rank 0);
    a resumed run's export replaces the folder whole once it is complete. A failure is
    reported and leaves the checkpoint and any earlier export as they are."""
    from fgvc.deploy.export import export_checkpoint

    callback = best_callback(trainer)
    best = callback.best_model_path if callback is not None else ""
    if not trainer.is_global_zero or not best or not log_dir:
        return None
    bundle = Path(log_dir, EXPORT)
    try:
        with replaced_folder(bundle) as new:
            export_checkpoint(best, new)
    except (FgvcError, ValueError, OSError) as err:
        print(
            f"{prog}: warning: export of {best} failed ({one_line(err)}); the checkpoint is "
            f"intact - retry with fgvc export --model {best}",
            flush=True,
        )
        return None
    for logger in active_wandb_loggers(trainer):
        logger.log_file_artifact(bundle, "export", ["best"])
    return bundle


def validation_images(trainer: pl.Trainer) -> tuple[list[str], list[int | None]]:
    """What :func:`explain_best` explains: the first validation image of each of the first
    :data:`EXPLAINED_CLASSES` classes (as its predicted class), and for the
    :data:`EXPLAINED_PAIRS` most-confused pairs an image of the true class explained as
    itself and as the class it was taken for. Returns ``(images, target classes)``."""
    from fgvc.train.reports import EvalReports

    val_set = getattr(trainer.datamodule, "val_set", None)
    if val_set is None or getattr(val_set, "stores_files", True) is False:
        return [], []  # no image files to explain (a shard split holds their bytes)
    first: dict[int, str] = {}
    for path, label in val_set.samples:
        first.setdefault(label, path)
    images: list[str] = [first[c] for c in sorted(first)[:EXPLAINED_CLASSES]]
    targets: list[int | None] = [None] * len(images)
    reports = next((c for c in trainer.callbacks if isinstance(c, EvalReports)), None)
    for true, predicted, _ in (reports.pairs.get("val", []) if reports else [])[:EXPLAINED_PAIRS]:
        if true in first:
            images += [first[true], first[true]]
            targets += [true, predicted]
    return images, targets


def explain_best(
    trainer: pl.Trainer, bundle: Path | None, log_dir: str | None, prog: str = "fgvc fit"
) -> Path | None:
    """Grad-CAM of the exported network on :func:`validation_images` into
    ``<run>/explain``, logged to W&B as an image panel (rank 0). A failure is reported and
    changes nothing else."""
    from fgvc.deploy.overlays import explain_bundle

    if not trainer.is_global_zero or bundle is None or not log_dir:
        return None
    images, targets = validation_images(trainer)
    if not images:
        return None
    out = Path(log_dir, EXPLAIN)
    try:
        with replaced_folder(out) as new:
            outputs = explain_bundle(bundle, images, new, target=targets)
    except (FgvcError, ValueError, OSError, RuntimeError) as err:
        # an earlier run's explanations would pass for those of this export
        shutil.rmtree(out, ignore_errors=True)
        print(f"{prog}: warning: Grad-CAM of the validation images failed ({one_line(err)})")
        return None
    outputs = dataclasses.replace(
        outputs,
        folder=out,
        overlays=[out / p.name for p in outputs.overlays],
        contact_sheet=out / outputs.contact_sheet.name,
        summary=out / outputs.summary.name,
    )
    for logger in active_wandb_loggers(trainer):
        import wandb

        panel = [
            wandb.Image(str(path), caption=explanation.caption)
            for path, explanation in zip(outputs.overlays, outputs.explanations)
        ]
        logger.experiment.log(
            {"val/explain": panel, "val/explain_sheet": wandb.Image(str(outputs.contact_sheet))}
        )
    return outputs.folder


def fit_summary(
    trainer: pl.Trainer, log_dir: str | None, export_dir: Path | None, explain_dir: Path | None
) -> str:
    """Where the run's results are (printed last, rank 0)."""
    if not trainer.is_global_zero:
        return ""
    ckpt = best_callback(trainer)
    lines = ["", "fgvc fit finished"]
    if ckpt is not None and ckpt.best_model_score is not None:
        lines.append(f"  best {ckpt.monitor}: {float(ckpt.best_model_score):.4f}")
        lines.append(f"  best checkpoint: {ckpt.best_model_path}")
    last = _last_callback(trainer)
    if last is not None and last.best_model_path:
        lines.append(f"  last checkpoint: {last.best_model_path}")
    if export_dir is not None:
        lines.append(f"  export (safetensors, ONNX, model.json): {export_dir}")
    if explain_dir is not None:
        lines.append(f"  Grad-CAM of validation images: {explain_dir}")
    if log_dir:
        lines.append(f"  run folder (config, metrics, per-class CSV): {log_dir}")
    for logger in active_wandb_loggers(trainer):
        where = logger.run_dir()
        lines.append(f"  W&B run: {where} ({logger.wandb_mode}: {logger.mode_reason})")
        if logger.wandb_mode == "offline":
            lines.append(f"  upload it with: wandb sync {where}")
    return "\n".join(lines)
