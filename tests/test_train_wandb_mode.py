"""fgvc.train.wandb_mode: the folders W&B writes outside the run folder are checked first."""

from __future__ import annotations

import pytest

from fgvc.errors import ConfigError
from fgvc.train.wandb_mode import resolve_wandb_mode


@pytest.fixture
def home(tmp_path, monkeypatch):
    """HOME under a regular file: nothing can be created there (even by root, as in CI)."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    for var in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_MODE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(blocker / "home"))
    return blocker / "home"


def test_an_unwritable_home_is_one_line_naming_the_folder_the_variable_and_the_fix(
    home, tmp_path, monkeypatch
):
    with pytest.raises(ConfigError) as info:
        resolve_wandb_mode("offline")
    assert str(info.value) == (
        f"W&B cannot write its cache and logs in {home}/.cache/wandb (Not a directory; the "
        f"folder comes from HOME={home}): set WANDB_CACHE_DIR (or HOME) to a writable folder, "
        f"or run without W&B: WANDB_MODE=disabled"
    )
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match=r"artifact staging in .*/\.local/share/wandb"):
        resolve_wandb_mode("offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(home / "data"))  # set, and unwritable too
    with pytest.raises(ConfigError, match="comes from WANDB_DATA_DIR\\): set WANDB_DATA_DIR"):
        resolve_wandb_mode("offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "data"))
    assert resolve_wandb_mode("offline").mode == "offline"
    assert (tmp_path / "cache").is_dir() and (tmp_path / "data").is_dir()
    assert list((tmp_path / "cache").iterdir()) == []  # the probe leaves nothing


def test_without_wandb_nothing_is_checked(home):
    assert resolve_wandb_mode("disabled").mode == "disabled"
