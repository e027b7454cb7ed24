"""fgvc.commands.predict's flags: --results-file, and the old -o / --output spellings that keep
scripts running with one warning line (the predictions themselves: test_deploy_predict.py)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgvc.commands.predict import main


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([*argv, "--no-progress", "--device", "cpu"], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "bird.png"
    pixels = np.random.default_rng(0).integers(0, 256, (40, 36, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_results_file_holds_what_stdout_would(tiny_run, image, tmp_path, capsys):
    ckpt = str(tiny_run[2])
    code, printed, err = run([str(image), "--model", ckpt, "--format", "csv"])
    assert code == 0 and err == ""
    target = tmp_path / "preds.csv"
    code, nothing, err = run([str(image), "--model", ckpt, "--format", "csv",
                              "--results-file", str(target)])  # fmt: skip
    assert (code, nothing, err) == (0, "", "")
    assert target.read_text(encoding="utf-8") == printed
    assert capsys.readouterr().err == ""  # no deprecation line for the new spelling


@pytest.mark.parametrize("flag", ["-o", "--output"])
def test_old_output_spellings_still_write_the_file_with_one_warning(
    tiny_run, image, tmp_path, capsys, flag
):
    ckpt = str(tiny_run[2])
    target = tmp_path / f"preds{flag}.json"
    code, printed, _ = run([str(image), "--model", ckpt, "--format", "json", flag, str(target)])
    assert code == 0 and printed == ""
    assert str(image) in target.read_text(encoding="utf-8")
    warnings = capsys.readouterr().err.splitlines()
    assert warnings == [f"fgvc predict: warning: {flag} is deprecated; use --results-file FILE"]


def test_help_shows_the_new_names_only(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "--results-file FILE" in text and "--workers N" in text and "data-loader" in text
    assert "--output" not in text and "-o " not in text
