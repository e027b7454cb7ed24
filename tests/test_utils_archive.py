"""fgvc.utils.archive.safe_extract: unsafe members refused and modes sanitized, with
tarfile's data filter and with the fallback for Pythons that lack it."""

from __future__ import annotations

import inspect
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from fgvc.utils.archive import safe_extract
from fgvc.utils.download import DownloadError


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# safe extraction, with tarfile's data filter and with the fallback for older Pythons


def _without_tar_filters(monkeypatch):
    """tarfile as in Python < 3.10.12 / 3.11.4: no filters, and extractall takes no filter
    (which it then does not apply)."""
    for name in ("data_filter", "tar_filter", "fully_trusted_filter"):
        monkeypatch.delattr(tarfile, name, raising=False)
    real = tarfile.TarFile.extractall
    trusted = {"filter": "fully_trusted"} if "filter" in inspect.signature(real).parameters else {}

    def extractall(self, path=".", members=None, *, numeric_owner=False, **kwargs):
        if kwargs:
            raise TypeError(f"extractall() got an unexpected keyword argument {next(iter(kwargs))}")
        return real(self, path, members, numeric_owner=numeric_owner, **trusted)

    monkeypatch.setattr(tarfile.TarFile, "extractall", extractall)


@pytest.fixture(params=["data_filter", "fallback"])
def tar_filters(request, monkeypatch):
    if request.param == "fallback":
        _without_tar_filters(monkeypatch)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python's tarfile has no data filter; the fallback case covers it")
    return request.param


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", **attrs):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, io.BytesIO(data) if kind == tarfile.REGTYPE else None


def _tar(path: Path, members) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, data)
    return path


def _unsafe_members(tmp_path: Path):
    outside = tmp_path / "outside"
    return {
        "absolute": [_member(str(outside / "abs.txt"))],
        "dotdot": [_member("ok.txt"), _member("../escaped.txt")],
        "symlink-out": [_member("link", tarfile.SYMTYPE, linkname="../../outside")],
        "symlink-absolute": [_member("link", tarfile.SYMTYPE, linkname=str(outside))],
        # each link alone points inside; through the first, the second leads out
        "symlink-chain": [
            _member("l1", tarfile.SYMTYPE, linkname="."),
            _member("l2", tarfile.SYMTYPE, linkname="l1/.."),
            _member("l2/escaped.txt"),
        ],
        "hardlink-out": [_member("hl", tarfile.LNKTYPE, linkname="../../secret.txt")],
        # a hard link's target is relative to the archive's root, not to its own folder
        "hardlink-deep-out": [_member("a/b/hl", tarfile.LNKTYPE, linkname="../../secret.txt")],
        "hardlink-up-one": [_member("a/hl", tarfile.LNKTYPE, linkname="../secret.txt")],
        "device": [_member("null", tarfile.CHRTYPE, devmajor=1, devminor=3)],
        "fifo": [_member("pipe", tarfile.FIFOTYPE)],
    }


_REFUSED_MEMBER = {
    "absolute": "abs.txt",
    "dotdot": "'../escaped.txt'",
    "symlink-out": "'link'",
    "symlink-absolute": "'link'",
    "symlink-chain": "'l2'",
    "hardlink-out": "'hl'",
    "hardlink-deep-out": "'a/b/hl'",
    "hardlink-up-one": "'a/hl'",
    "device": "'null'",
    "fifo": "'pipe'",
}


# why each is refused: (tarfile's data filter says, the fallback's own words)
_WHY = {
    "absolute": ("absolute path", "absolute path"),
    "dotdot": ("outside the destination", "it would land outside the destination"),
    "symlink-out": ("outside the destination", "link to '../../outside', outside"),
    "symlink-absolute": ("absolute path", "link to the absolute path"),
    "symlink-chain": ("outside the destination", "link to 'l1/..', outside"),
    "hardlink-out": ("outside the destination", "link to '../../secret.txt', outside"),
    "hardlink-deep-out": ("outside the destination", "link to '../../secret.txt', outside"),
    "hardlink-up-one": ("outside the destination", "link to '../secret.txt', outside"),
    "device": ("special file", "device, fifo or other special file"),
    "fifo": ("special file", "device, fifo or other special file"),
}


@pytest.mark.parametrize("case", sorted(_REFUSED_MEMBER))
def test_unsafe_tar_members_are_refused(tmp_path, tar_filters, case):
    (tmp_path / "secret.txt").write_text("secret")
    archive = _tar(tmp_path / "evil.tgz", _unsafe_members(tmp_path)[case])
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(DownloadError) as info:
        safe_extract(archive, tmp_path / "stage" / "inner")
    message = str(info.value)
    assert "refused unsafe member" in message and str(archive) in message
    assert _REFUSED_MEMBER[case] in message
    assert message.split("refused unsafe member ", 1)[1].startswith("'")  # the name, quoted
    builtin, fallback = _WHY[case]
    if tar_filters == "fallback":
        assert message.endswith(f"({fallback})") or f"({fallback} '" in message, message
    else:
        assert builtin in message.rsplit("(", 1)[-1], message
    assert "\n" not in message
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "stage" not in p.parts)
    assert after == before  # nothing written outside the staging folder
    assert (tmp_path / "secret.txt").stat().st_nlink == 1
    staged = tmp_path / "stage" / "inner"
    assert not [p for p in staged.rglob("*") if p.is_char_device() or p.is_fifo()]


