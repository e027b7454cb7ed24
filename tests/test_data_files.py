"""Safe image discovery (``fgvc.data.files``) and what ``FolderDataset`` makes of it, on
real symlinks: loops, links across classes and out of the dataset, file links into a pool,
one file reached twice, unreadable folders, class folders that are links."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fgvc.data import FolderDataset, load_rgb
from fgvc.data.files import collect_images, walk_images
from fgvc.data.io import IMAGE_EXTENSIONS
from tests.replicas import pattern, write_jpeg

REPO = Path(__file__).resolve().parents[1]


def _image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jpeg(path, pattern(8, 8, seed))
    return path


def _images(folder: Path, *names: str) -> list[Path]:
    return [_image(folder / name, seed) for seed, name in enumerate(names)]


def _link(link: Path, target: str | Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)
    return link


def _reasons(walk_or_dataset, *needles: str) -> str:
    """The single skip message naming all ``needles``."""
    skipped = walk_or_dataset.skipped
    messages = [m if isinstance(m, str) else m[1] for m in skipped]
    hits = [m for m in messages if all(n in m for n in needles)]
    assert len(hits) == 1, (needles, messages)
    assert "\n" not in hits[0]
    return hits[0]


def run_without_permission_override(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python in which root, too, obeys file permissions."""
    command = [sys.executable, "-c", textwrap.dedent(code), *args]
    if os.geteuid() == 0:  # CI runs as root: drop the capabilities that bypass permissions
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


# -- the walk ------------------------------------------------------------------------------------
def test_plain_tree_is_walked_like_sorted_os_walk(tmp_path):
    top = tmp_path / "cls"
    _images(top, "b.jpg", "A.JPG", "a b/x.png", "a/y.jpeg", "a/deep/z.webp", "c.tiff")
    (top / "notes.txt").write_text("not an image\n")
    (top / "a" / "deep" / "readme.md").write_text("\n")
    expected = [
        Path(folder) / name
        for folder, _, names in sorted(os.walk(top))
        for name in sorted(names)
        if name.lower().endswith(IMAGE_EXTENSIONS)
    ]
    result = walk_images(top)
    assert result.files == expected and len(expected) == 6
    assert result.skipped == []
    assert len(set(result.keys)) == 6


def test_missing_or_non_folder_top_is_a_one_line_error(tmp_path):
    _image(tmp_path / "a.jpg")
    with pytest.raises(FileNotFoundError, match="cannot read folder") as info:
        walk_images(tmp_path / "gone")
    assert str(tmp_path / "gone") in str(info.value)
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        walk_images(tmp_path / "a.jpg")


def test_loop_links_are_reported_not_followed(tmp_path):
    real = _images(tmp_path / "train" / "a", "1.jpg", "2.jpg", "sub/3.jpg", "sub/4.jpg")
    _link(tmp_path / "train" / "a" / "loop", ".")
    with pytest.warns(UserWarning, match="1 entries left out") as caught:
        dataset = FolderDataset(tmp_path, "train")
    assert len(caught) == 1
    assert dataset.samples == [(str(p), 0) for p in real]  # not 164
    assert dataset.ids == ["a/1.jpg", "a/2.jpg", "a/sub/3.jpg", "a/sub/4.jpg"]
    _reasons(dataset, "a/loop", "a loop")
    # two loops (they would multiply each other when followed)
    _link(tmp_path / "train" / "a" / "sub" / "up", "..")
    result = walk_images(tmp_path / "train" / "a")
    assert result.files == real
    _reasons(result, "a/loop", "a loop")
    _reasons(result, "sub/up", "a loop")
    with pytest.warns(UserWarning, match="2 entries left out") as caught:
        assert len(FolderDataset(tmp_path, "train")) == 4
    assert len(caught) == 1  # one warning for all


def test_link_to_a_sibling_class_is_not_followed(tmp_path):
    train = tmp_path / "train"
    a = _images(train / "a", "1.jpg")
    b = _images(train / "b", "2.jpg", "3.jpg")
    _link(train / "a" / "more", "../b")
    with pytest.warns(UserWarning, match="1 entries left out"):
        dataset = FolderDataset(tmp_path, "train")
    assert dataset.samples == [(str(a[0]), 0), (str(b[0]), 1), (str(b[1]), 1)]
    message = _reasons(dataset, str(train / "a" / "more"), "outside")
    assert str(train / "b") in message and "link the image files instead" in message


