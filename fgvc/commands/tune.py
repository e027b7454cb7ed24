"""``fgvc tune --config ... [overrides] [--min_lr ...]``: a learning rate for a config.

Runs Lightning's learning-rate finder (and on a GPU its batch-size finder) on the config's
model and training split (:mod:`fgvc.train.tune`), then prints the ``model.lr`` to put in the
config - for its ``model.lr_batch_size`` - and the ``fgvc fit`` command that uses it.
"""

from __future__ import annotations

import shlex
import sys

from fgvc.commands.runner import run
from fgvc.commands.train import check_config_files

PROG = "fgvc tune"


def main(argv: list[str]) -> int:
    """``fgvc tune`` with ``argv`` (the words after ``tune``); returns the exit code."""

    def body() -> int:
        check_config_files(argv)
        from fgvc.train.loggers import finish_wandb
        from fgvc.train.tune import build_tune_cli

        try:
            cli = build_tune_cli(["tune", *argv])
        except BaseException:
            _finish_open_wandb_run(1)  # closed as failed, complete on disk
            raise
        finish_wandb(cli.trainer)
        result = cli.trainer.tune_result
        if result is not None:
            print(summary(result, argv), flush=True)
        return 0

    return run(PROG, body)


def fit_command(argv: list[str], model_lr: str) -> str:
    """``fgvc fit`` with ``argv`` less the search's own options, ``--model.lr`` set."""
    from fgvc.train.tune import TUNE_OPTIONS

    own = {f"--{name}" for name in TUNE_OPTIONS} | {"--model.lr"}
    kept: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
            continue
        flag = word.split("=", 1)[0]
        if flag in own:
            skip = "=" not in word
            continue
        kept.append(word)
    return shlex.join(["fgvc", "fit", *kept, "--model.lr", model_lr])


def summary(result: object, argv: list[str]) -> str:
    """What ``fgvc tune`` prints last: the suggestion, how to use it, where the files are."""
    from fgvc.train.tune import PLOT, SUMMARY, TABLE, TuneResult

    assert isinstance(result, TuneResult)
    s, batch = result.search, result.batch
    mults = ", ".join(f"{k} x{v:g}" for k, v in s.multipliers.items())
    how = "model.lr_scaling: none" if s.rule == "none" else f"{s.rule} scaling"
    lr = f"{s.model_lr:.4g}"
    lines = ["", "fgvc tune finished", *(f"  note: {n}" for n in result.notes)]
    lines += [
        f"  searched: base rates {s.min_lr:g} .. {s.max_lr:g} ({s.mode}), {len(s.lrs)} of "
        f"{s.num_training} steps{' (stopped: the loss diverged)' if s.stopped_early else ''}, "
        f"global batch {s.global_batch}, each part at its multiplier ({mults})",
        f"  steepest descent of the loss at base rate {s.found:.4g} (global batch "
        f"{s.global_batch})",
        f"  suggested model.lr: {lr} for model.lr_batch_size {s.lr_batch_size}",
        f"    ({how} for {s.optimizer}: a run at global batch {s.global_batch} turns "
        f"model.lr {lr} into the found {s.found:.4g}; at other batches it scales it the same way)",
        f"  use it: {fit_command(argv, lr)}",
    ]
    if batch.found is not None:
        lines.append(
            f"  batch-size finder: {batch.found} images per device fit (configured "
            f"{batch.configured}); the search ran at {batch.used}"
            + (f" ({batch.reason})" if batch.reason else "")
            + f"; to use it: --data.init_args.batch_size {batch.found} (model.lr stays: "
            f"lr_scaling follows the batch)"
        )
    else:
        lines.append(f"  batch-size finder: {batch.reason}")
    lines.append(f"  plot: {result.folder / PLOT}")
    lines.append(f"  data: {result.folder / TABLE}, {result.folder / SUMMARY}")
    for where, mode, why in result.wandb_runs:
        lines.append(f"  W&B run: {where} ({mode}: {why})")
        if mode == "offline":
            lines.append(f"  upload it with: wandb sync {where}")
    return "\n".join(lines)


def _finish_open_wandb_run(exit_code: int) -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.run.finish(exit_code=exit_code)