def test_safe_tar_extracts_with_sanitized_modes(tmp_path, tar_filters):
    archive = _tar(
        tmp_path / "ok.tgz",
        [
            _member("pkg", tarfile.DIRTYPE, mode=0o777),
            _member("pkg/run.sh", data=b"#!/bin/sh\n", mode=0o6777, uid=4321, gid=4321),
            _member("pkg/data.txt", data=b"data", mode=0o666),
            _member("pkg/private.txt", data=b"p", mode=0o400),
            # others may run it, its owner may not: nobody may
            _member("pkg/odd.sh", data=b"o", mode=0o651),
            _member("pkg/alias", tarfile.SYMTYPE, linkname="data.txt"),
            # a symbolic link's target is relative to its own folder: this one stays inside
            _member("pkg/sub/up", tarfile.SYMTYPE, linkname="../data.txt"),
            _member("pkg/copy.txt", tarfile.LNKTYPE, linkname="pkg/data.txt"),
        ],
    )
    stage = tmp_path / "stage"
    safe_extract(archive, stage)
    pkg = stage / "pkg"

    def mode(name):
        return stat.S_IMODE((pkg / name).stat().st_mode)

    assert mode("run.sh") == 0o755  # no setuid/setgid, no group/other write
    assert (pkg / "run.sh").stat().st_uid == os.getuid()  # the archive's owner is not applied
    assert mode("data.txt") == 0o644
    assert mode("private.txt") == 0o600  # the owner can always read and write
    assert mode("odd.sh") == 0o640
    assert stat.S_IMODE(pkg.stat().st_mode) == 0o755  # a folder loses group/other write
    assert (pkg / "sub" / "up").read_bytes() == b"data"
    assert (pkg / "alias").is_symlink() and (pkg / "alias").read_bytes() == b"data"
    assert (pkg / "copy.txt").read_bytes() == b"data"


def test_extraction_target_must_be_empty(tmp_path):
    archive = _tar(tmp_path / "ok.tgz", [_member("a.txt")])
    (tmp_path / "stage").mkdir()
    (tmp_path / "stage" / "mine.txt").write_text("keep")
    with pytest.raises(DownloadError, match="is not empty"):
        safe_extract(archive, tmp_path / "stage")
    assert _names(tmp_path / "stage") == ["mine.txt"]


# zip archives: zipfile's own extraction rewrites unsafe names; safe_extract refuses them


def _zip(path: Path, members: list[tuple[str, bytes]], links: dict[str, str] | None = None):
    """A zip of ``(name, data)`` members (a name ending in ``/`` is a folder) and ``links``
    (name -> target), stored as Info-ZIP symlinks (the mode's S_IFLNK in external_attr)."""
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # Unix, whose modes the external attributes hold
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("../escaped.txt", "'../escaped.txt'"),
        ("pkg/../../escaped.txt", "'pkg/../../escaped.txt'"),
        ("/tmp/fgvc-absolute.txt", "'/tmp/fgvc-absolute.txt'"),
    ],
)
def test_unsafe_zip_members_are_refused_and_nothing_is_written(tmp_path, name, shown):
    archive = _zip(tmp_path / "evil.zip", [("ok.txt", b"fine"), (name, b"evil")])
    stage = tmp_path / "stage"
    with pytest.raises(DownloadError) as info:
        safe_extract(archive, stage)
    message = str(info.value)
    assert "escapes the target" in message and shown in message and str(archive) in message
    # refused before anything was extracted: not even the safe member, nor a rewritten name
    assert _names(tmp_path) == ["evil.zip", "stage"] and _names(stage) == []
    assert not Path("/tmp/fgvc-absolute.txt").exists()


def test_a_zip_extracts_exactly_its_members_and_links_stay_plain_files(tmp_path):
    """Folders, nested files and bytes as stored; a symlink member (which zipfile never
    creates as a link) is a small file holding the link's text, pointing nowhere."""
    payload = bytes(range(256)) * 40
    archive = _zip(
        tmp_path / "ok.zip",
        [("DATA/", b""), ("DATA/a.txt", b"alpha\n"), ("DATA/sub/b.bin", payload)],
        links={"DATA/link": "../../outside"},
    )
    stage = tmp_path / "stage"
    safe_extract(archive, stage)
    found = {
        str(p.relative_to(stage)): (p.read_bytes() if p.is_file() else None)
        for p in stage.rglob("*")
    }
    assert found == {
        "DATA": None,
        "DATA/a.txt": b"alpha\n",
        "DATA/sub": None,
        "DATA/sub/b.bin": payload,
        "DATA/link": b"../../outside",
    }
    assert not (stage / "DATA" / "link").is_symlink()
    assert _names(tmp_path) == ["ok.zip", "stage"]


def test_a_file_that_is_no_archive_is_one_line(tmp_path):
    text = tmp_path / "notes.tgz"
    text.write_text("not an archive\n")
    with pytest.raises(DownloadError) as info:
        safe_extract(text, tmp_path / "stage")
    assert str(info.value) == f"{text} is neither a tar nor a zip archive"
    assert _names(tmp_path / "stage") == []
