"""``fgvc fit|validate|test``: the LightningCLI (:mod:`fgvc.train.cli`), then what a run ends
with - after ``fit``, the best checkpoint exported into the run folder (and logged to W&B)
and a summary of where everything is."""

from __future__ import annotations

import signal
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from fgvc.commands.runner import report, run
from fgvc.errors import ExportError, FgvcError, one_line
from fgvc.runs import MONITOR, new_export_dir
from fgvc.train.cli import build_cli
from fgvc.train.loggers import active_wandb_loggers, finish_wandb


def export_best(trainer: pl.Trainer, log_dir: str | None) -> Path | None:
    """Export the best checkpoint into ``<run>/export`` and log the bundle to W&B (rank 0);
    a failure is reported and leaves the checkpoint as it is."""
    from fgvc.deploy.export import export_checkpoint

    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    if not trainer.is_global_zero or not best or not log_dir:
        return None
    try:
        bundle = export_checkpoint(best, new_export_dir(log_dir))
    except (FgvcError, ValueError, OSError) as err:
        kind = "verification" if isinstance(err, ExportError) else "export"
        print(
            f"fgvc fit: warning: {kind} of {best} failed ({one_line(err)}); the checkpoint "
            f"is intact - retry with fgvc export --ckpt {best}",
            flush=True,
        )
        return None
    for logger in active_wandb_loggers(trainer):
        logger.log_file_artifact(bundle, "export", ["best"])
    return bundle


def fit_summary(trainer: pl.Trainer, log_dir: str | None, export_dir: Path | None) -> str:
    """Where the run's results are (printed last, rank 0)."""
    if not trainer.is_global_zero:
        return ""
    ckpt = next((c for c in trainer.checkpoint_callbacks if c.monitor == MONITOR), None)
    lines = ["", "fgvc fit finished"]
    if ckpt is not None and ckpt.best_model_score is not None:
        lines.append(f"  best {MONITOR}: {float(ckpt.best_model_score):.4f}")
        lines.append(f"  best checkpoint: {ckpt.best_model_path}")
    last = next((c for c in trainer.checkpoint_callbacks if c.monitor is None), None)
    if last is not None and last.best_model_path:
        lines.append(f"  last checkpoint: {last.best_model_path}")
    if export_dir is not None:
        lines.append(f"  export (safetensors, ONNX, model.json): {export_dir}")
    if log_dir:
        lines.append(f"  run folder (config, metrics, per-class CSV): {log_dir}")
    for logger in active_wandb_loggers(trainer):
        where = logger.run_dir()
        hint = f" (offline; upload with: wandb sync {where})"
        lines.append(f"  W&B run: {where}{hint if logger.wandb_mode == 'offline' else ''}")
    return "\n".join(lines)


def main(argv: list[str] | None) -> int:
    """``fgvc fit|validate|test ...`` (``argv`` None: read ``sys.argv``, as the console
    script does); returns the exit code."""

    def body() -> int:
        try:
            cli = build_cli(argv)
        except SIGTERMException as stop:
            signame = getattr(stop, "signame", "SIGTERM")
            if rank_zero_only.rank == 0:
                report(
                    "fgvc fit",
                    f"{stop or 'stopped by SIGTERM'}; continue from the last completed epoch "
                    f"with the same command and --ckpt_path last",
                )
            return 128 + getattr(signal, signame, signal.SIGTERM)
        summary = ""
        if cli.subcommand == "fit":
            log_dir = cli.trainer.log_dir  # every rank: a collective under DDP
            summary = fit_summary(cli.trainer, log_dir, export_best(cli.trainer, log_dir))
        finish_wandb(cli.trainer)  # first, so that its own report does not bury the summary
        if summary:
            print(summary, flush=True)
        return 0

    return run(f"fgvc {_subcommand(argv)}", body)


def _subcommand(argv: list[str] | None) -> str:
    import sys

    words = sys.argv[1:] if argv is None else argv
    return next((w for w in words if w in ("fit", "validate", "test")), "fit")
