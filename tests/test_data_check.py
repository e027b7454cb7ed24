"""``fgvc data check`` on hostile data: decompression bombs, link loops and links across
classes, unreadable folders, class names that are not UTF-8. Each fails the check, named."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from fgvc.commands.data import main
from fgvc.data.check import check_dataset
from fgvc.data.io import MAX_PIXELS_ENV
from tests.replicas import make_folders, pattern, write_jpeg
from tests.test_data_files import run_without_permission_override
from tests.test_data_io import write_png_bomb


def _check(root: Path, capsys, workers: int = 1) -> tuple[int, list[str]]:
    code = main(["check", "folder", "--root", str(root), "--workers", str(workers)])
    return code, capsys.readouterr().out.splitlines()


def test_decompression_bomb_is_a_bad_file(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    make_folders(tmp_path, {"train": {"a": 2, "b": 2}, "val": {"a": 1}})
    bomb = tmp_path / "train" / "b" / "bomb.png"
    write_png_bomb(bomb, 30000, 30000)
    code, lines = _check(tmp_path, capsys)
    assert code == 1
    bad = [line for line in lines if line.startswith("bad file: ")]
    assert len(bad) == 1 and bad[0].startswith(f"bad file: {bomb}: 30000x30000 image")
    assert MAX_PIXELS_ENV in bad[0]
    assert (
        lines[-1] == "folder: 6 images checked, 1 bad files, 0 problems, 0 entries skipped - FAILED"
    )


def test_pixel_limit_reaches_the_worker_processes(tmp_path, capsys, monkeypatch):
    make_folders(tmp_path, {"train": {"a": 2, "b": 1}})  # 32 x 24 = 768 pixels each
    large = tmp_path / "train" / "a" / "large.png"
    Image.fromarray(pattern(40, 40, 3)).save(large)  # 1600 pixels
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    code, lines = _check(tmp_path, capsys, workers=2)
    assert code == 1
    assert [line for line in lines if line.startswith("bad file")] == [
        line for line in lines if line.startswith(f"bad file: {large}: 40x40 image")
    ]
    assert "1 bad files" in lines[-1]
    monkeypatch.setenv(MAX_PIXELS_ENV, "1600")
    code, lines = _check(tmp_path, capsys, workers=2)
    assert code == 0 and lines[-1].endswith("0 entries skipped - ok")


def test_unreadable_pixel_limit_is_an_error_line(tmp_path, capsys, monkeypatch):
    make_folders(tmp_path, {"train": {"a": 1}})
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    assert main(["check", "folder", "--root", str(tmp_path), "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fgvc data: error: {MAX_PIXELS_ENV}='lots' is not a pixel count")
    assert err.count("\n") == 1


def test_links_left_out_are_listed_and_fail_the_check(tmp_path, capsys):
    root = tmp_path / "data"
    make_folders(root, {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}})
    write_jpeg(tmp_path / "outside" / "o.jpg", pattern(8, 8, 1))
    os.symlink(".", root / "train" / "a" / "loop")
    os.symlink("../b", root / "train" / "a" / "b_too")
    os.symlink(tmp_path / "outside", root / "val" / "b" / "ext")
    report = check_dataset("folder", root, workers=1, log=lambda _: None)
    assert not report.ok and report.bad_files == [] and report.problems == []
    assert report.splits == {"train": 4, "val": 2}  # nothing pulled in twice
    assert len(report.skipped) == 3
    code, lines = _check(root, capsys)
    assert code == 1
    skipped = [line for line in lines if line.startswith("skipped: ")]
    assert [line.split(":")[1].strip() for line in skipped] == [
        str(root / "train" / "a" / "b_too"),
        str(root / "train" / "a" / "loop"),
        str(root / "val" / "b" / "ext"),
    ]
    assert "a loop" in skipped[1] and "outside" in skipped[0] and "outside" in skipped[2]
    assert "train: 4 images, 2 classes, 2 entries skipped" in lines
    assert lines[-1].endswith("0 problems, 3 entries skipped - FAILED")


def test_unreadable_folders_fail_the_check_naming_them(tmp_path):
    root = tmp_path / "data"
    make_folders(root, {"train": {"a": 2, "b": 2}, "val": {"a": 2, "b": 1}})
    locked_class = root / "train" / "b"  # the whole train split is unusable
    locked_sub = root / "val" / "a" / "nested"  # val loses one image
    for folder in (locked_class, locked_sub):
        folder.chmod(0)
    try:
        result = run_without_permission_override(
            """
            import sys
            from fgvc.commands.data import main
            sys.exit(main(["check", "folder", "--root", sys.argv[1], "--workers", "1"]))
            """,
            str(root),
        )
    finally:
        for folder in (locked_class, locked_sub):
            folder.chmod(0o755)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert (
        f"problem: train: {locked_class}: cannot read folder (Permission denied); "
        f"fix its permissions (chmod u+rx)" in lines
    )
    assert (
        f"skipped: {locked_sub}: cannot read folder (Permission denied); "
        f"fix its permissions (chmod u+rx)" in lines
    )
    assert not any("holds no image" in line for line in lines)
    assert (
        lines[-1] == "folder: 2 images checked, 0 bad files, 1 problems, 1 entries skipped - FAILED"
    )


def test_class_name_not_utf8_is_a_problem_printed_escaped(tmp_path, capsys):
    make_folders(tmp_path, {"train": {"a": 1}})
    bad = Path(os.fsdecode(os.fsencode(tmp_path / "train") + b"/\xff\xfe"))
    write_jpeg(bad / "x.jpg", pattern(8, 8, 2))
    code, lines = _check(tmp_path, capsys)
    assert code == 1
    problems = [line for line in lines if line.startswith("problem: ")]
    assert len(problems) == 1 and str(tmp_path / "train" / "\\xff\\xfe") in problems[0]
    assert "not valid UTF-8" in problems[0] and "rename it" in problems[0]


def test_class_folders_that_look_alike_are_warned_about_without_failing(tmp_path, capsys):
    import unicodedata

    import pytest

    from fgvc.data import FolderDataset

    nfc, nfd = (unicodedata.normalize(form, "Café") for form in ("NFC", "NFD"))
    make_folders(tmp_path, {"train": {nfc: 2, nfd: 2, "Bird": 2, "bird": 2}, "val": {nfc: 1}})
    with pytest.warns(UserWarning, match="differ only in letter case or Unicode") as record:
        FolderDataset(tmp_path, "train")
    assert len(record) == 2
    assert main(["check", "folder", "--root", str(tmp_path), "--workers", "1"]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert warnings == [
        f"warning: {tmp_path / 'train'}: class names 'Bird' and 'bird' differ only in letter "
        f"case or Unicode normalization (an accent as part of the letter or as a separate "
        f"character): they are different classes to fgvc but look the same, and a "
        f"case-insensitive file system (macOS, Windows) merges their folders; rename or "
        f"merge them",
        f"warning: {tmp_path / 'train'}: class names 'Cafe\\u0301' and 'Caf\\xe9' differ only "
        f"in letter case or Unicode normalization (an accent as part of the letter or as a "
        f"separate character): they are different classes to fgvc but look the same, and a "
        f"case-insensitive file system (macOS, Windows) merges their folders; rename or "
        f"merge them",
    ]