def test_link_to_a_folder_outside_the_dataset_is_not_followed(tmp_path):
    _images(tmp_path / "elsewhere", "x.jpg", "y.jpg")
    a = _images(tmp_path / "data" / "train" / "a", "1.jpg")
    _link(tmp_path / "data" / "train" / "a" / "ext", tmp_path / "elsewhere")
    result = walk_images(tmp_path / "data" / "train" / "a")
    assert result.files == a
    _reasons(result, "a/ext", str(tmp_path / "elsewhere"), "outside")


def test_file_links_into_a_pool_are_followed(tmp_path):
    pool = _images(tmp_path / "pool", "p1.jpg", "p2.jpg")
    train = tmp_path / "data" / "train"
    _link(train / "a" / "one.jpg", pool[0])
    _link(train / "b" / "two.jpg", pool[1])
    dataset = FolderDataset(tmp_path / "data", "train")
    assert dataset.ids == ["a/one.jpg", "b/two.jpg"] and dataset.targets == [0, 1]
    assert dataset.skipped == []
    assert (dataset[0][0] == load_rgb(pool[0])).all()


def test_one_file_reached_twice_counts_once(tmp_path):
    pool = _images(tmp_path / "pool", "p.jpg")
    cls = tmp_path / "train" / "a"
    _link(cls / "x.jpg", pool[0])
    _link(cls / "y.jpg", pool[0])
    real = _image(cls / "real.jpg", seed=5)
    _link(cls / "alias.jpg", "real.jpg")  # sorts first, but the file itself is kept
    result = walk_images(cls)
    assert result.files == [cls / "real.jpg", cls / "x.jpg"]
    _reasons(result, "y.jpg", f"same file as {cls / 'x.jpg'}")
    _reasons(result, "alias.jpg", f"same file as {real}")
    with pytest.warns(UserWarning, match="2 entries left out"):
        assert len(FolderDataset(tmp_path, "train")) == 2


def test_one_file_in_two_classes_gets_no_second_label(tmp_path):
    pool = _images(tmp_path / "pool", "shared.jpg")
    train = tmp_path / "data" / "train"
    _images(train / "a", "a1.jpg")
    b_own = _images(train / "b", "b1.jpg", "b2.jpg")
    _link(train / "a" / "from_b.jpg", b_own[1])  # b's own file: stays in b only
    _link(train / "a" / "s.jpg", pool[0])  # one pool file linked into two classes:
    _link(train / "b" / "s.jpg", pool[0])  # no class can be chosen, both left out
    with pytest.warns(UserWarning, match="3 entries left out"):
        dataset = FolderDataset(tmp_path / "data", "train")
    assert dataset.ids == ["a/a1.jpg", "b/b1.jpg", "b/b2.jpg"] and dataset.targets == [0, 1, 1]
    _reasons(dataset, "a/from_b.jpg", f"same file as {b_own[1]}", "'b'")
    _reasons(dataset, "a/s.jpg", "also in class(es) ['b']")
    _reasons(dataset, "b/s.jpg", "also in class(es) ['a']")


def test_class_folder_that_is_a_link_into_a_pool(tmp_path):
    pool = _images(tmp_path / "pool" / "cats", "c1.jpg", "sub/c2.jpg")
    _images(tmp_path / "data" / "train" / "dog", "d.jpg")
    _link(tmp_path / "data" / "train" / "cat", tmp_path / "pool" / "cats")
    dataset = FolderDataset(tmp_path / "data", "train")
    assert dataset.classes == ["cat", "dog"] and dataset.skipped == []
    assert dataset.ids == ["cat/c1.jpg", "cat/sub/c2.jpg", "dog/d.jpg"]
    assert dataset.samples[0] == (str(tmp_path / "data" / "train" / "cat" / "c1.jpg"), 0)
    assert (dataset[1][0] == load_rgb(pool[1])).all()


@pytest.mark.parametrize("target", ["b", "b/sub", ".", ".."])
def test_class_folders_that_overlap_through_links_are_refused(tmp_path, target):
    train = tmp_path / "train"
    _images(train / "b", "1.jpg", "sub/2.jpg")
    _link(train / "c", target)
    with pytest.raises(ValueError) as info:
        FolderDataset(tmp_path, "train")
    message = str(info.value)
    assert str(train / "c") in message and ("two labels" in message or "split folder" in message)
    assert "\n" not in message


def test_broken_file_link_is_reported(tmp_path):
    cls = tmp_path / "train" / "a"
    kept = _images(cls, "1.jpg")
    _link(cls / "gone.jpg", tmp_path / "nowhere.jpg")
    result = walk_images(cls)
    assert result.files == kept
    _reasons(result, "gone.jpg", "broken link", "nowhere.jpg")


