"""Where a W&B run goes when the config says ``mode: auto``, and why.

Online when there is an API key for the W&B server this machine uses and that server answers;
otherwise offline (uploaded later with ``wandb sync``). The server is ``WANDB_BASE_URL``, else
the ``base_url`` of wandb's own settings file (``wandb login --host ...`` writes it), else
``https://api.wandb.ai``; the key is ``WANDB_API_KEY`` or the ``~/.netrc`` entry for that host
(where ``wandb login`` puts it). ``WANDB_MODE`` overrides everything. The key itself is never
read into fgvc's configs or logs.

Besides the run folder, W&B writes in its cache (``WANDB_CACHE_DIR``, default
``~/.cache/wandb``: its logs) and data folder (``WANDB_DATA_DIR``, default
``~/.local/share/wandb``: artifacts staged for upload); when either cannot be written (a
read-only ``HOME`` on a cluster) the run stops before it starts, in one line naming the
folder, the variable and the fix, instead of after wandb's own log.
"""

from __future__ import annotations

import configparser
import netrc
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from fgvc.errors import ConfigError

DEFAULT_BASE_URL = "https://api.wandb.ai"
MODES = ("online", "offline", "disabled")


@dataclass(frozen=True)
class WandbMode:
    """The mode chosen, and the reason in words (the end of ``fit`` prints it)."""

    mode: Literal["online", "offline", "disabled"]
    reason: str


def wandb_base_url() -> tuple[str, str]:
    """(server URL, where it came from)."""
    env = os.environ.get("WANDB_BASE_URL", "").strip()
    if env:
        return env.rstrip("/"), "WANDB_BASE_URL"
    config_dir = os.environ.get("WANDB_CONFIG_DIR") or str(Path.home() / ".config" / "wandb")
    settings = Path(config_dir) / "settings"
    parser = configparser.ConfigParser()
    try:
        parser.read(settings)
    except (configparser.Error, OSError, UnicodeDecodeError):
        return DEFAULT_BASE_URL, "the default"
    url = parser.get("default", "base_url", fallback="").strip()
    return (url.rstrip("/"), str(settings)) if url else (DEFAULT_BASE_URL, "the default")


def api_key_source(host: str) -> str | None:
    """Where an API key for ``host`` is found (``WANDB_API_KEY`` or ``~/.netrc``), or None."""
    if os.environ.get("WANDB_API_KEY"):
        return "WANDB_API_KEY"
    try:
        found = netrc.netrc().authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return None
    return "~/.netrc" if found is not None else None


def reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_wandb_mode(mode: str) -> WandbMode:
    """``mode`` (``auto``, ``online``, ``offline`` or ``disabled``) made concrete.

    Raises:
        ValueError: an unknown mode.
    """
    chosen = _resolve(mode)
    if chosen.mode != "disabled":
        check_wandb_folders()
    return chosen


def wandb_folders() -> list[tuple[str, Path, str]]:
    """``(variable, folder, what W&B keeps there)`` for the folders W&B writes outside the
    run folder, as wandb itself resolves them."""
    from wandb import env

    return [
        ("WANDB_CACHE_DIR", Path(env.get_cache_dir()), "cache and logs"),
        ("WANDB_DATA_DIR", Path(env.get_data_dir()), "artifact staging"),
    ]


def check_wandb_folders() -> None:
    """Every folder of :func:`wandb_folders` can be created and written in (tried).

    Raises:
        ConfigError: one that cannot (the message names it, its variable and the fix).
    """
    for var, folder, what in wandb_folders():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder, prefix=".fgvc-probe-"):
                pass
        except OSError as err:
            origin = f"{var}" if os.environ.get(var) else f"HOME={Path.home()}"
            raise ConfigError(
                f"W&B cannot write its {what} in {folder} ({err.strerror or err}; the folder "
                f"comes from {origin}): set {var} (or HOME) to a writable folder, or run "
                f"without W&B: WANDB_MODE=disabled"
            ) from err


def _resolve(mode: str) -> WandbMode:
    env = os.environ.get("WANDB_MODE")
    if env in MODES:
        return WandbMode(env, f"WANDB_MODE={env}")  # type: ignore[arg-type]
    if env == "dryrun":
        return WandbMode("offline", "WANDB_MODE=dryrun")
    if mode != "auto":
        if mode not in MODES:
            raise ValueError(f"wandb mode must be auto, online, offline or disabled, got {mode!r}")
        return WandbMode(mode, f"mode: {mode} in the config")  # type: ignore[arg-type]
    url, origin = wandb_base_url()
    parsed = urlparse(url if "://" in url else f"https://{url}")
    host = parsed.hostname or url
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    where = f"{url} (server from {origin})"
    key = api_key_source(host)
    if key is None:
        return WandbMode("offline", f"no API key for {where}: set WANDB_API_KEY or run wandb login")
    if not reachable(host, port):
        return WandbMode("offline", f"{where} did not answer on port {port}")
    return WandbMode("online", f"API key from {key}, and {where} answers")
