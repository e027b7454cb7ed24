"""``fgvc data download|check|synth|shard``: get, check, synthesize and shard datasets.

Exit codes as every ``fgvc`` command (:mod:`fgvc.commands.runner`); ``check`` exits 1 when
it found a problem.
"""

from __future__ import annotations

import argparse

from fgvc.commands.runner import CommandParser, add_deprecated, run
from fgvc.data.balance import IMBALANCE_WARN_RATIO
from fgvc.data.check import CheckReport, check_dataset
from fgvc.data.datasets import dataset_names, dataset_spec, registry
from fgvc.data.synthetic import SYNTH_FOLDER, SynthConfig, make_synthetic
from fgvc.errors import UsageError

PROG = "fgvc data"


def _dataset_and_jobs(parser: argparse.ArgumentParser) -> None:
    """NAME, --root and -j/--jobs, as every command that reads a whole dataset takes them."""
    parser.add_argument("dataset", choices=dataset_names())
    parser.add_argument("--root", default="data", help="folder holding the dataset folder")
    parser.add_argument(
        "--jobs", "-j", type=int, default=None, metavar="N", help="processes (default: one a CPU)"
    )
    # --workers is data-loader workers in every fgvc command; these run processes
    add_deprecated(parser, "--workers", dest="jobs", new="--jobs N", type=int)


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=PROG, description="Get, check and synthesize fine-grained datasets."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    automatic = [spec.title for spec in registry().values() if spec.sources]
    download = commands.add_parser(
        "download",
        help=f"download and extract {', '.join(automatic)} (the others: where to get them)",
    )
    download.add_argument("dataset", choices=dataset_names())
    download.add_argument("--root", default="data", help="folder to put the dataset in")
    download.add_argument("--keep-archive", action="store_true", help="keep the archive")
    download.add_argument("--no-progress", action="store_true", help="no progress bar")

    check = commands.add_parser(
        "check",
        help="decode every image; report corrupt or oversized files, count mismatches and "
        "entries left out (link loops, folder links, unreadable folders)",
    )
    _dataset_and_jobs(check)
    check.add_argument(
        "--max-imbalance",
        type=float,
        default=IMBALANCE_WARN_RATIO,
        metavar="RATIO",
        help="warn when a split's largest class has more than RATIO times the images of its "
        "smallest (default: %(default)g)",
    )

    shard = commands.add_parser(
        "shard",
        help="write every split as litdata shards (JPEG bytes as on disk) for "
        "fgvc.data.ShardDataModule; the images are checked first, as by check",
    )
    _dataset_and_jobs(shard)
    shard.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="DIR_OR_URL",
        help="an empty folder or s3:// gs:// URL",
    )
    shard.add_argument(
        "--force", action="store_true", help="replace shards an earlier run wrote in --out"
    )
    shard.add_argument(
        "--no-check",
        action="store_true",
        help="skip decoding every image first (it was checked with fgvc data check)",
    )
    shard.add_argument(
        "--chunk-bytes", default="64MB", metavar="SIZE", help="chunk file size (default: 64MB)"
    )

    synth = commands.add_parser("synth", help="write the synthetic dataset (CUB layout)")
    defaults = SynthConfig()
    synth.add_argument("--root", default="data", help="folder to write <root>/<name> in")
    synth.add_argument("--name", default=SYNTH_FOLDER, help="dataset folder name")
    synth.add_argument("--classes", type=int, default=defaults.num_classes)
    synth.add_argument("--train-per-class", type=int, default=defaults.train_per_class)
    synth.add_argument("--test-per-class", type=int, default=defaults.test_per_class)
    synth.add_argument("--size", type=int, default=defaults.image_size, help="image width")
    synth.add_argument("--seed", type=int, default=defaults.seed)
    return parser


def _download(args: argparse.Namespace) -> int:
    from fgvc.data.download import download_dataset

    spec = dataset_spec(args.dataset)
    if not spec.sources:  # bring your own: say where from, then whether it is there
        print(spec.manual)
        try:
            folder = spec.locate(args.root)
        except FileNotFoundError:
            print(f"\nnot found under {args.root} yet")
            return 1
        print(f"\nfound: {spec.title} in {folder}")
        return 0
    folder = download_dataset(
        args.dataset, args.root, progress=not args.no_progress, keep_archive=args.keep_archive
    )
    print(f"{args.dataset}: {folder}")
    return 0


def _print_check(report: CheckReport) -> None:
    for message in report.bad_files:
        print(f"bad file: {message}")
    for message in report.problems:
        print(f"problem: {message}")
    for message in report.skipped:
        print(f"skipped: {message}")
    for message in report.warnings:
        print(f"warning: {message}")


def _check(args: argparse.Namespace) -> int:
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    if not args.max_imbalance >= 1:
        raise UsageError(f"--max-imbalance {args.max_imbalance:g}: a ratio, must be >= 1")
    try:
        report = check_dataset(
            args.dataset, args.root, workers=args.jobs, max_imbalance=args.max_imbalance
        )
    except (OSError, ValueError) as err:  # no dataset there at all
        raise UsageError(str(err)) from err
    _print_check(report)
    verdict = "ok" if report.ok else "FAILED"
    print(
        f"{args.dataset}: {report.images} images checked, {len(report.bad_files)} bad files, "
        f"{len(report.problems)} problems, {len(report.skipped)} entries skipped - {verdict}"
    )
    return 0 if report.ok else 1


def _shard(args: argparse.Namespace) -> int:
    from fgvc.data.shards.write import write_shards

    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    try:
        report = write_shards(
            args.dataset,
            args.root,
            args.out,
            jobs=args.jobs,
            force=args.force,
            check=not args.no_check,
            chunk_bytes=args.chunk_bytes,
        )
    except FileExistsError as err:
        raise UsageError(str(err)) from err
    except (OSError, ValueError) as err:  # no dataset there at all
        raise UsageError(str(err)) from err
    if report.check is not None and not report.check.ok:
        _print_check(report.check)
        if report.written:  # files that went away while writing
            print(
                f"{args.dataset}: {args.out} is incomplete - fix or remove the files above, "
                f"then rerun with --force"
            )
        else:
            print(f"{args.dataset}: nothing written - fix or remove the files above, then rerun")
        return 1
    info = report.info
    assert info is not None
    counts = ", ".join(f"{split} {count}" for split, count in info.splits.items())
    print(f"{args.dataset}: {len(info.classes)} classes, {counts} images written to {args.out}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    config = SynthConfig(
        num_classes=args.classes,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        image_size=args.size,
        seed=args.seed,
    )
    try:
        folder = make_synthetic(args.root, config, folder=args.name)
    except (FileExistsError, ValueError) as err:
        raise UsageError(str(err)) from err
    print(f"synthetic dataset written to {folder}")
    return 0


def main(argv: list[str]) -> int:
    """Run ``fgvc data ...`` with ``argv`` (the words after ``data``); returns the exit code."""

    def body() -> int:
        args = _parser().parse_args(argv)
        commands = {"download": _download, "check": _check, "synth": _synth, "shard": _shard}
        return commands[args.command](args)

    return run(PROG, body)
