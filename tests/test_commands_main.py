"""fgvc.commands.main: the entry point's own options."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import fgvc
from fgvc.commands.main import main
from tests.test_commands_train import REPO


def test_version_names_fgvc_and_its_libraries(capsys):
    for flag in ("--version", "-V"):
        assert main([flag]) == 0
        line = capsys.readouterr().out.strip()
        assert line.startswith(f"fgvc {fgvc.__version__} (torch {version('torch')}, ")
        assert f"pytorch-lightning {version('pytorch-lightning')}" in line
        assert f"timm {version('timm')}" in line and "Python 3." in line


def test_version_imports_no_library():
    """Instant, as a bug report's first line should be: neither torch nor Lightning load."""
    probe = (
        "import sys; from fgvc.commands.main import main; main(['--version']); "
        "print(sorted(m for m in ('torch', 'pytorch_lightning') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[-1] == "[]"
