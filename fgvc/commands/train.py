"""``fgvc fit|validate|test``: the LightningCLI (:mod:`fgvc.train.cli`), then what a run ends
with - after ``fit``, the best checkpoint exported into the run folder (and logged to W&B),
Grad-CAM of validation images and a summary of where everything is
(:func:`fgvc.deploy.finish.finish_fit`, which a notebook calls the same way)."""

from __future__ import annotations

import signal
import sys

from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from fgvc.commands.runner import report, run
from fgvc.errors import UsageError
from fgvc.train.cli import build_cli
from fgvc.train.loggers import finish_wandb


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
                where = "this step" if getattr(stop, "saved", False) else "the last completed epoch"
                resume = f"; continue from {where} with the same command and --ckpt_path last"
                report(prog, f"{stop or 'stopped by SIGTERM'}{resume if 'fit' in prog else ''}")
            return code
        except BaseException:
            # any failure (a diverged fit, a peer gone): the W&B run is closed as failed, so
            # that a resumed or restarted run can continue it (an open one counts as in use)
            _finish_open_wandb_run(1)
            raise
        summary = ""
        if cli.subcommand == "fit":
            from fgvc.deploy.finish import finish_fit  # export, Grad-CAM, summary

            summary = finish_fit(cli.trainer).summary
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
