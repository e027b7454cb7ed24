"""One line and the right exit code for what users meet, through the commands as they type
them (fgvc.commands.runner: every command's error line and exit code)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import fgvc.models.authors
from fgvc.commands.main import main
from fgvc.commands.runner import run
from fgvc.models.authors import AUTHORS_CHECKPOINTS, AUTHORS_REPO, AuthorsCheckpoint
from tests.test_commands_train import subprocess_env, write_config


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for var in ("SLURM_NTASKS", "SLURM_JOB_NAME", "SLURM_JOB_ID", "FGVC_MAX_IMAGE_PIXELS"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def error_lines(capsys: pytest.CaptureFixture, prog: str) -> list[str]:
    """stderr's lines that are not blank, after checking that exactly one is the error."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"{prog}: error: ")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(lines), lines
    return errors


def tiny_config(workdir: Path, **model: object) -> Path:
    """The tests' tiny fit config with the CSV logger only and ``model`` values changed."""
    cfg = write_config(workdir, max_epochs=1)
    config = yaml.safe_load(cfg.read_text())
    config["trainer"]["logger"] = config["trainer"]["logger"][:1]
    config["model"].update(model)
    cfg.write_text(yaml.safe_dump(config))
    return cfg


def foreign_files(folder: Path) -> dict[str, Path]:
    """Files users mistake for checkpoints: text, a RAR archive, a zip of other files."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "passwd": b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n",
        "weights.rar": b"Rar!\x1a\x07\x01\x00" + bytes(range(256)) * 4,
    }
    paths = {}
    for name, data in files.items():
        paths[name] = folder / name
        paths[name].write_bytes(data)
    paths["weights.zip"] = folder / "weights.zip"
    with zipfile.ZipFile(paths["weights.zip"], "w") as archive:
        archive.writestr("readme.txt", "not a checkpoint")
    return paths


# -- item 10: a text file or an archive where a checkpoint is expected ----------------------------
def test_text_files_and_archives_as_checkpoints_are_one_line(workdir, capsys):
    image = workdir / "x.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(image)
    for name, path in foreign_files(workdir / "foreign").items():
        assert main(["export", "--model", str(path), "--out", str(workdir / "b")]) == 2, name
        assert main(["predict", str(image), "--model", str(path)]) == 2, name
        cfg = tiny_config(workdir, pretrained=str(path))
        assert main(["fit", "--config", str(cfg)]) == 2, name
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if ": error: " in line]
        assert [line.split(": error: ")[0] for line in lines] == [
            "fgvc export",
            "fgvc predict",
            "fgvc fit",
        ], err[-3000:]
        assert "Traceback" not in err and "IndexError" not in err, name
        for line in lines:
            assert str(path) in line and "it is not a checkpoint" in line, line
            assert "a .safetensors file" in line, line  # what is expected instead
    assert not (workdir / "b").exists() and not (workdir / "runs" / "tiny").exists()


# -- item 14: the ways forward of a failed download reach the user --------------------------------
def test_failed_weights_download_prints_every_way_forward_and_exits_1(
    workdir, capsys, monkeypatch, dead_url
):
    import torch

    monkeypatch.setattr(torch.hub, "_hub_dir", str(workdir / "hub"))
    entry = AuthorsCheckpoint(
        dead_url, "mpncovresnet18-12345678.pth", "12345678", 10, 8, drive_id="DRIVE-ID",
        baidu="https://pan.example/s/x",
    )  # fmt: skip
    monkeypatch.setitem(AUTHORS_CHECKPOINTS, "resnet18", entry)
    monkeypatch.setattr(fgvc.models.authors, "GDRIVE_URL", dead_url + "?id={id}")
    cfg = tiny_config(workdir, pretrained="isqrt-imagenet")
    assert main(["fit", "--config", str(cfg)]) == 1  # the work failed; the config is fine
    (line,) = error_lines(capsys, "fgvc fit")
    cached = workdir / "hub" / "checkpoints" / "mpncovresnet18-12345678.pth"
    assert line == (
        f"fgvc fit: error: could not get the authors' iSQRT-COV resnet18 ImageNet weights "
        f"(could not download {dead_url} ([Errno 111] Connection refused); without network, "
        f"fetch it elsewhere and put it at {cached}; {dead_url}?id=DRIVE-ID: cannot connect "
        f"(ConnectionError)). Other ways: put a copy of mpncovresnet18-12345678.pth at {cached}; "
        f"download their Google Drive copy or Baidu copy (https://pan.example/s/x) by hand "
        f"(links in the README of {AUTHORS_REPO}) and set `pretrained: /path/to/that/file` "
        f"(their .pth/.pth.tar files load as they are); set FGVC_ISQRT_IMAGENET_URL to a mirror "
        f"folder URL holding mpncovresnet18-12345678.pth; or use `pretrained: imagenet` "
        f"(torchvision's ImageNet backbone weights, head trained from scratch: expect accuracy "
        f"a few points lower)"
    )


# -- item 12: one rule for images no center crop can use, everywhere ---------------------------
def test_a_strip_image_is_the_same_one_line_in_check_fit_validate_and_predict(
    workdir, capsys, tiny_run
):
    from tests.test_commands_train import folder_config

    _, _, ckpt, _ = tiny_run
    cfg = folder_config(workdir, {"a": 2, "b": 2, "c": 2}, max_epochs=1)
    config = yaml.safe_load(cfg.read_text())
    config["trainer"]["logger"] = False  # nothing of a run needed: the error comes first
    cfg.write_text(yaml.safe_dump(config))
    root = workdir / "folders"

    def rule(path: Path) -> str:
        return (
            f"{path}: 5000x1 image, its long side more than 20 times its short side (a strip, "
            f"not a photograph: a center crop keeps nothing of it); crop or remove it (fgvc "
            f"data check lists all such files)"
        )

    def save_strip(path: Path) -> Path:
        Image.fromarray(np.full((1, 5000, 3), 128, np.uint8)).save(path)
        return path

    strip = save_strip(root / "train" / "a" / "strip.png")  # met in training
    assert main(["fit", "--config", str(cfg)]) == 1
    assert error_lines(capsys, "fgvc fit") == [f"fgvc fit: error: {rule(strip)}"]
    assert main(["data", "check", "folder", "--root", str(root), "--jobs", "1"]) == 1
    assert f"bad file: {rule(strip)}\n" in capsys.readouterr().out

    strip.rename(root / "val" / "b" / "strip.png")
    strip = root / "val" / "b" / "strip.png"  # met in validation
    assert main(["validate", "--config", str(cfg)]) == 1
    assert error_lines(capsys, "fgvc validate") == [f"fgvc validate: error: {rule(strip)}"]
    assert main(["predict", str(strip), "--model", str(ckpt)]) == 1
    assert f"fgvc predict: skipped {rule(strip)}\n" in capsys.readouterr().err


# -- item 13: a bad setting is a usage line naming it, whatever the command ----------------------
def test_a_bad_pixel_limit_variable_is_one_usage_line_in_every_command(
    workdir, capsys, monkeypatch, tiny_run
):
    _, _, ckpt, _ = tiny_run
    image = workdir / "x.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(image)
    cfg = tiny_config(workdir)
    monkeypatch.setenv("FGVC_MAX_IMAGE_PIXELS", "abc")
    commands = {
        "fgvc validate": ["validate", "--config", str(cfg)],
        "fgvc predict": ["predict", str(image), "--model", str(ckpt)],
        "fgvc explain": ["explain", str(image), "--model", str(ckpt), "-o", str(workdir / "e")],
        "fgvc data": ["data", "check", "folder", "--root", str(workdir), "--jobs", "1"],
    }
    for prog, argv in commands.items():
        assert main(argv) == 2, prog
        assert error_lines(capsys, prog) == [
            f"{prog}: error: FGVC_MAX_IMAGE_PIXELS='abc' is not a pixel count; set it to a "
            f"whole number such as 200000000, or to 0 or none for no limit"
        ]
    assert not (workdir / "e").exists() and not (workdir / "runs" / "tiny").exists()


def test_a_single_class_dataset_is_one_usage_line(workdir, capsys):
    from tests.test_commands_train import folder_config

    cfg = folder_config(workdir, {"a": 2}, max_epochs=1)
    for name in "bc":
        shutil.rmtree(workdir / "folders" / "train" / name)
    assert main(["fit", "--config", str(cfg)]) == 2
    assert error_lines(capsys, "fgvc fit") == [
        f"fgvc fit: error: a classifier needs at least 2 classes; the train split of "
        f"{workdir / 'folders'} has 1 ('a')"
    ]


@pytest.mark.slow
def test_a_read_only_home_with_wandb_is_one_line_naming_the_folder_and_the_fix(workdir):
    import os
    import subprocess
    import sys

    from tests.test_commands_train import subprocess_env

    cfg = write_config(workdir, max_epochs=1)  # CSV and W&B (offline) loggers
    home = workdir / "home"
    home.mkdir(mode=0o555)
    env = {k: v for k, v in subprocess_env().items() if not k.startswith(("WANDB_", "XDG_"))}
    env.update(HOME=str(home), MPLCONFIGDIR=str(workdir / "mpl"), WANDB_SILENT="true")
    proc = subprocess.run(
        ["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
         sys.executable, "-m", "fgvc", "fit", "--config", str(cfg)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert proc.returncode == 2 and errors == [
        f"fgvc fit: error: W&B cannot write its cache and logs in {home}/.cache/wandb "
        f"(Permission denied; the folder comes from HOME={home}): set WANDB_CACHE_DIR (or "
        f"HOME) to a writable folder, or run without W&B: WANDB_MODE=disabled"
    ], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and " INFO " not in proc.stderr  # no wandb-core log
    assert os.listdir(home) == [] and not (workdir / "runs" / "tiny").exists()


def test_explain_on_a_full_disk_names_the_file(workdir, tiny_run):
    """A write that fails part-way (here the file size limit, as a full disk would) is
    one line naming the file, not Pillow's "'_idat' object has no attribute 'fileno'"."""
    import resource
    import signal
    import subprocess
    import sys

    from tests.test_commands_train import subprocess_env

    _, _, ckpt, _ = tiny_run
    image = workdir / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(image)

    def limit_file_size() -> None:  # in the child: writes past 2 KB fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    out = workdir / "explained"
    proc = subprocess.run(
        [sys.executable, "-m", "fgvc", "explain", str(image), "--model", str(ckpt),
         "-o", str(out), "--no-progress", "--device", "cpu"],
        cwd=workdir, env=subprocess_env(), capture_output=True, text=True, timeout=600,
        preexec_fn=limit_file_size,
    )  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert proc.returncode == 1 and errors == [
        f"fgvc explain: error: file too large: {out}/001-x.png"
    ], proc.stderr[-2000:]
    assert not out.exists() and [p.name for p in workdir.iterdir()] == ["x.png"]


