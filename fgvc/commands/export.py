"""``fgvc export``: a checkpoint of ``fgvc fit`` -> a verified deployment bundle.

    fgvc export [--ckpt best|RUN|FILE.ckpt] [--out DIR] [--formats safetensors onnx torchscript]

``--ckpt best`` (the default) takes the best checkpoint of the most recent run under
``runs/`` (or of ``--run DIR``); the bundle goes to ``<run folder>/export`` unless ``--out``
says otherwise. See :mod:`fgvc.deploy.export`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fgvc.commands.runner import CommandParser, log_to_stderr, run
from fgvc.data.transforms import PRESETS
from fgvc.deploy.bundle import summary
from fgvc.deploy.export import DEFAULT_FORMATS, FORMATS, export_checkpoint
from fgvc.errors import ExportError, one_line
from fgvc.runs import RUNS_ROOT, default_export_dir, resolve_checkpoint

PROG = "fgvc export"


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog=PROG,
        description="Export a trained checkpoint: weights (safetensors), model.json, ONNX "
        "(verified against PyTorch) and optionally TorchScript.",
        epilog="Exit codes: 0 exported; 1 the export or its verification failed (nothing "
        "written); 2 usage errors.",
    )
    parser.add_argument(
        "--ckpt",
        default="best",
        help="a .ckpt file, a run folder, or 'best' (default): the best checkpoint of --run "
        "or of the most recent run under --runs-root",
    )
    parser.add_argument("--run", help="run folder for --ckpt best (runs/<name>/version_<n>)")
    parser.add_argument("--runs-root", default=RUNS_ROOT, help="where runs are (default: runs)")
    parser.add_argument(
        "--out",
        help="bundle folder (default: <run folder>/export, or <checkpoint name>-export)",
    )
    parser.add_argument(
        "--formats",
        nargs="+",
        choices=FORMATS,
        default=list(DEFAULT_FORMATS),
        help="what to write (default: safetensors onnx; safetensors is always written)",
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


def main(argv: list[str]) -> int:
    """``fgvc export``: returns the exit code (0 ok, 1 export failed, 2 usage error)."""

    def body() -> int:
        args = build_parser().parse_args(argv)
        log_to_stderr()
        ckpt = resolve_checkpoint(args.ckpt, args.run, args.runs_root)
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
