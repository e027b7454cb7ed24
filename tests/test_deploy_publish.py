"""fgvc.deploy.publish: a bundle appears whole or not at all; the user's files are never lost."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fgvc.deploy.publish import atomic_write_text, staged_folder
from fgvc.errors import UsageError

FILES = ("model.json", "model.safetensors", "model.onnx")
REPO = Path(__file__).resolve().parents[1]


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_new_folder_appears_whole_and_parents_are_created(tmp_path):
    out = tmp_path / "a" / "b" / "bundle"
    with staged_folder(out, False, FILES) as staging:
        (staging / "model.json").write_text("{}")
        assert not out.exists()  # nothing is visible before the block ends
    assert names(out) == {"model.json"} and names(out.parent) == {"bundle"}
    mode = stat.S_IMODE(out.stat().st_mode)
    assert mode == 0o777 & ~_umask()  # not mkdtemp's private 0700
    assert stat.S_IMODE((out / "model.json").stat().st_mode) == 0o666 & ~_umask()  # no x


def test_failure_leaves_nothing_not_even_created_parents(tmp_path):
    out = tmp_path / "a" / "bundle"
    with pytest.raises(RuntimeError), staged_folder(out, False, FILES) as staging:
        (staging / "model.json").write_text("{}")
        raise RuntimeError("verification failed")
    assert names(tmp_path) == set()


def test_force_replaces_bundle_files_keeps_others_and_restores_on_failure(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "model.json").write_text("old")
    (out / "model.onnx").write_text("old onnx")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="--force"), staged_folder(out, False, FILES):
        pass
    with pytest.raises(RuntimeError), staged_folder(out, True, FILES) as staging:
        (staging / "model.json").write_text("new")
        raise RuntimeError("boom")
    assert (out / "model.json").read_text() == "old" and names(out) == {
        "model.json",
        "model.onnx",
        "notes.txt",
    }
    with staged_folder(out, True, FILES) as staging:
        (staging / "model.json").write_text("new")
        (staging / "model.safetensors").write_text("w")
    # the stale onnx of the old bundle is gone (it would not match the new weights)
    assert names(out) == {"model.json", "model.safetensors", "notes.txt"}
    assert (out / "model.json").read_text() == "new" and (out / "notes.txt").read_text() == "mine"
    assert names(tmp_path) == {"bundle"}  # no staging or backup folder left


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def run_unprivileged(code: str) -> subprocess.CompletedProcess:
    """``code`` in a Python whose root (CI runs as root) cannot override permissions."""
    return subprocess.run(
        ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_read_only_destinations_are_refused_and_left_as_they_were(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    full = tmp_path / "full"
    full.mkdir()
    (full / "model.json").write_text("old")
    locked = tmp_path / "locked"
    locked.mkdir()
    for folder in (empty, full, locked):
        folder.chmod(0o555)
    code = f"""
from pathlib import Path
from fgvc.deploy.publish import staged_folder
from fgvc.errors import UsageError
for out, force in (("{empty}", False), ("{full}", True), ("{locked}/sub/bundle", False)):
    try:
        with staged_folder(Path(out), force, ["model.json"]) as staging:
            (staging / "model.json").write_text("new")
    except UsageError as err:
        print("refused:", err)
    else:
        print("published", out)
"""
    try:
        proc = run_unprivileged(code)
    finally:
        for folder in (empty, full, locked):
            folder.chmod(0o755)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(lines) == 3 and all("refused" in x for x in lines), proc
    assert "fix its permissions" in lines[0] and "fix the permissions" in lines[2]
    assert names(empty) == set() and (full / "model.json").read_text() == "old"
    assert names(full) == {"model.json"} and names(locked) == set()


def test_atomic_write_replaces_whole_and_keeps_the_mode(tmp_path):
    target = tmp_path / "preds.csv"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write_text(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and names(tmp_path) == {"preds.csv"}
    with pytest.raises(UnicodeEncodeError):  # a failure mid-way: the old file stays
        atomic_write_text(target, "bad \udce9 surrogate")
    assert target.read_text(encoding="utf-8") == "new ✓" and names(tmp_path) == {"preds.csv"}
    with pytest.raises(UsageError, match="does not exist"):
        atomic_write_text(tmp_path / "no" / "x.csv", "x")


_KILLED_EXPORT = """
import sys
from pathlib import Path
from fgvc.deploy.publish import staged_folder
with staged_folder(Path(sys.argv[1]), True, ["model.json", "model.onnx"]) as staging:
    (staging / "model.onnx").write_bytes(b"half of a new export")
    print("paused", flush=True)
    sys.stdin.readline()  # never answered: killed here
