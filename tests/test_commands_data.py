"""``fgvc data download|check|synth``; downloads served from a loopback HTTP server."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

import fgvc.data.download as download
from fgvc.commands.data import main
from fgvc.commands.main import main as fgvc_main
from fgvc.data import CUB200, FGVCAircraft
from fgvc.data.download import DatasetSource
from fgvc.train.cli import resolve_config
from tests.replicas import make_aircraft, make_cars_folders, make_cub, make_folders


def _tar(archive: Path, source_root: Path, members: list[str]) -> str:
    with tarfile.open(archive, "w:gz") as tar:
        for member in members:
            tar.add(source_root / member, arcname=member)
    return hashlib.sha256(archive.read_bytes()).hexdigest()


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.fixture
def cub_archive(tmp_path, http_server):
    base_url, served = http_server
    replica = make_cub(tmp_path / "build")
    sha = _tar(served / "CUB_200_2011.tgz", tmp_path / "build", ["CUB_200_2011", "attributes.txt"])
    source = DatasetSource(
        url=f"{base_url}/CUB_200_2011.tgz",
        filename="CUB_200_2011.tgz",
        folder="CUB_200_2011",
        sha256=sha,
    )
    return source, replica


def test_download_cub_through_loopback(tmp_path, monkeypatch, cub_archive, capsys):
    source, replica = cub_archive
    monkeypatch.setitem(download.SOURCES, "cub", source)
    root = tmp_path / "data"
    assert main(["download", "cub", "--root", str(root), "--no-progress"]) == 0
    assert _leftovers(root) == ["CUB_200_2011"]  # no archive, no stray attributes.txt, no temp
    dataset = CUB200(root, "test")
    assert dataset.classes == replica.classes
    assert [Path(p).relative_to(root) for p, _ in dataset.samples] == [
        Path(p).relative_to(tmp_path / "build") for p, _ in replica.samples["test"]
    ]
    # a second run leaves what is there alone
    marker = root / "CUB_200_2011" / "images.txt"
    before = marker.stat().st_mtime_ns
    assert fgvc_main(["data", "download", "cub", "--root", str(root), "--no-progress"]) == 0
    assert marker.stat().st_mtime_ns == before
    assert "CUB_200_2011" in capsys.readouterr().out


def test_download_keep_archive(tmp_path, monkeypatch, cub_archive):
    source, _ = cub_archive
    monkeypatch.setitem(download.SOURCES, "cub", source)
    root = tmp_path / "data"
    args = ["download", "cub", "--root", str(root), "--no-progress", "--keep-archive"]
    assert main(args) == 0
    assert _leftovers(root) == ["CUB_200_2011", "CUB_200_2011.tgz"]


def test_checksum_mismatch_keeps_nothing(tmp_path, monkeypatch, cub_archive, capsys):
    source, _ = cub_archive
    wrong = DatasetSource(source.url, source.filename, source.folder, sha256="0" * 64)
    monkeypatch.setitem(download.SOURCES, "cub", wrong)
    root = tmp_path / "data"
    assert main(["download", "cub", "--root", str(root), "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert "checksum mismatch" in error and source.url in error
    assert _leftovers(root) == []


def test_md5_only_sources_are_verified(tmp_path, monkeypatch, http_server, capsys):
    base_url, served = http_server
    make_aircraft(tmp_path / "build")
    _tar(served / "air.tar.gz", tmp_path / "build", ["fgvc-aircraft-2013b"])
    md5 = hashlib.md5((served / "air.tar.gz").read_bytes()).hexdigest()
    root = tmp_path / "data"
    bad = DatasetSource(f"{base_url}/air.tar.gz", "air.tar.gz", "fgvc-aircraft-2013b", md5="f" * 32)
    monkeypatch.setitem(download.SOURCES, "aircraft", bad)
    assert main(["download", "aircraft", "--root", str(root), "--no-progress"]) == 1
    assert "md5" in capsys.readouterr().err and _leftovers(root) == []
    good = DatasetSource(bad.url, bad.filename, bad.folder, md5=md5)
    monkeypatch.setitem(download.SOURCES, "aircraft", good)
    assert main(["download", "aircraft", "--root", str(root), "--no-progress"]) == 0
    assert len(FGVCAircraft(root, "test")) == 4


def test_archive_escaping_the_root_is_refused(tmp_path, monkeypatch, http_server, capsys):
    base_url, served = http_server
    archive = served / "evil.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in (("CUB_200_2011/images.txt", b"1 a.jpg\n"), ("../escaped.txt", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(
        download.SOURCES,
        "cub",
        DatasetSource(f"{base_url}/evil.tgz", "evil.tgz", "CUB_200_2011", sha),
    )
    root = tmp_path / "deep" / "data"
    assert main(["download", "cub", "--root", str(root), "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert "refused" in error and "escaped.txt" in error
    assert not list(tmp_path.rglob("escaped.txt"))
    assert "CUB_200_2011" not in _leftovers(root)
    assert not [p for p in _leftovers(root) if p.startswith(".")]


def test_offline_download_names_the_url(tmp_path, monkeypatch, dead_url, capsys):
    monkeypatch.setitem(
        download.SOURCES, "cub", DatasetSource(dead_url, "x.tgz", "CUB_200_2011", sha256="0" * 64)
    )
    assert main(["download", "cub", "--root", str(tmp_path), "--no-progress"]) == 1
    assert dead_url in capsys.readouterr().err
    assert _leftovers(tmp_path) == []


def test_cars_download_explains_sources_and_layouts(tmp_path, capsys):
    assert main(["download", "cars", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "pytorch/vision/issues/7545" in out and "names.csv" in out and "cars_annos.mat" in out
    make_cars_folders(tmp_path)
    assert main(["download", "cars", "--root", str(tmp_path)]) == 0
    assert "found: Stanford Cars in" in capsys.readouterr().out


# -- check ---------------------------------------------------------------------------------------
def test_check_clean_replicas_pass(tmp_path, capsys):
    make_cub(tmp_path / "cub")
    make_aircraft(tmp_path / "air")
    make_cars_folders(tmp_path / "cars")
    make_folders(tmp_path / "folder", {"train": {"a": 2, "b": 2}, "val": {"a": 1}})
    for name, root in (("cub", "cub"), ("aircraft", "air"), ("cars", "cars"), ("folder", "folder")):
        assert main(["check", name, "--root", str(tmp_path / root), "--workers", "1"]) == 0
        assert "- ok" in capsys.readouterr().out


def test_check_reports_corrupt_and_missing_files_using_processes(tmp_path, capsys):
    replica = make_cub(tmp_path)
    truncated, _ = replica.samples["train"][0]
    missing, _ = replica.samples["test"][0]
    data = Path(truncated).read_bytes()
    Path(truncated).write_bytes(data[: len(data) // 2])
    Path(missing).unlink()
    assert main(["check", "cub", "--root", str(tmp_path), "--workers", "2"]) == 1
    out = capsys.readouterr().out
    assert f"bad file: {truncated}" in out and f"bad file: {missing}" in out
    assert "2 bad files" in out and "FAILED" in out


def test_check_reports_count_mismatch_with_numbers(tmp_path, capsys):
    make_cub(tmp_path, num_classes=200, per_class=(1, 1), size=(8, 8))
    assert main(["check", "cub", "--root", str(tmp_path), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "train: 200 images, published 5994" in out and "test: 200 images, published 5794" in out


def test_check_broken_annotations_and_missing_dataset(tmp_path, capsys):
    make_aircraft(tmp_path)
    (tmp_path / "fgvc-aircraft-2013b" / "data" / "images_family_val.txt").unlink()
    assert main(["check", "aircraft", "--root", str(tmp_path), "--workers", "1"]) == 1
    assert "images_family_val.txt" in capsys.readouterr().out
    assert main(["check", "cars", "--root", str(tmp_path / "nothing"), "--workers", "1"]) == 1


# -- synth and usage -----------------------------------------------------------------------------
def test_synth_command(tmp_path, capsys):
    args = ["synth", "--root", str(tmp_path), "--classes", "3", "--train-per-class", "2"]
    args += ["--test-per-class", "1", "--size", "40", "--seed", "3"]
    assert main(args) == 0
    assert len(CUB200(tmp_path / "synthetic", "train")) == 6
    capsys.readouterr()
    assert main(args) == 2  # never overwritten: a usage error, one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fgvc data: error: ") and "exists" in err[0]
    assert main(["check", "synthetic", "--root", str(tmp_path), "--workers", "1"]) == 0


def test_usage_errors_return_2(capsys):
    assert main([]) == 2
    assert main(["download", "imagenet-21k"]) == 2
    assert main(["--help"]) == 0


@pytest.mark.slow
def test_fit_on_an_empty_data_folder_downloads_then_trains(
    tmp_path, monkeypatch, cub_archive, capsys
):
    """A benchmark config with download: true, an empty data folder and a mirror URL: one
    `fgvc fit` fetches, verifies, extracts, trains and exports."""
    import yaml

    source, replica = cub_archive
    # the registry's own URL would fail here; the mirror variable points at the loopback copy
    registry = DatasetSource("https://unreachable.invalid/CUB_200_2011.tgz", source.filename,
                             source.folder, sha256=source.sha256)  # fmt: skip
    monkeypatch.setitem(download.SOURCES, "cub", registry)
    monkeypatch.setenv("FGVC_CUB_URL", source.url)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    cub = Path(__file__).resolve().parents[1] / "configs" / "cub.yaml"
    assert resolve_config(["fit", "--config", str(cub)])["data"]["init_args"]["download"]
    config = {  # the benchmark config, composed with tiny sizes as a user would
        "config": [str(cub)],
        "trainer": {"accelerator": "cpu", "devices": 1, "precision": "32-true", "max_epochs": 1},
        "model": {"arch": "resnet18", "reduce_dim": 8, "head": {"iterations": 3}},
        "data": {"init_args": {"root": "empty", "image_size": 32, "batch_size": 2}},
    }
    config["model"]["pretrained"] = None
    config["data"]["init_args"]["num_workers"] = 0
    (tmp_path / "cub.yaml").write_text(yaml.safe_dump(config))
    assert fgvc_main(["fit", "--config", "cub.yaml"]) == 0, capsys.readouterr().err[-2000:]
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["CUB_200_2011"]
    assert CUB200(tmp_path / "empty", "train").classes == replica.classes
    assert (tmp_path / "runs" / "cub" / "version_0" / "export" / "model.onnx").is_file()
