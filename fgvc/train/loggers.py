"""Weights & Biases logging that works on a laptop with no account and no network."""

from __future__ import annotations

import netrc
import os
import socket
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger as _WandbLogger
from pytorch_lightning.utilities import rank_zero_info

WANDB_HOST = "api.wandb.ai"


def wandb_credentials_present() -> bool:
    """An API key in the environment or in ~/.netrc (where ``wandb login`` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_reachable(timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((WANDB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_wandb_mode(mode: str) -> Literal["online", "offline", "disabled"]:
    """``auto``: online with credentials and network, else offline. ``WANDB_MODE`` wins."""
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env  # type: ignore[return-value]
    if env == "dryrun":
        return "offline"
    if mode != "auto":
        if mode not in ("online", "offline", "disabled"):
            raise ValueError(f"wandb mode must be auto, online, offline or disabled, got {mode!r}")
        return mode  # type: ignore[return-value]
    return "online" if wandb_credentials_present() and wandb_reachable() else "offline"


class WandbLogger(_WandbLogger):
    """Lightning's ``WandbLogger`` with ``mode="auto"``: offline without key or network.

    The API key is never passed through here: wandb reads it from ``WANDB_API_KEY`` or
    ``~/.netrc`` itself, so it cannot end up in a saved config.

    Args:
        mode: ``auto`` (default), ``online``, ``offline`` or ``disabled``.
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
        **kwargs: Any,
    ) -> None:
        resolved = resolve_wandb_mode(mode)
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        # Lightning refuses log_model when offline; the best checkpoint is logged here
        # instead (offline artifacts upload with `wandb sync`).
        super().__init__(
            name=name,
            project=project,
            save_dir=save_dir,
            offline=resolved == "offline",
            log_model=False,
            mode=resolved,
            **kwargs,
        )
        self.wandb_mode = resolved
        self.upload_best = bool(log_model)
        self._checkpoint_callback: Any = None

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
