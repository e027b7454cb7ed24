"""Which run folder a command writes into (the parsed config's logger section).

* ``fit`` without ``--ckpt_path`` claims a new ``<save_dir>/<name>/version_<n>``.
* ``fit --ckpt_path last | <run folder> | <run>/checkpoints/<file>`` continues that run in
  its own folder (:func:`fgvc.runs.resume_point`), and its W&B run.
* ``test --ckpt_path <run>/checkpoints/<file>`` adds its figures to the run that trained the
  checkpoint (``validate``, for checking any checkpoint, gets a folder of its own).
* after a torchrun restart, ``fit`` continues the run the first attempt started
  (:mod:`fgvc.train.elastic`).
* ``--trainer.logger false`` turns W&B off, but the run still gets its own folder (a CSV
  logger: ``<default_root_dir>/fgvc/version_<n>``), never ``runs/`` itself, which every such
  run would share.

These functions edit the parsed config before anything is instantiated, on every process
alike (they only read the file system), so every process agrees on the folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from pytorch_lightning.utilities import rank_zero_info

from fgvc.errors import ConfigError, FgvcError
from fgvc.runs import RUNS_ROOT, WANDB_ID, resume_point, run_of_checkpoint

#: the CSV logger's ``name`` for runs configured with ``trainer.logger: false``
UNNAMED = "fgvc"
CSV_LOGGER = "fgvc.train.loggers.CSVLogger"


def loggers(trainer: Any) -> list[Any]:
    """The trainer section's loggers as a list (none for ``False`` / None)."""
    value = trainer.get("logger")
    if value is None or value is False or value is True:
        return []
    return value if isinstance(value, list) else [value]


def csv_logger(trainer: Any) -> Any | None:
    """The first CSV logger of the trainer section (it names the run folder), or None."""
    return next(
        (lg for lg in loggers(trainer) if str(getattr(lg, "class_path", "")).endswith("CSVLogger")),
        None,
    )


def give_run_a_folder(config: Any) -> None:
    """``trainer.logger: false``: a CSV logger of its own, so that checkpoints, config and
    exports go into ``<default_root_dir>/fgvc/version_<n>`` and not into ``runs/``."""
    if config.trainer.get("logger") is not False:
        return
    save_dir = config.trainer.get("default_root_dir") or RUNS_ROOT
    config.trainer.logger = [
        Namespace(class_path=CSV_LOGGER, init_args=Namespace(save_dir=str(save_dir), name=UNNAMED))
    ]


def continue_run(config: Any, subcommand: str) -> None:
    """Point ``config`` at the run its ``--ckpt_path`` belongs to (see the module doc)."""
    csv = csv_logger(config.trainer)
    if subcommand == "fit":
        if csv is None and config.ckpt_path == "last":
            raise ConfigError(
                "--ckpt_path last needs a CSVLogger in trainer.logger to find the run folder; "
                "pass the run folder or checkpoint instead"
            )
        args = csv.init_args if csv is not None else Namespace(save_dir=RUNS_ROOT, name=UNNAMED)
        try:
            ckpt, run = resume_point(config.ckpt_path, args.save_dir, args.name)
        except FgvcError as err:
            raise ConfigError(str(err)) from err
        config.ckpt_path = str(ckpt)
    elif subcommand == "test":
        run = run_of_checkpoint(config.ckpt_path) if Path(config.ckpt_path).is_file() else None
    else:  # validate: figures of any checkpoint, in a folder of their own
        return
    if run is None or csv is None or not _is_version_folder(run):
        if subcommand == "fit":
            rank_zero_info(f"resuming {config.ckpt_path} in a new run folder")
        return
    csv.init_args.save_dir = str(run.parent.parent)
    csv.init_args.name = run.parent.name
    csv.init_args.version = int(run.name.split("_", 1)[1])
    wandb_id = run / WANDB_ID
    if wandb_id.is_file():  # continue the same W&B run, not a new unrelated one
        for logger in loggers(config.trainer):
            if str(getattr(logger, "class_path", "")).endswith("WandbLogger"):
                logger.init_args.id = wandb_id.read_text().strip()
                logger.init_args.resume = "allow"
    what = f"resuming {config.ckpt_path}" if subcommand == "fit" else f"{subcommand} results"
    rank_zero_info(f"{what} in the run folder {run}")


def continue_after_restart(config: Any) -> None:
    """Under a torchrun restart (``--max-restarts``), ``fit`` without ``--ckpt_path``
    continues the run the first attempt started, from its ``last.ckpt``."""
    from fgvc.train.elastic import restart_count, restart_resume_point

    csv = csv_logger(config.trainer)
    if restart_count() == 0 or csv is None:
        return
    found = restart_resume_point(csv.init_args.save_dir, csv.init_args.name)
    if found is None:
        rank_zero_info(
            f"torchrun restart {restart_count()}: the run of the first attempt saved no "
            f"last.ckpt; starting afresh"
        )
        return
    config.ckpt_path = str(found[1])
    rank_zero_info(f"torchrun restart {restart_count()}: continuing {found[1]}")
    continue_run(config, "fit")


def _is_version_folder(run: Path) -> bool:
    prefix, _, number = run.name.partition("_")
    return prefix == "version" and number.isdigit()