@pytest.mark.slow
def test_one_failing_rank_is_its_line_and_the_other_rank_stops_quietly(workdir):
    import subprocess
    import sys

    from tests.test_commands_train import subprocess_env

    cfg = write_config(workdir, devices=2, strategy="ddp", max_epochs=1)
    config = yaml.safe_load(cfg.read_text())
    config["trainer"]["logger"] = config["trainer"]["logger"][:1]
    config["trainer"]["callbacks"] = [{"class_path": "tests.cli_helpers.FailOnRank"}]
    cfg.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "fgvc", "fit", "--config", str(cfg)],
        cwd=workdir, env=subprocess_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if "rror" in line]
    assert proc.returncode == 1 and errors == [
        "fgvc fit: error: /data/rank1.jpg: cannot decode image (planted)",
        "fgvc fit: error: stopped: another process of this run failed (its error is above)",
    ], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "[rank0]" not in proc.stderr


# -- one vocabulary: a flag means the same in every command ------------------------------------
def _parsers() -> dict[str, argparse.ArgumentParser]:
    """Every fgvc parser that is not LightningCLI's, by its prog."""
    from fgvc.commands import data, explain, export, predict

    parsers = [predict.build_parser(), explain.build_parser(), export.build_parser()]
    top = data._parser()
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers += list(action.choices.values())
    return {parser.prog: parser for parser in parsers}


