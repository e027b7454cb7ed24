"""`fgvc fit|validate|test`: config, links, run folders, W&B offline, DDP."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fgvc.commands.main import main
from tests.cli_helpers import CodePayload
from tests.wandb_records import artifacts, config_keys, history, history_keys, last_table

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 3


def write_config(tmp: Path, **trainer) -> Path:
    config = {
        "seed_everything": 7,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": 2,
            "log_every_n_steps": 1,
            "default_root_dir": str(tmp / "runs"),
            "enable_model_summary": False,
            "logger": [
                {
                    "class_path": "fgvc.train.loggers.CSVLogger",
                    "init_args": {"save_dir": str(tmp / "runs"), "name": "tiny"},
                },
                {
                    "class_path": "fgvc.train.loggers.WandbLogger",
                    "init_args": {
                        "project": "fgvc-tests",
                        "name": "tiny",
                        "save_dir": str(tmp / "runs"),
                        "mode": "offline",
                    },
                },
            ],
            **trainer,
        },
        "model": {
            "arch": "resnet18",
            "reduce_dim": 8,
            "head": {"iterations": 3},
            "pretrained": None,
            "lr": 0.01,
            "scheduler": "cosine",
            "warmup_epochs": 0.5,
        },
        "data": {
            "class_path": "fgvc.data.SyntheticDataModule",
            "init_args": {
                "root": str(tmp / "data"),
                "batch_size": 4,
                "num_workers": 0,
                "image_size": 32,
                "val_split": 0.25,
                "synth_classes": NUM_CLASSES,
                "synth_train_per_class": 8,
                "synth_test_per_class": 2,
                "synth_image_size": 40,
            },
        },
    }
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def last_value(rows: list[dict[str, str]], key: str) -> float:
    return float([r[key] for r in rows if r.get(key)][-1])


def wandb_run_files(tmp: Path) -> list[Path]:
    """The offline W&B runs' logs, the last written last (folder names hold the start time
    to the second only, and a continued run's may repeat the first one's)."""
    files = (tmp / "runs" / "wandb").glob("offline-run-*/run-*.wandb")
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def wandb_run_file(tmp: Path) -> Path:
    (run_file,) = wandb_run_files(tmp)
    return run_file


def check_per_class_reports(
    folder: Path, run_file: Path, stage: str, rows: list[dict[str, str]], tta: bool
) -> None:
    """``<stage>_per_class.csv`` and the W&B tables against the logged metrics: the CSV's
    accuracies average to mean_class_acc, its correct / support is top1 (the TTA figures
    when TTA is on: the reports count what the run calls its accuracy), every class has its
    2 images, and the most-confused pairs account for each class's errors. The validation
    CSV is the best epoch's (the first with the highest val/top1, as the best checkpoint),
    the test CSV the test's."""
    suffix = "_tta" if tta else ""
    evals = [r for r in rows if r.get(f"{stage}/top1")]
    scores = [float(r[f"{stage}/top1"]) for r in evals]
    index = scores.index(max(scores)) if stage == "val" else len(evals) - 1
    chosen = evals[index]
    with open(folder / f"{stage}_per_class.csv") as f:
        per_class = list(csv.DictReader(f))
    names = [r["name"] for r in per_class]
    support = [int(r["support"]) for r in per_class]
    correct = [int(r["correct"]) for r in per_class]
    accuracy = [float(r["accuracy"]) for r in per_class]
    assert support == [2] * NUM_CLASSES  # stratified: 2 images of each class
    for s, c, a in zip(support, correct, accuracy):
        assert a == pytest.approx(c / s, abs=5e-5)
    mean_class_acc = float(chosen[f"{stage}/mean_class_acc{suffix}"])
    assert sum(accuracy) / len(accuracy) == pytest.approx(mean_class_acc, abs=1e-4)
    assert sum(correct) / sum(support) == pytest.approx(
        float(chosen[f"{stage}/top1{suffix}"]), abs=1e-6
    )
    # W&B: the same figures, as values (a table for every evaluation)
    columns, table = last_table(run_file, f"{stage}/per_class_accuracy", index)
    assert columns == ["class", "name", "support", "accuracy"]
    assert [row[:3] for row in table] == [[i, n, s] for i, (n, s) in enumerate(zip(names, support))]
    assert [row[3] for row in table] == pytest.approx(accuracy, abs=5e-5)
    logged = [
        row[f"{stage}/mean_class_acc{suffix}"]
        for row in history(run_file)
        if f"{stage}/mean_class_acc{suffix}" in row
    ]
    assert logged[index] == pytest.approx(mean_class_acc, abs=1e-6)
    columns, pairs = last_table(run_file, f"{stage}/most_confused", index)
    assert columns == ["true", "predicted", "count", "fraction of true class"]
    errors = {name: 0 for name in names}
    for true, predicted, count, fraction in pairs:
        assert true != predicted and count > 0
        assert fraction == pytest.approx(count / support[names.index(true)])
        errors[true] += count
    assert errors == {n: s - c for n, s, c in zip(names, support, correct)}
    counts = [count for _, _, count, _ in pairs]
    assert counts == sorted(counts, reverse=True)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    return tmp_path


