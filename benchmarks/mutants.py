"""Mutation testing of every module of ``fgvc/``, each against its own tests (``make mutants``).

Every target runs mutmut (3.x) in a scratch copy of the repository, ``build/mutants/<target>``,
whose ``setup.cfg`` gets the target's ``[mutmut]`` section (the repository's own files are
never touched). Mutants are run by forked workers (mutmut's fork server: torch is not
fork-safe once used) on the tests that execute the mutated function. Prints one markdown row
per target and writes each survivor's diff to ``build/mutants/survivors.md``.

Not part of CI or ``make test``: hours on 2 cores for every target. The core group (ops to
predict-top_k) takes about 33 minutes; the others, one or two modules each, from a minute
(outputs, archive) to hours (``interrupt`` and ``commands`` run CLI fits, some on two
processes, for every mutant).

    python benchmarks/mutants.py               # every target
    python benchmarks/mutants.py core          # the core group
    python benchmarks/mutants.py outputs runs  # some targets
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRATCH = REPO / "build" / "mutants"
# mutmut's exit-code meanings (mutmut.stats.status_by_exit_code)
KILLED = {1, 3, 24, -24, 152, 255, 36, 37, -9, -11}  # failed, timed out, crashed
SURVIVED = {0}
NO_TESTS = {5, 33}
MUTMUT = "import sys; from mutmut.__main__ import cli; sys.exit(cli())"
NOT_SLOW = ("-m", "not slow")


@dataclass(frozen=True)
class Target:
    """What to mutate (``only_mutate`` globs, less ``exclude``), with which tests,
    restricted to functions (mutant-name globs; empty: every function of the files)."""

    files: tuple[str, ...]
    tests: tuple[str, ...]
    functions: tuple[str, ...] = ()
    pytest_args: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    keep: tuple[tuple[str, str], ...] = ()  # (file, "Class.method") left unmutated


TARGETS = {
    # reference.py is the tests' float64 oracle (eigendecomposition, the authors' code)
    "ops": Target(("fgvc/ops/*.py",), ("tests/test_ops.py",), exclude=("fgvc/ops/reference.py",)),
    "sampler": Target(("fgvc/data/sampler.py",), ("tests/test_data_sampler.py",)),
    "transforms": Target(
        ("fgvc/data/transforms.py", "fgvc/data/resize_crop.py"), ("tests/test_data_transforms.py",)
    ),
    # the count warning's stacklevel is asserted, and the trampoline adds frames under it
    "base": Target(
        ("fgvc/data/base.py",),
        ("tests/test_data_datasets.py", "tests/test_data_sampler.py"),
        keep=(("fgvc/data/base.py", "ImageDataset._check_counts"),),
    ),
    # save_hyperparameters reads the arguments off the __init__ frame, which mutmut's
    # trampoline renames: FGVCClassifier.__init__ cannot run mutated
    "module+optim": Target(
        ("fgvc/train/module.py", "fgvc/train/optim.py"),
        ("tests/test_train_module.py",),
        keep=(("fgvc/train/module.py", "FGVCClassifier.__init__"),),
    ),
    "reports": Target(
        ("fgvc/train/reports.py",),
        ("tests/test_train_reports.py",),
        (
            "fgvc.train.reports.x_per_class_accuracy__mutmut_*",
            "fgvc.train.reports.x_most_confused__mutmut_*",
        ),
    ),
    "predict-top_k": Target(
        ("fgvc/deploy/predict.py",),
        ("tests/test_deploy_predict.py",),
        ("fgvc.deploy.predict.x_top_k__mutmut_*",),
        ("-m", "not slow"),  # the per-preset export round trips: minutes per mutant
    ),
    # -- the rest of fgvc/, smallest first; `-m "not slow"` drops the CLI and DDP runs
    # (minutes per mutant) where the module has quicker tests of its own
    "outputs": Target(("fgvc/deploy/outputs.py",), ("tests/test_deploy_outputs.py",)),
    "archive": Target(("fgvc/utils/archive.py",), ("tests/test_utils_archive.py",)),
    "locks": Target(
        ("fgvc/utils/locks.py",),
        ("tests/test_utils_locks.py", "tests/test_utils_download.py"),
        pytest_args=NOT_SLOW,
    ),
    "publish": Target(
        ("fgvc/deploy/publish.py",),
        ("tests/test_deploy_publish.py",),
    ),
    "atomic": Target(
        ("fgvc/utils/atomic.py",), ("tests/test_utils_atomic.py", "tests/test_deploy_publish.py")
    ),
    "download": Target(
        ("fgvc/utils/download.py",), ("tests/test_utils_download.py",), pytest_args=NOT_SLOW
    ),
    "data-download": Target(
        ("fgvc/data/download.py",),
        ("tests/test_utils_download.py", "tests/test_commands_data.py"),
        pytest_args=NOT_SLOW,
    ),
    "errors": Target(("fgvc/errors.py",), ("tests/test_errors.py",)),
    "runner": Target(
        ("fgvc/commands/runner.py",), ("tests/test_commands_runner.py",), pytest_args=NOT_SLOW
    ),
    "models": Target(
        ("fgvc/models/heads.py", "fgvc/models/factory.py", "fgvc/models/net.py"),
        ("tests/test_models.py", "tests/test_models_spec.py"),
    ),
    "spec+backbone": Target(
        ("fgvc/models/spec.py", "fgvc/models/backbone.py"),
        ("tests/test_models.py", "tests/test_models_spec.py"),
    ),
    "pretrained": Target(("fgvc/models/pretrained.py",), ("tests/test_models_pretrained.py",)),
    "aircraft+io": Target(
        ("fgvc/data/datasets/aircraft.py", "fgvc/data/io.py"),
        ("tests/test_data_datasets.py", "tests/test_data_io.py"),
    ),
    "cub+cars+folder": Target(
        (
            "fgvc/data/datasets/cub.py",
            "fgvc/data/datasets/cars.py",
            "fgvc/data/datasets/folder.py",
            "fgvc/data/splits.py",
        ),
        ("tests/test_data_datasets.py", "tests/test_data_datamodule.py"),
        pytest_args=NOT_SLOW,
    ),
    "files+check": Target(
        ("fgvc/data/files.py", "fgvc/data/check.py"),
        ("tests/test_data_files.py", "tests/test_data_check.py"),
        pytest_args=NOT_SLOW,
    ),
    "preprocessing": Target(("fgvc/data/preprocessing.py",), ("tests/test_data_preprocessing.py",)),
    "synthetic": Target(("fgvc/data/synthetic.py",), ("tests/test_data_synthetic.py",)),
    "datamodule": Target(
        ("fgvc/data/datamodule.py", "fgvc/data/datamodules.py"),
        ("tests/test_data_datamodule.py",),
        pytest_args=NOT_SLOW,
    ),
    "runs": Target(("fgvc/runs.py",), ("tests/test_runs.py",)),
    "loggers": Target(
        ("fgvc/train/loggers.py", "fgvc/train/wandb_mode.py"),
        ("tests/test_train_loggers.py", "tests/test_train_wandb_mode.py"),
        pytest_args=NOT_SLOW,
    ),
    "checkpoint_io": Target(
        ("fgvc/train/checkpoint_io.py",), ("tests/test_train_checkpoint_io.py",)
    ),
    "cli": Target(
        (
            "fgvc/train/cli.py",
            "fgvc/train/run_folder.py",
            "fgvc/train/callbacks.py",
            "fgvc/train/progress.py",
        ),
        ("tests/test_train_cli.py",),
        pytest_args=NOT_SLOW,
    ),
    "bundle+verify": Target(
        ("fgvc/deploy/bundle.py", "fgvc/deploy/verify.py"),
        ("tests/test_deploy_bundle.py",),
        pytest_args=NOT_SLOW,
    ),
    "export": Target(
        ("fgvc/deploy/export.py",),
        ("tests/test_deploy_export.py",),
        pytest_args=NOT_SLOW,
    ),
    "formats": Target(
        ("fgvc/deploy/formats/*.py",),
        ("tests/test_deploy_formats.py", "tests/test_deploy_export.py"),
        pytest_args=NOT_SLOW,
    ),
    "predict": Target(
        ("fgvc/deploy/predict.py",), ("tests/test_deploy_predict.py",), pytest_args=NOT_SLOW
    ),
    "explain": Target(
        ("fgvc/deploy/explain.py", "fgvc/deploy/overlays.py"),
        ("tests/test_deploy_explain.py", "tests/test_deploy_explain_quadrant.py"),
        pytest_args=NOT_SLOW,
    ),
    # only the multi-process runs exercise these: minutes per mutant (run them last, alone)
    "interrupt": Target(("fgvc/train/interrupt.py",), ("tests/test_train_interrupt.py",)),
    "commands": Target(
        (
            "fgvc/commands/main.py",
            "fgvc/commands/train.py",
            "fgvc/commands/data.py",
            "fgvc/commands/export.py",
            "fgvc/commands/predict.py",
            "fgvc/commands/explain.py",
        ),
        (
            "tests/test_commands_data.py",
            "tests/test_commands_train.py",
            "tests/test_commands_predict.py",
            "tests/test_deploy_predict.py",
            "tests/test_deploy_explain.py",
            "tests/test_deploy_export.py",
        ),
        pytest_args=NOT_SLOW,
    ),
}


CORE = ["ops", "sampler", "transforms", "base", "module+optim", "reports", "predict-top_k"]


def _lines(values: tuple[str, ...] | list[str]) -> str:
    return "".join(f"\n    {v}" for v in values)


def keep_unmutated(path: Path, qualname: str) -> None:
    """Mark a function ``# pragma: no mutate block`` (on the last line of its header)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    owner, name = qualname.split(".")
    (cls,) = [n for n in ast.parse("\n".join(lines)).body if getattr(n, "name", "") == owner]
    (func,) = [n for n in cls.body if getattr(n, "name", "") == name]
    header_end = func.body[0].lineno - 2  # 0-based index of the line before the body
    assert lines[header_end].rstrip().endswith(":"), (path, qualname, lines[header_end])
    lines[header_end] = lines[header_end].rstrip() + "  # pragma: no mutate block"
    path.write_text("\n".join(lines), encoding="utf-8")