def _visible(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        flag: action
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for flag in action.option_strings
    }


def test_shared_flags_mean_the_same_in_every_command():
    parsers = _parsers()
    assert {"fgvc predict", "fgvc explain", "fgvc export", "fgvc data check"} <= set(parsers)
    seen: dict[str, list[tuple[str, argparse.Action]]] = {}
    for prog, parser in parsers.items():
        for flag, action in _visible(parser).items():
            seen.setdefault(flag, []).append((prog, action))
    for prog, action in seen["--out"]:  # always a folder
        assert "folder" in (action.help or "").lower() or action.metavar == "DIR", prog
    for prog, action in seen["-o"]:  # -o, where a command has it, is --out
        assert "--out" in action.option_strings, prog
    for prog, action in seen["--workers"]:  # always data-loader workers
        assert "data-loader workers" in action.help, prog
    assert [prog for prog, _ in seen["--jobs"]] == ["fgvc data check", "fgvc data shard"]
    for prog, action in seen["--jobs"]:  # always process counts
        assert "processes" in action.help, prog
    # the model source, device and runs root: the same values and defaults
    for flag in ("--model", "--device", "--runs-root"):
        first = seen[flag][0][1]
        for prog, action in seen[flag][1:]:
            same = (action.default, action.choices, action.type, action.nargs)
            assert same == (first.default, first.choices, first.type, first.nargs), (flag, prog)
    for prog, action in seen["--model"]:
        assert ".ckpt" in action.help and "run folder" in action.help, prog