def test_unreadable_folders_are_reported_not_dropped(tmp_path):
    train = tmp_path / "data" / "train"
    _images(train / "a", "1.jpg", "locked/2.jpg")
    _images(train / "b", "3.jpg")
    (train / "a" / "locked").chmod(0)
    try:
        result = run_without_permission_override(
            """
            import json, sys, warnings
            from fgvc.data import FolderDataset
            from fgvc.data.files import walk_images
            walk = walk_images(sys.argv[1] + "/train/a")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                dataset = FolderDataset(sys.argv[1], "train")
            out = {"files": [str(p) for p in walk.files], "skipped": [m for _, m in walk.skipped],
                   "ids": dataset.ids, "dataset_skipped": dataset.skipped,
                   "warnings": [str(w.message) for w in caught]}
            import os; os.chmod(sys.argv[1] + "/train/b", 0)
            try:
                FolderDataset(sys.argv[1], "train")
            except OSError as err:
                out["error"] = f"{type(err).__name__}: {err}"
            print(json.dumps(out))
            """,
            str(tmp_path / "data"),
        )
    finally:
        for folder in (train / "a" / "locked", train / "b"):
            folder.chmod(0o755)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["files"] == [str(train / "a" / "1.jpg")]
    locked = str(train / "a" / "locked")
    assert out["skipped"] == [
        f"{locked}: cannot read folder (Permission denied); fix its permissions (chmod u+rx)"
    ]
    assert out["ids"] == ["a/1.jpg", "b/3.jpg"] and out["dataset_skipped"] == out["skipped"]
    assert len(out["warnings"]) == 1 and locked in out["warnings"][0]
    # a whole class folder that cannot be read says so, not "holds no image"
    error = out["error"]
    assert error.startswith("PermissionError: ") and str(train / "b") in error
    assert "cannot read folder" in error and "fix its permissions" in error
    assert "holds no image" not in error


# -- collect_images (fgvc predict) ------------------------------------------------------------
def test_collect_images_on_plain_inputs(tmp_path):
    folder = tmp_path / "in"
    _images(folder, "z.jpg", "a/b.PNG", "a b/c.jpeg", "a/x/y.bmp")
    (folder / "notes.txt").write_text("\n")
    (tmp_path / "named.txt").write_text("taken as given\n")
    inputs = [folder, tmp_path / "named.txt", tmp_path / "gone.jpg", str(folder / "z.jpg")]
    images, missing = collect_images(inputs)
    # folders: every image below, sorted as paths; named files whatever their extension
    below = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    assert images == [*below, tmp_path / "named.txt", folder / "z.jpg"]
    assert images[-2:] == [tmp_path / "named.txt", folder / "z.jpg"]
    assert missing == [(tmp_path / "gone.jpg", f"{tmp_path / 'gone.jpg'}: no such file or folder")]


def test_collect_images_walks_safely_and_says_what_it_left_out(tmp_path):
    pool = _images(tmp_path / "pool", "p.jpg")
    folder = tmp_path / "in"
    own = _images(folder, "a.jpg", "sub/b.jpg")
    _link(folder / "sub" / "loop", "..")
    _link(folder / "p.jpg", pool[0])
    _link(folder / "p_again.jpg", pool[0])
    _link(tmp_path / "in_link", folder)  # an input that is a link to a folder
    images, not_taken = collect_images([tmp_path / "in_link", folder / "sub"])
    linked = tmp_path / "in_link"
    assert images == [linked / "a.jpg", linked / "p.jpg", linked / "sub" / "b.jpg", own[1]]
    reasons = [message for _, message in not_taken]
    assert len(reasons) == 3 and all("\n" not in m for m in reasons)
    assert any("p_again.jpg" in m and "same file" in m for m in reasons)
    assert sum("a loop" in m for m in reasons) == 2  # seen from both inputs


def test_names_that_differ_only_in_case_or_normalization_are_grouped():
    from fgvc.data.files import confusable_message, confusable_names

    nfc, nfd = "caf\u00e9", "cafe\u0301"  # print alike
    names = [nfc, nfd, "Bird", "bird", "BIRD", "heron", "Stra\u00dfe", "STRASSE", "Strasse1"]
    assert confusable_names(names) == [
        [nfc, nfd],
        ["Bird", "bird", "BIRD"],
        ["Stra\u00dfe", "STRASSE"],
    ]
    assert confusable_names(["a", "a", "b"]) == []  # the same name is not two names
    assert confusable_message("x/train", [nfc, nfd]) == (
        "x/train: class names 'caf\\xe9' and 'cafe\\u0301' differ only in letter case or "
        "Unicode normalization (an accent as part of the letter or as a separate character): "
        "they are different classes to fgvc but look the same, and a case-insensitive file "
        "system (macOS, Windows) merges their folders; rename or merge them"
    )
