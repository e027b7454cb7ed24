"""The run's loggers: a CSV logger that claims its run folder atomically and keeps a resumed
run's history, and W&B logging that works with no account and no network."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
from fsspec.implementations.local import LocalFileSystem
from pytorch_lightning.loggers import CSVLogger as _CSVLogger
from pytorch_lightning.loggers import WandbLogger as _WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from fgvc.errors import ConfigError
from fgvc.train.wandb_mode import resolve_wandb_mode
from fgvc.utils.atomic import atomic_file


def _make_dir(path: str | os.PathLike, what: str) -> None:
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"{what} {path}: cannot create it ({err.strerror or err}); choose a writable folder"
        ) from err


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that it keeps an existing ``metrics.csv`` (a resumed
    run appends to its own history instead of deleting it) and replaces the file whole on
    every save (Lightning appends, or truncates it to rewrite the header: a kill or a full
    disk then leaves a cut row or an empty file)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = list(csv.DictReader(file).fieldnames or [])

    def save(self) -> None:
        if not self.metrics or not isinstance(self._fs, LocalFileSystem):
            super().save()
            return
        self._record_new_keys()
        rows = _read_rows(Path(self.metrics_file_path))[1] + self.metrics
        _write_rows(Path(self.metrics_file_path), self.metrics_keys, rows)
        self.metrics = []


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a CSV file ([] and [] when there is none)."""
    if not path.is_file():
        return [], []
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def _write_rows(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    with atomic_file(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


class CSVLogger(_CSVLogger):
    """Lightning's ``CSVLogger`` for fgvc's run folders.

    * A new run claims ``version_<n>`` by creating it (``mkdir`` fails if another run got
      there first), so runs started together get distinct folders.
    * A resumed run (``version`` given) keeps its ``metrics.csv``; :meth:`drop_from`
      removes the rows of the epochs it is about to train again.
    """

    def __init__(self, save_dir: str = "runs", name: str = "lightning_logs", **kwargs: Any) -> None:
        super().__init__(save_dir, name=name, **kwargs)

    def _get_next_version(self) -> int:
        first = super()._get_next_version()
        if rank_zero_only.rank != 0:  # only the first process creates; the others are told
            return first
        root = Path(self.root_dir)
        _make_dir(root, "the CSV logger's folder")
        for version in range(first, first + 10_000):
            try:
                (root / f"version_{version}").mkdir()
            except FileExistsError:
                continue
            except OSError as err:
                raise ConfigError(
                    f"cannot create a run folder in {root} ({err.strerror or err}); choose a "
                    f"writable trainer.logger save_dir"
                ) from err
            return version
        raise ConfigError(f"{root}: no free version_<n> folder")

    @property
    def experiment(self) -> ExperimentWriter:  # type: ignore[override]
        if self._experiment is None and rank_zero_only.rank == 0:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return super().experiment

    @rank_zero_only
    def drop_from(self, epoch: int, step: int) -> None:
        """Remove from ``metrics.csv`` the rows of ``epoch`` and later, and rows logged at
        ``step`` or later (learning-rate rows carry no epoch), before a resumed run trains
        them again: each epoch is then there once."""
        self.save()
        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        if not path.is_file():
            return
        fields, rows = _read_rows(path)

        def done(row: dict[str, str]) -> bool:
            later_epoch = bool(row.get("epoch")) and float(row["epoch"]) >= epoch
            later_step = bool(row.get("step")) and float(row["step"]) >= step
            return not (later_epoch or later_step)

        kept = [row for row in rows if done(row)]
        if len(kept) != len(rows):
            _write_rows(path, fields, kept)


class WandbLogger(_WandbLogger):
    """Lightning's ``WandbLogger`` with ``mode="auto"``: offline without key or network.

    The API key is never passed through here: wandb reads it from ``WANDB_API_KEY`` or
    ``~/.netrc`` itself, so it cannot end up in a saved config.

    Args:
        mode: ``auto`` (default: see :mod:`fgvc.train.wandb_mode`), ``online``, ``offline``
            or ``disabled``.
        id, resume: continue the W&B run ``id`` (``fit --ckpt_path last`` sets them from the
            run folder's ``wandb_run_id``).
        name, project, save_dir, log_model, **kwargs: as Lightning's ``WandbLogger``;
            ``log_model`` (True or "all", alike here) logs the best checkpoint at the end of
            training as a ``model`` artifact with the aliases ``best`` and ``latest``.
    """

    def __init__(
        self,
        name: str | None = None,
        project: str = "fgvc",
        save_dir: str = "runs",
        mode: str = "auto",
        log_model: bool | Literal["all"] = True,
        id: str | None = None,  # noqa: A002 - wandb's name
        resume: Literal["allow", "must", "never"] | None = None,
        **kwargs: Any,
    ) -> None:
        chosen = resolve_wandb_mode(mode)
        resolved = chosen.mode
        _make_dir(save_dir, "the W&B logger's save_dir")
        # wandb's warnings and errors, not its banner and end-of-run tables: fgvc says where
        # the run is (below, and at the end of fit); WANDB_QUIET / WANDB_SHOW_INFO or a
        # settings argument say otherwise
        self._quiet = _quiet_settings(kwargs.get("settings"))
        # Lightning refuses log_model when offline; the best checkpoint is logged here
        # instead (offline artifacts upload with `wandb sync`).
        super().__init__(
            name=name,
            project=project,
            save_dir=save_dir,
            offline=resolved == "offline",
            log_model=False,
            mode=resolved,
            id=id,
            **({"resume": resume} if resume else {}),
            **kwargs,
        )
        # Lightning passes anonymous=None, which this wandb warns is deprecated
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
        self.wandb_mode = resolved
        self.mode_reason = chosen.reason
        self.upload_best = bool(log_model)
        self._checkpoint_callback: Any = None

    @property
    def experiment(self) -> Any:
        fresh = self._experiment is None
        if fresh and self._quiet and rank_zero_only.rank == 0:
            import wandb

            if self._offline:  # what Lightning sets next; wandb warns of a change after setup
                os.environ["WANDB_MODE"] = "dryrun"
            wandb.setup(settings=wandb.Settings(**self._quiet))  # wandb's printing is global
        run = super().experiment
        if fresh and self._experiment is not None and self.wandb_mode != "disabled":
            where = getattr(run, "url", None) if self.wandb_mode == "online" else self.run_dir()
            rank_zero_info(f"W&B run {run.name} ({self.wandb_mode}: {self.mode_reason}): {where}")
        return run

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if getattr(checkpoint_callback, "monitor", None):  # the best one, not last.ckpt
            self._checkpoint_callback = checkpoint_callback

    def log_file_artifact(
        self, path: str | os.PathLike, kind: str, aliases: list[str], metadata: dict | None = None
    ) -> None:
        """Log one file (or folder) as a W&B artifact of this run."""
        import wandb

        path = Path(path)
        artifact = wandb.Artifact(
            name=f"{kind}-{self.experiment.id}", type=kind, metadata=metadata or {}
        )
        if path.is_dir():
            artifact.add_dir(str(path))
        else:
            artifact.add_file(str(path))
        self.experiment.log_artifact(artifact, aliases=aliases)

    def run_dir(self) -> str | None:
        """Local folder of the W&B run (what ``wandb sync`` takes)."""
        experiment = self.experiment
        directory = getattr(experiment, "dir", None)
        return str(Path(directory).parent) if directory else None

    def finalize(self, status: str) -> None:
        callback = self._checkpoint_callback
        best = getattr(callback, "best_model_path", "") if callback else ""
        if self.upload_best and best and self._experiment is not None and Path(best).is_file():
            score = callback.best_model_score
            self.log_file_artifact(
                best,
                "model",
                ["best", "latest"],
                {callback.monitor: float(score) if score is not None else None},
            )
        super().finalize(status)
        if self.wandb_mode == "offline" and self._experiment is not None:
            run_dir = self.run_dir()
            rank_zero_info(
                f"W&B run saved offline in {run_dir}; upload it later with: wandb sync {run_dir}"
            )


def _quiet_settings(settings: Any) -> dict[str, bool]:
    """wandb's ``quiet`` and ``show_info`` off, unless the user set them (in the logger's
    ``settings`` or the environment)."""
    chosen = settings if isinstance(settings, dict) else {}
    if settings is not None and not isinstance(settings, dict):  # a wandb.Settings
        chosen = {k: True for k in ("quiet", "show_info")}
    return {
        key: value
        for key, value in {"quiet": True, "show_info": False}.items()
        if key not in chosen and f"WANDB_{key.upper()}" not in os.environ
    }


def active_wandb_loggers(trainer: pl.Trainer) -> list[WandbLogger]:
    """The trainer's fgvc W&B loggers that actually log (mode online or offline)."""
    return [
        logger
        for logger in trainer.loggers
        if isinstance(logger, WandbLogger) and logger.wandb_mode != "disabled"
    ]


def finish_wandb(trainer: pl.Trainer) -> None:
    """One command, one W&B run: close it so that everything is flushed to disk now."""
    for logger in trainer.loggers:  # disabled-mode runs too: wandb keeps them current
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger._experiment.finish()