"""


def test_a_killed_export_force_leaves_its_staging_folder_to_the_next_export(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "model.json").write_text("old")
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_EXPORT, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout.readline() == b"paused\n"
    child.kill()
    child.wait()
    child.stdin.close()
    child.stdout.close()
    (left,) = names(tmp_path) - {"bundle"}
    assert left.startswith(".bundle.tmp-") and f"-{child.pid}-" in left  # named by its owner
    assert names(out) == {"model.json"} and (out / "model.json").read_text() == "old"
    with staged_folder(out, True, FILES) as staging:
        (staging / "model.json").write_text("new")
    assert names(tmp_path) == {"bundle"} and names(out) == {"model.json"}


def test_a_publish_killed_while_moving_files_is_rolled_back_first(tmp_path):
    """Killed after the old files went to the backup and one new file came in: the old
    bundle comes back before anything else is written there."""
    from fgvc.utils.atomic import hidden_prefix
    from tests.fs_helpers import dead_pid

    out = tmp_path / "bundle"
    backup = out / hidden_prefix("bundle", "bak").replace(str(os.getpid()), str(dead_pid()))
    backup = backup.with_name(backup.name + "abcd1234")
    backup.mkdir(parents=True)
    (backup / "model.json").write_text("old")
    (backup / "model.safetensors").write_text("old weights")
    (out / "model.safetensors").write_text("new weights")
    with pytest.raises(RuntimeError), staged_folder(out, True, FILES):
        raise RuntimeError("this export fails too")
    assert names(out) == {"model.json", "model.safetensors"}
    assert (out / "model.safetensors").read_text() == "old weights"


def test_a_replaced_folder_is_swapped_whole_or_not_at_all(tmp_path):
    from fgvc.deploy.publish import replaced_folder

    out = tmp_path / "export"
    out.mkdir()
    (out / "model.json").write_text("old")
    (out / "model.onnx").write_text("old onnx")
    with pytest.raises(RuntimeError), replaced_folder(out) as new:
        new.mkdir()
        (new / "model.json").write_text("new")
        raise RuntimeError("export failed")
    assert names(out) == {"model.json", "model.onnx"} and names(tmp_path) == {"export"}
    with replaced_folder(out) as new:
        with staged_folder(new, False, FILES) as staging:
            (staging / "model.json").write_text("new")
        assert (out / "model.json").read_text() == "old"  # until the block ends
    assert names(out) == {"model.json"} and (out / "model.json").read_text() == "new"
    assert names(tmp_path) == {"export"}


def _old_bundle(out: Path) -> dict[str, str]:
    """An existing bundle (no ONNX file) and a file of the user's; returns what is there."""
    out.mkdir()
    old = {"model.json": "old json", "model.safetensors": "old weights", "notes.txt": "mine"}
    for name, text in old.items():
        (out / name).write_text(text)
    return old


def _contents(folder: Path) -> dict[str, str]:
    """The files a reader sees (not the hidden backup folder of a publish under way)."""
    return {p.name: p.read_text() for p in folder.iterdir() if not p.name.startswith(".")}


def test_the_file_that_describes_the_others_is_moved_in_last(tmp_path, monkeypatch):
    """A reader that sees the new model.json sees the new weights and ONNX beside it."""
    import fgvc.deploy.publish as publish

    out = tmp_path / "bundle"
    _old_bundle(out)
    real_replace = os.replace
    seen: dict[str, dict[str, str]] = {}  # what out held when each new file arrived

    def replace(src, dst):
        real_replace(src, dst)
        if Path(dst).parent == out and Path(src).parent.name.startswith(".bundle.tmp-"):
            seen[Path(dst).name] = _contents(out)

    monkeypatch.setattr(publish.os, "replace", replace)
    with staged_folder(out, True, FILES, last="model.json") as staging:
        # written in this order, and iterdir's order is the filesystem's: the rule must decide
        for name in ("model.json", "model.onnx", "model.safetensors"):
            (staging / name).write_text(f"new {name}")
    assert list(seen)[-1] == "model.json", list(seen)
    assert seen["model.json"] == {
        "model.json": "new model.json",
        "model.onnx": "new model.onnx",
        "model.safetensors": "new model.safetensors",
        "notes.txt": "mine",
    }
    assert sorted(seen) == ["model.json", "model.onnx", "model.safetensors"]
    assert names(out) == {*seen, "notes.txt"} and names(tmp_path) == {"bundle"}


@pytest.mark.parametrize(("failing", "at"), [("moving-out", 2), ("moving-in", 3)])
def test_a_failure_during_the_moves_restores_the_old_bundle(tmp_path, monkeypatch, failing, at):
    """A rename fails while the old files go aside (the second), or while the new ones
    come in (the last, model.json: the ONNX file, which the old bundle lacked, is in by
    then): the old bundle is back as it was, no new file stays, nothing hidden is left."""
    import errno

    import fgvc.deploy.publish as publish

    out = tmp_path / "bundle"
    old = _old_bundle(out)
    real_replace = os.replace
    calls: list[tuple[str, str]] = []

    def replace(src, dst):
        into_backup = ".bundle.bak-" in Path(dst).parent.name
        from_staging = Path(src).parent.name.startswith(".bundle.tmp-")
        phase = "moving-out" if into_backup else "moving-in" if from_staging else "other"
        calls.append((phase, Path(src).name))
        if phase == failing and [p for p, _ in calls].count(phase) == at:
            raise OSError(errno.EIO, "Input/output error (planted)")
        real_replace(src, dst)

    monkeypatch.setattr(publish.os, "replace", replace)
    with (
        pytest.raises(OSError, match="planted"),
        staged_folder(out, True, FILES, last="model.json") as staging,
    ):
        for name in FILES:
            (staging / name).write_text(f"new {name}")
    assert [p for p, _ in calls].count(failing) == at  # the failure did happen mid-way
    if failing == "moving-in":
        assert ("moving-in", "model.onnx") in calls
    assert _contents(out) == old  # model.onnx, new, is gone; the old files are whole
    assert names(out) == set(old) and names(tmp_path) == {"bundle"}  # no backup, no staging
