"""fgvc.models.authors: the chain of sources for the authors' ImageNet checkpoints - a dead
server falls through to the next, what arrives from Google Drive is checked before it is
kept, and the source used is recorded (loopback servers stand in for the real ones)."""

from __future__ import annotations

import hashlib

import pytest
import torch

import fgvc.models.authors
from fgvc.errors import DownloadError
from fgvc.models.authors import AUTHORS_CHECKPOINTS, AuthorsCheckpoint
from tests.test_models_pretrained import (
    _assert_loaded,
    _small_model,
    hub_dir,
    small_sd,
)

__all__ = ["hub_dir", "small_sd"]  # fixtures shared with test_models_pretrained


def drive_copy(folder, small_sd) -> tuple[str, bytes]:
    """A Drive copy as the authors' issues describe them: a training checkpoint (.pth.tar:
    ``{"state_dict": ...}`` with DataParallel's ``module.``), not the hub file itself."""
    path = folder / "drive-copy.pth.tar"
    torch.save({"epoch": 65, "state_dict": {f"module.{k}": v for k, v in small_sd.items()}}, path)
    return path.name, path.read_bytes()


def entry_for(url: str, data: bytes | None = None, **kwargs) -> AuthorsCheckpoint:
    size = len(data) / 1e6 if data else None
    return AuthorsCheckpoint(
        url, "mpncovresnet18-12345678.pth", "12345678", 10, 16, drive_id="ID", size_mb=size,
        **kwargs,
    )  # fmt: skip


def test_a_dead_authors_server_falls_through_to_google_drive(
    http_server, hub_dir, small_sd, monkeypatch, dead_url
):
    base, folder = http_server
    name, data = drive_copy(folder, small_sd)
    monkeypatch.setitem(AUTHORS_CHECKPOINTS, "resnet18", entry_for(dead_url, data))
    monkeypatch.setattr(fgvc.models.authors, "GDRIVE_URL", f"{base}/{name}?id={{id}}")
    model = _small_model(pretrained="isqrt-imagenet")
    _assert_loaded(model, small_sd)
    kept = hub_dir / "checkpoints" / "mpncovresnet18-gdrive.pth"
    assert kept.read_bytes() == data  # kept in the cache once it loaded
    record = model.pretrained_record
    assert (record.source, record.file) == ("google-drive", str(kept))
    assert record.sha256 == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in kept.parent.iterdir() if not p.name.endswith(".lock")) == [
        kept.name
    ]

    # every server gone: the cached Drive copy answers
    (folder / name).unlink()
    again = _small_model(pretrained="isqrt-imagenet")
    _assert_loaded(again, small_sd)
    assert again.pretrained_record.source == "cache"


@pytest.mark.parametrize("answer", ["error page", "another network"])
def test_what_drive_sends_is_checked_before_it_is_kept(
    http_server, hub_dir, small_sd, monkeypatch, dead_url, answer
):
    """An HTML page (too small) or a checkpoint of another network (right size, wrong
    shapes) is refused, nothing is cached, and the one line says what each source did."""
    base, folder = http_server
    name, data = drive_copy(folder, small_sd)
    if answer == "error page":
        (folder / name).write_text("<html>Google Drive - quota exceeded</html>")
    else:
        other = {k: v[..., :1].clone() if v.dim() == 4 else v for k, v in small_sd.items()}
        torch.save(other, folder / name)
        data = (folder / name).read_bytes()
    monkeypatch.setitem(AUTHORS_CHECKPOINTS, "resnet18", entry_for(dead_url, data, baidu="B"))
    monkeypatch.setattr(fgvc.models.authors, "GDRIVE_URL", f"{base}/{name}?id={{id}}")
    with pytest.raises(DownloadError) as info:
        _small_model(pretrained="isqrt-imagenet")
    message = str(info.value)
    assert "\n" not in message and dead_url in message and "Baidu copy (B)" in message
    if answer == "error page":
        assert (
            "?id=ID gave 42 bytes, not the 44.8" in message
            and "(an error or quota page)" in message
        )
    else:
        assert "drive" in message and "does not match the model" in message
    cache = hub_dir / "checkpoints"
    assert not [p for p in cache.iterdir() if p.suffix in (".pth", ".part")]


def test_a_file_under_the_hub_name_must_be_the_published_one(
    hub_dir, small_sd, monkeypatch, dead_url
):
    (hub_dir / "checkpoints").mkdir(parents=True)
    placed = hub_dir / "checkpoints" / "mpncovresnet18-12345678.pth"
    torch.save(small_sd, placed)  # loads, but its sha256 does not start with 12345678
    monkeypatch.setitem(AUTHORS_CHECKPOINTS, "resnet18", entry_for(dead_url))
    monkeypatch.setattr(fgvc.models.authors, "GDRIVE_URL", dead_url + "?id={id}")
    with pytest.raises(DownloadError, match="is not the published mpncovresnet18-12345678.pth"):
        _small_model(pretrained="isqrt-imagenet")
    assert placed.is_file()  # the user's file is left where it was


def test_the_registry_knows_every_published_copy():
    r50, r101 = AUTHORS_CHECKPOINTS["resnet50"], AUTHORS_CHECKPOINTS["resnet101"]
    assert r50.drive_id == "19TWen7p9UDyM0Ueu9Gb22NtouR109C6j" and r50.size_mb == 217.3
    assert r101.drive_id == "1riur7v3rZ7vnrdj2UZ7EBaTKEGSccYwg" and r101.size_mb == 289.9
    assert r50.baidu.startswith("https://pan.baidu.com/s/") and r50.drive_filename == (
        "mpncovresnet50-gdrive.pth"
    )


@pytest.mark.slow
def test_the_source_of_the_starting_weights_is_recorded_in_the_run(tmp_path, monkeypatch):
    import json

    import yaml

    from fgvc.commands.main import main
    from fgvc.models import build_model
    from tests.test_commands_train import write_config

    monkeypatch.chdir(tmp_path)
    cfg = write_config(tmp_path, max_epochs=1)
    model = yaml.safe_load(cfg.read_text())["model"]
    start = tmp_path / "start.pth"
    net = build_model("resnet18", num_classes=3, reduce_dim=model["reduce_dim"], head=model["head"])
    torch.save(net.state_dict(), start)
    assert main(["fit", "--config", str(cfg), "--model.pretrained", str(start)]) == 0
    record = json.loads((tmp_path / "runs" / "tiny" / "version_0" / "run.json").read_text())
    assert record["pretrained"] == {"source": "file", "file": str(start), "sha256": None}