def prepare(name: str, target: Target) -> Path:
    """A fresh scratch copy with the target's mutmut configuration."""
    folder = SCRATCH / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for item in ("fgvc", "tests"):
        shutil.copytree(REPO / item, folder / item, ignore=ignore)
    for item in ("pyproject.toml", "setup.cfg"):
        shutil.copy2(REPO / item, folder / item)
    for file, qualname in target.keep:
        keep_unmutated(folder / file, qualname)
    section = (
        "\n[mutmut]\n"
        "source_paths = fgvc\n"
        f"only_mutate ={_lines(target.files)}\n"
        f"pytest_add_cli_args_test_selection ={_lines(target.tests)}\n"
        f"pytest_add_cli_args ={_lines(['-p', 'no:cacheprovider', *target.pytest_args])}\n"
        + (f"do_not_mutate ={_lines(target.exclude)}\n" if target.exclude else "")
        + "process_isolation = forkserver\n"
        "use_git_change_detection = false\n"
    )
    with open(folder / "setup.cfg", "a", encoding="utf-8") as f:
        f.write(section)
    return folder


def mutmut(folder: Path, *args: str, log: Path | None = None) -> str:
    """Run ``mutmut *args`` in ``folder``; its output (also written to ``log``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [sys.executable, "-c", MUTMUT, *args],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if log is not None:
        log.write_text(proc.stdout, encoding="utf-8")
    if proc.returncode != 0 and args[0] == "run":
        raise RuntimeError(f"mutmut exited {proc.returncode}; see {log}")
    return proc.stdout


def results(folder: Path, target: Target) -> dict[str, int | None]:
    """Exit code by mutant name, for the target's functions."""
    import fnmatch

    codes: dict[str, int | None] = {}
    for meta in (folder / "mutants").rglob("*.py.meta"):
        codes.update(json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"])
    if target.functions:
        codes = {
            k: v for k, v in codes.items() if any(fnmatch.fnmatch(k, p) for p in target.functions)
        }
    return codes


def run_target(name: str, target: Target, jobs: int, report: list[str]) -> dict[str, object]:
    folder = prepare(name, target)
    started = time.perf_counter()
    error = ""
    try:
        mutmut(folder, "run", "--max-children", str(jobs), *target.functions, log=folder / "log")
    except RuntimeError as err:
        error = str(err)
    seconds = time.perf_counter() - started
    codes = results(folder, target)
    survived = sorted(k for k, v in codes.items() if v in SURVIVED)
    row = {
        "target": name,
        "mutants": len(codes),
        "killed": sum(v in KILLED for v in codes.values()),
        "survived": len(survived),
        "no tests": sum(v in NO_TESTS for v in codes.values()),
        "other": sum(v not in KILLED | SURVIVED | NO_TESTS for v in codes.values()),
        "seconds": round(seconds),
    }
    if error or not codes:
        row["error"] = error or f"no mutants; see {folder / 'log'}"
    report.append(f"## {name}: {len(survived)} survived\n")
    for mutant in survived:
        diff = mutmut(folder, "show", mutant)
        report.append(f"```diff\n{diff.strip()}\n```\n")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "targets",
        nargs="*",
        help=f"some of {', '.join(TARGETS)}, or 'core' (the first {len(CORE)}); default: all",
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutmut workers")
    args = parser.parse_args(argv)
    names = [n for t in args.targets or list(TARGETS) for n in (CORE if t == "core" else [t])]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    rows, report = [], ["# Surviving mutants\n"]
    started = time.perf_counter()
    print("| target | mutants | killed | survived | no tests | other | seconds |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        row = run_target(name, TARGETS[name], args.jobs, report)
        rows.append(row)
        print("| " + " | ".join(str(row[k]) for k in list(row)[:7]) + " |", flush=True)
        if "error" in row:
            print(f"  {name}: {row['error']}", file=sys.stderr)
        (SCRATCH / "survivors.md").write_text("\n".join(report), encoding="utf-8")
    print(
        f"\n{round(time.perf_counter() - started)} s in all; survivors' diffs in "
        f"{SCRATCH / 'survivors.md'}"
    )
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
