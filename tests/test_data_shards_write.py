"""``fgvc data shard``: every split written as litdata shards holding the files' own bytes,
run as users run it (a subprocess), refusing to touch anything it did not write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from litdata import StreamingDataset

from fgvc.commands.data import main
from fgvc.data.datasets import dataset_spec
from fgvc.data.shards.meta import SHARDS_FILE, read_info, read_samples
from tests.replicas import make_folders
from tests.test_commands_train import run_fgvc, workdir  # noqa: F401 - the fixture
from tests.test_data_datasets_imagenet import make_imagenet


def stored(out: Path, split: str) -> list[dict]:
    dataset = StreamingDataset(str(out / split))
    return [dataset[i] for i in range(len(dataset))]


def assert_round_trip(name: str, root: Path, out: Path) -> None:
    """Every split: the stored samples are the dataset's, byte for byte, in a random order
    that the samples file maps back to the dataset's."""
    spec = dataset_spec(name)
    info = read_info(str(out))
    assert info.dataset == name and list(info.splits) == list(spec.split_names(root))
    for split, count in info.splits.items():
        source = spec.parser(root, split)
        assert info.classes == list(source.classes) and count == len(source)
        items = stored(out, split)
        order = [i["index"] for i in items]
        assert sorted(order) == list(range(count))
        if count > 4:
            assert order != sorted(order)  # shuffled: chunks mix the classes
        by_index = sorted(items, key=lambda i: i["index"])
        assert [i["id"] for i in by_index] == list(source.ids)
        assert [i["label"] for i in by_index] == source.targets
        files = [Path(p).read_bytes() for p, _ in source.samples]
        assert [bytes(i["image"]) for i in by_index] == files
        labels, ids, positions = read_samples(str(out), split)
        assert (labels, ids) == (source.targets, list(source.ids))
        assert [items[p]["index"] for p in positions] == list(range(count))
        counts = [source.targets.count(c) for c in range(len(source.classes))]
        assert info.class_counts[split] == counts


@pytest.mark.slow
def test_folder_dataset_round_trips_through_the_command(workdir):  # noqa: F811
    root = make_folders(
        workdir / "folders", {"train": {"a": 5, "b": 4, "c": 3}, "val": {"a": 2, "b": 2, "c": 1}}
    )
    proc = run_fgvc(
        workdir, "data", "shard", "folder", "--root", str(root), "--out", "shards", "-j", "2",
        "--chunk-bytes", "2KB",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "folder: 3 classes, train 12, val 5 images written to shards" in proc.stdout
    out = workdir / "shards"
    assert len(json.loads((out / "train" / "index.json").read_text())["chunks"]) > 2
    assert_round_trip("folder", root, out)
    info = read_info(str(out))
    assert (info.train_split, info.val_split, info.test_split) == ("train", "val", "val")
    assert info.preset == "generic" and info.source == str(root)


def test_imagenet_replica_round_trips(workdir):  # noqa: F811
    make_imagenet(workdir / "data")
    assert main(["shard", "imagenet", "--root", "data", "--out", "shards", "-j", "1"]) == 0
    assert_round_trip("imagenet", workdir / "data", workdir / "shards")
    info = read_info(str(workdir / "shards"))
    assert (info.preset, info.val_split, info.test_split) == ("imagenet", "val", "val")


def test_output_with_anything_in_it_is_refused(workdir, capsys):  # noqa: F811
    root = make_folders(workdir / "folders", {"train": {"a": 2, "b": 2}})
    (workdir / "mine").mkdir()
    (workdir / "mine" / "notes.txt").write_text("keep me")
    assert main(["shard", "folder", "--root", str(root), "--out", "mine", "-j", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"fgvc data: error: {workdir / 'mine'} is not empty (notes.txt); write to a new folder, "
        f"or pass --force to replace the shards written there before"
    ]
    # --force replaces shards, never anything else
    assert main(["shard", "folder", "--root", str(root), "--out", "mine", "--force"]) == 2
    assert "is not a file fgvc data shard wrote" in capsys.readouterr().err
    assert (workdir / "mine" / "notes.txt").read_text() == "keep me"
    assert main(["shard", "folder", "--root", str(root), "--out", "shards", "-j", "1"]) == 0
    assert main(["shard", "folder", "--root", str(root), "--out", "shards", "-j", "1"]) == 2
    capsys.readouterr()
    make_folders(root, {"train": {"c": 2}})  # a third class since
    assert main(["shard", "folder", "--root", str(root), "--out", "shards", "--force"]) == 0
    assert read_info(str(workdir / "shards")).classes == ["a", "b", "c"]
    assert_round_trip("folder", root, workdir / "shards")


def test_corrupt_image_stops_before_anything_is_written(workdir, capsys):  # noqa: F811
    root = make_folders(workdir / "folders", {"train": {"a": 2, "b": 2}})
    bad = root / "train" / "b" / "img_001.jpg"
    bad.write_bytes(b"not a jpeg")
    assert main(["shard", "folder", "--root", str(root), "--out", "shards", "-j", "1"]) == 1
    out = capsys.readouterr().out.splitlines()
    check = [line for line in out if line.startswith("bad file:")]
    assert check == [
        f"bad file: {bad}: cannot decode image" + check[0].split("cannot decode image")[1]
    ]
    assert "the file is corrupt or not an image - replace it" in check[0]
    assert out[-1] == "folder: nothing written - fix or remove the files above, then rerun"
    assert not (workdir / "shards" / SHARDS_FILE).exists()
    assert not (workdir / "shards").exists() or not any((workdir / "shards").iterdir())


def test_missing_dataset_is_one_line(workdir, capsys):  # noqa: F811
    assert main(["shard", "cub", "--root", "nowhere", "--out", "shards"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("fgvc data: error: no CUB_200_2011 dataset under nowhere")


def test_file_gone_while_writing_is_reported_not_hung(workdir, capsys, monkeypatch):  # noqa: F811
    """--no-check: a file that disappears after the split was listed is one line, the output
    is left without its metadata (incomplete), and nothing hangs (litdata's workers do when
    the function they run raises)."""
    import dataclasses

    from fgvc.data.datasets import registry

    root = make_folders(workdir / "folders", {"train": {"a": 3, "b": 3}})
    gone = root / "train" / "b" / "img_002.jpg"
    spec = registry()["folder"]

    def parse_then_lose_a_file(*args, **kwargs):
        dataset = spec.parser(*args, **kwargs)
        gone.unlink(missing_ok=True)
        return dataset

    monkeypatch.setitem(
        registry(), "folder", dataclasses.replace(spec, parser=parse_then_lose_a_file)
    )
    args = ["shard", "folder", "--root", str(root), "--out", "shards", "-j", "2", "--no-check"]
    assert main(args) == 1
    out = capsys.readouterr().out.splitlines()
    assert (
        f"bad file: {gone}: cannot read image (No such file or directory); check the dataset root"
        in out
    )
    assert (
        out[-1]
        == "folder: shards is incomplete - fix or remove the files above, then rerun with --force"
    )
    assert not (workdir / "shards" / SHARDS_FILE).exists()
    with pytest.raises(FileNotFoundError, match="is not a complete shard folder"):
        read_info(str(workdir / "shards"))