def subprocess_env() -> dict[str, str]:
    """The environment (as ``workdir`` set it) for ``python -m fgvc`` in a child."""
    return {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.mark.slow
def test_fit_then_test_round_trip(workdir, capsys, monkeypatch):
    secret = "fgvc-test-secret-" + "7" * 23  # a W&B API key's length; no network: offline
    monkeypatch.setenv("WANDB_API_KEY", secret)
    cfg = write_config(workdir)
    # validation with flip TTA (the default), the test without: both kinds of reports
    assert main(["fit", "--config", str(cfg), "--model.test_tta", "false"]) == 0
    summary = capsys.readouterr().out
    run = workdir / "runs" / "tiny" / "version_0"
    assert "best val/top1" in summary and str(run) in summary

    # resolved config saved (re-usable as is); the values linked from the data are in
    # the model's hparams.yaml and its checkpoints
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["reduce_dim"] == 8 and saved["data"]["init_args"]["image_size"] == 32
    hparams = yaml.safe_load((run / "hparams.yaml").read_text())
    assert hparams["num_classes"] == NUM_CLASSES
    names = [f"{c + 1:03d}.texture_{c:02d}" for c in range(NUM_CLASSES)]
    assert hparams["class_names"] == names
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(p.startswith("best-epoch") for p in ckpts)
    rows = read_metrics(run)
    for key in (
        "train/loss_epoch",
        "train/top1",
        "val/loss",
        "val/top1",
        "val/mean_class_acc",
        "val/top1_tta",
        "lr-SGD/classifier",
    ):
        assert any(r.get(key) for r in rows), key
    with open(run / "val_per_class.csv") as f:
        per_class = list(csv.DictReader(f))
    assert [r["name"] for r in per_class] == names
    assert sum(int(r["support"]) for r in per_class) == 6  # 25% of 24 training images
    assert (run / "val_split.json").is_file()
    check_per_class_reports(run, wandb_run_file(workdir), "val", rows, tta=True)

    # W&B offline run: metrics, config, reports and the best checkpoint as an artifact
    run_file = wandb_run_file(workdir)
    keys = history_keys(run_file)
    for key in (
        "val/top1",
        "val/top1_tta",
        "val/mean_class_acc",
        "train/loss_epoch",
        "lr-SGD/backbone",
        "val/per_class_accuracy/_type",
        "val/samples/_type",
        "val/most_confused/_type",
        "val/explain/_type",
        "val/explain_sheet/_type",
    ):
        assert key in keys, key
    assert {"arch", "lr", "num_classes", "batch_size"} <= config_keys(run_file)
    logged = artifacts(run_file)
    assert any(kind == "model" and "best" in aliases for _, kind, aliases in logged)
    assert any(kind == "export" and "best" in aliases for _, kind, aliases in logged)
    # fit exported its best checkpoint by itself
    bundle = yaml.safe_load((run / "export" / "model.json").read_text())
    assert bundle["class_names"] == names and bundle["checkpoint"]["file"].startswith("best-")
    assert bundle["preprocessing"]["tta"] is False  # the run's test_tta
    assert (run / "export" / "model.onnx").is_file() and "export" in summary
    # and Grad-CAM of validation images from that bundle: one per class, plus pairs
    explained = sorted(p.name for p in (run / "explain").glob("*.png"))
    assert "contact_sheet.png" in explained and len(explained) >= NUM_CLASSES + 1
    for path in (workdir / "runs").rglob("*"):  # the key is in no log, config or export
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path

    # the test of the run's checkpoint adds to that run; nothing of it is overwritten
    before = (run / "config.yaml").read_bytes()
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    assert main(["test", "--config", str(run / "config.yaml"), "--ckpt_path", str(best)]) == 0
    test_run = run
    assert not (workdir / "runs" / "tiny" / "version_1").exists()
    assert (run / "config.yaml").read_bytes() == before and (run / "config.test-1.yaml").is_file()
    rows = read_metrics(test_run)
    for key in ("test/top1", "test/mean_class_acc", "test/loss"):
        assert any(r.get(key) for r in rows), key
    assert not any(r.get("test/top1_tta") for r in rows)  # the run's test_tta: false
    with open(test_run / "test_per_class.csv") as f:
        assert sum(int(r["support"]) for r in csv.DictReader(f)) == NUM_CLASSES * 2
    check_per_class_reports(test_run, wandb_run_files(workdir)[-1], "test", rows, tta=False)


def test_unknown_config_key_fails_clearly(workdir, capsys):
    cfg = write_config(workdir)
    assert main(["fit", "--config", str(cfg), "--model.learning_rate", "0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fgvc fit: error: "), err
    assert "learning_rate" in err[0]
    config = yaml.safe_load(cfg.read_text())
    config["model"]["learning_rate"] = 0.1  # the same mistake inside the config file
    cfg.write_text(yaml.safe_dump(config))
    assert main(["validate", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fgvc validate: error: "), err
    assert "learning_rate" in err[0]


def test_bad_config_value_is_one_line(workdir, capsys):
    cfg = write_config(workdir)
    assert main(["fit", "--config", str(cfg), "--model.lr", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fgvc fit: error: model.lr must be > 0, got -1.0"]
    assert not (workdir / "runs" / "tiny").exists()


@pytest.mark.slow
def test_two_process_ddp_metrics_cover_both_shards(workdir):
    cfg = write_config(workdir, devices=2, strategy="ddp", max_epochs=1)
    proc = subprocess.run(
        [sys.executable, "-m", "fgvc", "fit", "--config", str(cfg)],
        cwd=workdir,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the recipe's lr (0.01 for 10 images) scaled to 2 processes x 4 images
    assert "learning rate 0.008 (linear scaling" in proc.stderr
    assert "global batch 8 = 2 process(es) x 4 images" in proc.stderr
    run = workdir / "runs" / "tiny" / "version_0"
    ddp_top1 = last_value(read_metrics(run), "val/top1")
    ddp_loss = last_value(read_metrics(run), "val/loss")
    with open(run / "val_per_class.csv") as f:
        assert sum(int(r["support"]) for r in csv.DictReader(f)) == 6  # both shards of 3

    # the same weights validated in one process give the same figures
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    single = write_config(workdir, max_epochs=1)
    assert main(["validate", "--config", str(single), "--ckpt_path", str(last)]) == 0
    rows = read_metrics(workdir / "runs" / "tiny" / "version_1")
    assert last_value(rows, "val/top1") == pytest.approx(ddp_top1, abs=1e-6)
    assert last_value(rows, "val/loss") == pytest.approx(ddp_loss, rel=1e-4)


def folder_config(workdir: Path, val: dict[str, int], **trainer) -> Path:
    """The tiny config on a class-folder dataset: classes a, b, c with 4 training images
    each, ``val`` as given (class -> image count)."""
    from tests.replicas import make_folders

    make_folders(workdir / "folders", {"train": {name: 4 for name in "abc"}, "val": val})
    cfg = write_config(workdir, **trainer)
    config = yaml.safe_load(cfg.read_text())
    config["data"] = {
        "class_path": "fgvc.data.FolderDataModule",
        "init_args": {
            "root": str(workdir / "folders"),
            "batch_size": 2,
            "num_workers": 0,
            "image_size": 32,
        },
    }
    cfg.write_text(yaml.safe_dump(config))
    return cfg


def run_fgvc(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fgvc", *args],
        cwd=workdir,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_validate_on_three_processes_counts_every_image_once(workdir):
    """11 validation images on 3 processes (4, 4, 3): every figure equals one process's."""
    cfg = folder_config(workdir, {"a": 4, "b": 4, "c": 3}, max_epochs=1)
    assert main(["fit", "--config", str(cfg)]) == 0
    ckpt = workdir / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    assert main(["validate", "--config", str(cfg), "--ckpt_path", str(ckpt)]) == 0
    proc = run_fgvc(
        workdir, "validate", "--config", str(cfg), "--ckpt_path", str(ckpt),
        "--trainer.devices", "3", "--trainer.strategy", "ddp",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, three = (workdir / "runs" / "tiny" / f"version_{v}" for v in (1, 2))
    rows_one, rows_three = read_metrics(one), read_metrics(three)
    keys = [k for k in rows_one[0] if k.startswith("val/")]
    assert {"val/top1", "val/loss", "val/top1_tta", "val/mean_class_acc"} <= set(keys)
    for key in keys:
        assert last_value(rows_three, key) == pytest.approx(last_value(rows_one, key), abs=1e-6)
    for run in (one, three):
        with open(run / "val_per_class.csv") as f:
            support = {r["name"]: int(r["support"]) for r in csv.DictReader(f)}
        assert support == {"a": 4, "b": 4, "c": 3}, run
    # fewer images than processes: refused in one line, nothing hangs
    few = folder_config(workdir / "few", {"a": 1, "b": 1}, max_epochs=1)
    proc = run_fgvc(
        workdir / "few", "validate", "--config", str(few), "--ckpt_path", str(ckpt),
        "--trainer.devices", "3", "--trainer.strategy", "ddp",
    )  # fmt: skip
    assert proc.returncode != 0 and "2 evaluation images for 3 processes" in proc.stderr


@pytest.mark.slow
def test_cluster_style_runs_without_logger_or_progress_bar(workdir, capsys):
    """A log file gets plain lines (no terminal redraws); progress bar and loggers can be
    switched off, as cluster users do."""
    cfg = write_config(workdir, max_epochs=1)
    proc = run_fgvc(workdir, "fit", "--config", str(cfg), "--trainer.logger", "false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epoch 0/0 done in" in proc.stdout and "val/top1" in proc.stdout
    assert "\r" not in proc.stdout and "\x1b[" not in proc.stdout
    # no logger: still a folder of its own (tests/test_commands_train_resume.py)
    assert (workdir / "runs" / "fgvc" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    capsys.readouterr()
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", "quiet"]
    assert main(["fit", "--config", str(cfg), *quiet]) == 0
    assert "epoch 0/0 done in" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "name",
    # base.yaml is a part (tests/test_train_compose.py), sweep.yaml a W&B sweep
    sorted(p.name for p in (REPO / "configs").glob("*.yaml") if p.stem not in ("sweep", "base")),
)
def test_shipped_configs_parse(name, capsys):
    """Every config in configs/ is valid for the CLI (keys, types, class paths)."""
    cfg = REPO / "configs" / name
    assert main(["fit", "--config", str(cfg), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["representation"] == ("gap" if "_gap_" in name else "isqrt")
    assert printed["data"]["class_path"].startswith("fgvc.data.")


def test_corrupt_image_during_fit_is_one_line(workdir, capsys):
    from fgvc.data import SynthConfig, make_synthetic

    cfg = write_config(workdir, max_epochs=1)
    folder = make_synthetic(
        workdir / "data",
        SynthConfig(num_classes=NUM_CLASSES, train_per_class=8, test_per_class=2, image_size=40),
    )
    victim = sorted((folder / "images").rglob("*.jpg"))[0]
    victim.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    code = main(["fit", "--config", str(cfg), "--data.init_args.val_split", "0"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fgvc")]
    assert code == 1  # a failure during the work, not a usage error
    assert len(err) == 1 and victim.name in err[0] and "replace it" in err[0], err


def final_state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_sigterm_then_resume_equals_uninterrupted_run(workdir, monkeypatch):
    straight, broken = workdir / "straight", workdir / "broken"
    for folder in (straight, broken):
        folder.mkdir()
        write_config(folder, max_epochs=3)

    monkeypatch.chdir(straight)
    assert main(["fit", "--config", "tiny.yaml"]) == 0

    # the same run, preempted (SIGTERM) after its second epoch, in a separate process
    callback = '[{"class_path": "tests.cli_helpers.SigtermAtEpochEnd", "init_args": {"epoch": 1}}]'
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fgvc",
            "fit",
            "--config",
            "tiny.yaml",
            "--trainer.callbacks",
            callback,
        ],
        cwd=broken,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert "stopped by SIGTERM in epoch 2" in proc.stderr and "--ckpt_path last" in proc.stderr
    run = broken / "runs" / "tiny" / "version_0"
    # the resume point: the last completed epoch, saved before the stop
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    assert not (run / "checkpoints" / "interrupted.ckpt").exists()
    before = (run / "config.yaml").read_text()

    monkeypatch.chdir(broken)
    assert main(["fit", "--config", "tiny.yaml", "--ckpt_path", "last"]) == 0
    assert not (broken / "runs" / "tiny" / "version_1").exists()  # continued in place
    assert (run / "config.yaml").read_text() == before
    assert (run / "config.resume-1.yaml").is_file()

    done, resumed = final_state(straight / "runs" / "tiny" / "version_0"), final_state(run)
    assert done.keys() == resumed.keys()
    for key in done:
        torch.testing.assert_close(resumed[key], done[key], rtol=0, atol=0, msg=key)
    a = read_metrics(straight / "runs" / "tiny" / "version_0")
    b = read_metrics(run)
    # the whole history once: the first process's epochs, then the resumed one's
    assert b == a
    assert [r["epoch"] for r in b if r.get("val/top1")] == ["0", "1", "2"]
    # one W&B run, continued (offline runs are folders named offline-run-<time>-<id>)
    folders = sorted((broken / "runs" / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and len({f.name.rsplit("-", 1)[1] for f in folders}) == 1
    assert (run / "wandb_run_id").read_text().strip() == folders[0].name.rsplit("-", 1)[1]


@pytest.mark.slow
def test_two_nodes_under_torchrun_write_one_run(workdir):
    """2 nodes x 1 process on localhost through torchrun (static rendezvous, gloo), as on a
    cluster: one run folder, one config, one W&B run, one export, checkpoints once - and the
    evaluation figures of one process validating the same checkpoint."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = write_config(workdir, max_epochs=1, num_nodes=2, devices=1, strategy="ddp")
    nodes = []
    for node_rank in (0, 1):
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
            "--nproc-per-node", "1", "--node-rank", str(node_rank),
            "--master-addr", "127.0.0.1", "--master-port", str(port),
            "-m", "fgvc", "fit", "--config", str(cfg),
        ]  # fmt: skip
        log = open(workdir / f"node{node_rank}.log", "w")  # noqa: SIM115 - closed below
        nodes.append(
            (
                subprocess.Popen(
                    command, cwd=workdir, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT
                ),
                log,
            )
        )
    for proc, log in nodes:
        proc.wait(timeout=600)
        log.close()
    logs = [(workdir / f"node{r}.log").read_text() for r in (0, 1)]
    assert [proc.returncode for proc, _ in nodes] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "global batch 8 = 2 process(es)" in logs[0]

    runs = workdir / "runs"
    assert sorted(p.name for p in (runs / "tiny").iterdir()) == ["version_0"]
    run = runs / "tiny" / "version_0"
    assert sorted(p.name for p in run.glob("config*.yaml")) == ["config.yaml"]
    assert len(list((runs / "wandb").glob("offline-run-*"))) == 1
    assert sorted(p.name for p in run.glob("export*")) == ["export"]
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert len(ckpts) == 2 and "last.ckpt" in ckpts and ckpts[0].startswith("best-")
    assert sorted(p.name for p in runs.iterdir()) == ["tiny", "wandb"]  # nothing stray

    last = run / "checkpoints" / "last.ckpt"
    (workdir / "single").mkdir()
    single = write_config(workdir / "single", max_epochs=1)  # its own copy of the same data
    assert main(["validate", "--config", str(single), "--ckpt_path", str(last)]) == 0
    one = read_metrics(workdir / "single" / "runs" / "tiny" / "version_0")
    two = read_metrics(run)
    for key in ("val/top1", "val/loss", "val/top1_tta", "val/mean_class_acc"):
        assert last_value(two, key) == pytest.approx(last_value(one, key), abs=1e-6), key


def test_resume_without_a_run_is_one_line(workdir, capsys):
    cfg = write_config(workdir)
    assert main(["fit", "--config", str(cfg), "--ckpt_path", "last"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to resume" in err[0]


def test_resume_from_a_broken_last_checkpoint_is_one_line(workdir, capsys):
    """``--ckpt_path last`` goes through the same checks as an explicit path."""
    cfg = write_config(workdir)
    last = workdir / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 cut short by a crash")
    assert main(["fit", "--config", str(cfg), "--ckpt_path", "last"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated or not a checkpoint" in err[0] and str(last) in err[0]


@pytest.mark.slow
def test_bad_checkpoints_are_refused_in_one_line(workdir, capsys):
    cfg = write_config(workdir, max_epochs=1)
    assert main(["fit", "--config", str(cfg)]) == 0
    good = workdir / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    capsys.readouterr()

    truncated = workdir / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign = workdir / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    marker = workdir / "pwned.txt"
    evil = workdir / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": CodePayload(marker)}, evil)
    cases = {
        truncated: "truncated or not a checkpoint",
        foreign: "is not a checkpoint of `fgvc fit`",
        evil: "weights_only=True",
        workdir / "missing.ckpt": "checkpoint not found",
    }
    for path, message in cases.items():
        assert main(["test", "--config", str(cfg), "--ckpt_path", str(path)]) == 2, path
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and str(path.name) in err[0], err
    assert not marker.exists()  # the pickle never ran

    # a checkpoint for 3 classes against data with 4
    four = ["--data.init_args.synth_classes", "4", "--data.init_args.root", "data4"]
    assert main(["test", "--config", str(cfg), "--ckpt_path", str(good), *four]) == 2
    err = capsys.readouterr().err
    assert "num_classes=3 (now 4)" in err and "--model.pretrained" in err


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("fit", "data", "export", "predict"):
        assert command in out
    assert main([]) == 2


@pytest.mark.parametrize(
    "data, message",
    [
        (
            {"class_path": "fgvc.data.CUBDataModule", "init_args": {"root": "nowhere"}},
            "fgvc data download cub",
        ),
        (
            {"class_path": "fgvc.data.SyntheticDataModule", "init_args": {"batch_size": 0}},
            "batch_size must be >= 1, got 0",
        ),
    ],
)
def test_data_errors_reach_the_user_unwrapped(workdir, capsys, data, message):
    """jsonargparse wraps constructor errors in link/union messages; the user sees ours."""
    cfg = write_config(workdir)
    config = yaml.safe_load(cfg.read_text())
    config["data"] = data
    cfg.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_the_csv_logger_names_the_run_folder_whatever_the_order(workdir):
    """Lightning takes the run folder (log_dir, checkpoints) from the first logger: the CSV
    logger is put first, so that `--ckpt_path last` finds what the run wrote."""
    from fgvc.data.datamodule import FGVCDataModule
    from fgvc.train.cli import FGVCCLI
    from fgvc.train.loggers import CSVLogger
    from fgvc.train.module import FGVCClassifier

    cfg = write_config(workdir)
    config = yaml.safe_load(cfg.read_text())
    config["trainer"]["logger"].reverse()  # W&B first
    config["trainer"]["logger"][0]["init_args"]["mode"] = "disabled"
    cfg.write_text(yaml.safe_dump(config))
    args = ["--config", str(cfg)]
    cli = FGVCCLI(FGVCClassifier, FGVCDataModule, subclass_mode_data=True, run=False, args=args)
    assert isinstance(cli.trainer.loggers[0], CSVLogger) and len(cli.trainer.loggers) == 2
