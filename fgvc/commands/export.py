"""``fgvc export``: a checkpoint of ``fgvc fit`` -> a verified deployment bundle.

    fgvc export [--model best|RUN|FILE.ckpt] [--out DIR] [--formats safetensors onnx pt2 ...]

``--model best`` (the default) takes the best checkpoint of the most recent run under
``runs/`` (or of ``--run DIR``); the bundle goes to ``<run folder>/export`` unless ``--out``
says otherwise. ``--ckpt`` is the former name of ``--model`` (deprecated, still accepted).
The formats are :data:`fgvc.deploy.formats.FORMATS`. See :mod:`fgvc.deploy.export`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fgvc.commands.runner import CommandParser, log_to_stderr, run
from fgvc.data.transforms import PRESETS
from fgvc.deploy.bundle import CONFIG_FILE, summary
from fgvc.deploy.export import export_checkpoint
from fgvc.deploy.formats import DEFAULT_NAMES, FORMATS, selected
from fgvc.errors import ExportError, UsageError, one_line
from fgvc.runs import RUNS_ROOT, default_export_dir, resolve_checkpoint

PROG = "fgvc export"


def _formats_help() -> str:
    names = [f"{f.name} (deprecated)" if f.deprecated else f.name for f in FORMATS]
    return (
        f"any of: {', '.join(names)}; default: {' '.join(DEFAULT_NAMES)} (safetensors is always "
        "written). Files and uses: README, Deploy"
    )


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog=PROG,
        description="Export a trained checkpoint as a bundle: model.json, the weights "
        "(safetensors) and the formats asked for (ONNX by default, pt2, int8 ONNX, ...), each "
        "verified against PyTorch.",
        epilog="Exit codes: 0 exported; 1 the export or its verification failed (nothing "
        "written); 2 usage errors.",
    )
    model = parser.add_mutually_exclusive_group()
    model.add_argument(
        "--model",
        default="best",
        help="a .ckpt file, a run folder, or 'best' (default): the best checkpoint of --run "
        "or of the most recent run under --runs-root",
    )
    model.add_argument("--ckpt", help=argparse.SUPPRESS)  # the former name of --model
    parser.add_argument("--run", help="run folder for --model best (runs/<name>/version_<n>)")
    parser.add_argument("--runs-root", default=RUNS_ROOT, help="where runs are (default: runs)")
    parser.add_argument(
        "--out",
        "-o",
        metavar="DIR",
        help="bundle folder (default: <run folder>/export, or <checkpoint name>-export)",
    )
    # checked against the table by fgvc.deploy.formats.selected: one line for a typo
    parser.add_argument(
        "--formats",
        nargs="+",
        metavar="FORMAT",
        default=list(DEFAULT_NAMES),
        help=_formats_help(),
    )
    parser.add_argument(
        "--force", action="store_true", help="replace the bundle files in a non-empty --out"
    )
    parser.add_argument("--image-size", type=int, help="override the recorded input size")
    parser.add_argument("--preset", choices=PRESETS, help="override the recorded preprocessing")
    parser.add_argument(
        "--verify-images",
        nargs="+",
        metavar="PATH",
        help="image files or folders to verify the export on (default: synthetic images)",
    )
    parser.add_argument(
        "--verify-count", type=int, default=4, help="synthetic verification images (default: 4)"
    )
    return parser


def model_source(args: argparse.Namespace) -> str:
    """``--model``, or the deprecated ``--ckpt`` (said in one line on stderr)."""
    if args.ckpt is not None:
        print(
            f"{PROG}: warning: --ckpt is deprecated, use --model {args.ckpt}",
            file=sys.stderr,
            flush=True,
        )
    source = args.ckpt or args.model
    if (Path(source).expanduser() / CONFIG_FILE).is_file():
        raise UsageError(
            f"--model {source} is an export folder; export from the checkpoint it came from "
            f"(its {CONFIG_FILE} names it under checkpoint.path), a run folder or 'best'"
        )
    return source


def main(argv: list[str]) -> int:
    """``fgvc export``: returns the exit code (0 ok, 1 export failed, 2 usage error)."""

    def body() -> int:
        args = build_parser().parse_args(argv)
        selected(args.formats)  # an unknown name: one line before any work
        log_to_stderr()
        ckpt = resolve_checkpoint(model_source(args), args.run, args.runs_root)
        out = Path(args.out) if args.out else default_export_dir(ckpt)
        print(f"exporting {ckpt} -> {out}", file=sys.stderr, flush=True)
        try:
            bundle = export_checkpoint(
                ckpt,
                out,
                formats=args.formats,
                force=args.force,
                image_size=args.image_size,
                preset=args.preset,
                verify_files=args.verify_images,
                verify_count=args.verify_count,
            )
        except ExportError as err:
            raise ExportError(f"{one_line(err)} (nothing was written)") from None
        print(summary(bundle))
        return 0

    return run(PROG, body)