def test_data_check_jobs_and_its_old_spelling(tmp_path, capsys):
    from fgvc.commands.data import main as data_main
    from tests.replicas import make_folders

    make_folders(tmp_path / "folder", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    argv = ["check", "folder", "--root", str(tmp_path)]
    assert data_main([*argv, "--jobs", "2"]) == 0
    new = capsys.readouterr()
    assert "with 2 processes" in new.out + new.err and "warning" not in new.err
    assert data_main([*argv, "--workers", "1"]) == 0  # scripts written before --jobs
    old = capsys.readouterr()
    assert "with 1 processes" in old.out + old.err
    assert old.err.count("warning") == 1
    assert "fgvc data check: warning: --workers is deprecated; use --jobs N" in old.err
    assert data_main([*argv, "-j", "0"]) == 2
    assert "--jobs must be >= 1, got 0" in capsys.readouterr().err


# -- exit codes 130 / 143 outside fit -----------------------------------------------------------
def test_sigterm_ends_a_command_with_143_one_line_and_its_cleanup(capsys):
    from fgvc.commands.runner import sigterm_exits

    previous = signal.getsignal(signal.SIGTERM)
    cleaned = []

    def body() -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises in this frame at once
            return 0
        finally:
            cleaned.append(True)

    with sigterm_exits():
        started = time.monotonic()
        assert run("fgvc predict", body) == 143
    assert time.monotonic() - started < 4 and cleaned == [True]
    assert capsys.readouterr().err == "fgvc predict: error: stopped by SIGTERM\n"
    assert signal.getsignal(signal.SIGTERM) is previous  # put back


def test_ctrl_c_ends_a_command_with_130(capsys):
    def body() -> int:
        raise KeyboardInterrupt

    assert run("fgvc explain", body) == 130
    assert capsys.readouterr().err == "fgvc explain: error: interrupted\n"


def test_sigterm_reaches_a_running_command_in_a_child(workdir):
    """The ``fgvc`` process itself: SIGTERM while ``data download`` waits on a server that
    never answers exits 143 with one line and leaves nothing of the download behind."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    env = {**subprocess_env(), "FGVC_CUB_URL": f"http://127.0.0.1:{port}/CUB_200_2011.tgz"}
    root = workdir / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fgvc", "data", "download", "cub", "--root", str(root),
         "--no-progress"],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    server.settimeout(120)
    with server, server.accept()[0]:  # the request has come: the child waits for an answer
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["fgvc data: error: stopped by SIGTERM"]
    left = [p.name for p in root.rglob("*") if p.is_file()] if root.exists() else []
    assert left == [], left
