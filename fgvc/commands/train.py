"""``fgvc fit|validate|test``: the LightningCLI (:mod:`fgvc.train.cli`), then what a run ends
with - after ``fit``, the best checkpoint exported into the run folder (and logged to W&B)
and a summary of where everything is."""

from __future__ import annotations

import dataclasses
import shutil
import signal
import sys
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from fgvc.commands.runner import report, run
from fgvc.deploy.publish import replaced_folder
from fgvc.errors import FgvcError, UsageError, one_line
from fgvc.runs import EXPLAIN, EXPORT
from fgvc.train.callbacks import best_checkpoint
from fgvc.train.cli import build_cli
from fgvc.train.loggers import active_wandb_loggers, finish_wandb


def best_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    """The run's best-checkpoint callback, on ``model.monitor`` (a config may add others)."""
    return best_checkpoint(trainer)


def export_best(trainer: pl.Trainer, log_dir: str | None) -> Path | None:
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
            f"fgvc fit: warning: export of {best} failed ({one_line(err)}); the checkpoint is "
            f"intact - retry with fgvc export --ckpt {best}",
            flush=True,
        )
        return None
    for logger in active_wandb_loggers(trainer):
        logger.log_file_artifact(bundle, "export", ["best"])
    return bundle


def explain_best(trainer: pl.Trainer, bundle: Path | None, log_dir: str | None) -> Path | None:
    """Grad-CAM of the exported network on validation images - the first image of each of
    the first 8 classes, and for the two most-confused pairs an image of the true class
    explained as itself and as the class it was taken for - into ``<run>/explain``, logged
    to W&B as an image panel (rank 0). A failure is reported and changes nothing else."""
    from fgvc.deploy.overlays import explain_bundle
    from fgvc.train.reports import EvalReports

    val_set = getattr(trainer.datamodule, "val_set", None)
    if not trainer.is_global_zero or bundle is None or not log_dir or val_set is None:
        return None
    first: dict[int, str] = {}
    for path, label in val_set.samples:
        first.setdefault(label, path)
    images: list[str] = [first[c] for c in sorted(first)[:8]]
    targets: list[int | None] = [None] * len(images)
    reports = next((c for c in trainer.callbacks if isinstance(c, EvalReports)), None)
    for true, predicted, _ in (reports.pairs.get("val", []) if reports else [])[:2]:
        if true in first:
            images += [first[true], first[true]]
            targets += [true, predicted]
    out = Path(log_dir, EXPLAIN)
    try:
        with replaced_folder(out) as new:
            outputs = explain_bundle(bundle, images, new, target=targets)
    except (FgvcError, ValueError, OSError, RuntimeError) as err:
        # an earlier run's explanations would pass for those of this export
        shutil.rmtree(out, ignore_errors=True)
        print(f"fgvc fit: warning: Grad-CAM of the validation images failed ({one_line(err)})")
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
    last = next((c for c in trainer.checkpoint_callbacks if c.monitor is None), None)
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


def main(argv: list[str] | None) -> int:
    """``fgvc fit|validate|test ...`` (``argv`` None: read ``sys.argv``, as the console
    script does); returns the exit code."""

    prog = f"fgvc {_subcommand(argv)}"

    def body() -> int:
        check_config_files(sys.argv[1:] if argv is None else argv)
        try:
            cli = build_cli(argv)
        except SIGTERMException as stop:
            signame = getattr(stop, "signame", "SIGTERM")
            code = 128 + getattr(signal, signame, signal.SIGTERM)
            _finish_open_wandb_run(code)
            if rank_zero_only.rank == 0:
                resume = "; continue from the last completed epoch with the same command and "
                resume += "--ckpt_path last"
                report(prog, f"{stop or 'stopped by SIGTERM'}{resume if 'fit' in prog else ''}")
            return code
        except BaseException:
            # any failure (a diverged fit, a peer gone): the W&B run is closed as failed, so
            # that a resumed or restarted run can continue it (an open one counts as in use)
            _finish_open_wandb_run(1)
            raise
        summary = ""
        if cli.subcommand == "fit":
            log_dir = cli.trainer.log_dir  # every rank: a collective under DDP
            bundle = export_best(cli.trainer, log_dir)
            explained = explain_best(cli.trainer, bundle, log_dir)
            summary = fit_summary(cli.trainer, log_dir, bundle, explained)
        finish_wandb(cli.trainer)  # first, so that its own report does not bury the summary
        if summary:
            print(summary, flush=True)
        return 0

    return run(prog, body)


def check_config_files(words: list[str]) -> None:
    """Every ``--config`` / ``-c`` file must be readable UTF-8 text (YAML): jsonargparse
    would fail on anything else with a traceback."""
    for index, word in enumerate(words):
        if word in ("--config", "-c") and index + 1 < len(words):
            path = words[index + 1]
        elif word.startswith("--config="):
            path = word.split("=", 1)[1]
        else:
            continue
        try:
            with open(path, encoding="utf-8") as file:
                file.read()
        except FileNotFoundError:
            raise UsageError(f"--config {path}: no such file") from None
        except UnicodeDecodeError:
            raise UsageError(f"--config {path}: not a text (YAML) file; give a config") from None
        except OSError as err:
            raise UsageError(f"--config {path}: cannot read it ({err.strerror or err})") from None


def _finish_open_wandb_run(exit_code: int) -> None:
    """Close the W&B run a stopped fit leaves open, so that it is complete on disk and
    ``--ckpt_path last`` can continue it (a run still open counts as in use)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.run.finish(exit_code=exit_code)


def _subcommand(argv: list[str] | None) -> str:
    words = sys.argv[1:] if argv is None else argv
    return next((w for w in words if w in ("fit", "validate", "test")), "fit")
