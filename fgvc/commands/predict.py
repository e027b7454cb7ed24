"""``fgvc predict``: top-k classes of image files from an export bundle or a checkpoint.

    fgvc predict IMAGE_OR_FOLDER... [--model DIR|CKPT|RUN|best] [--backend auto|onnx|torch]
                 [--topk 5] [--tta | --no-tta] [--format table|csv|json] [--results-file FILE]

Folders are searched recursively for image files; files named on the command line are read
whatever their extension. Outputs (stdout, or ``--results-file FILE``, UTF-8, written whole
or not at all): see :mod:`fgvc.deploy.outputs`. ``-o``/``--output FILE`` are the old
spellings of ``--results-file`` (deprecated: ``-o/--out`` is a folder in every command). An
image that cannot be read is reported on one line on stderr and skipped; the others are
still predicted. Exit codes: 0 every image predicted; 1 some could not be read (the rest were
predicted); 2 usage errors; 130/143 Ctrl-C/SIGTERM (:mod:`fgvc.commands.runner`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TextIO

from fgvc.commands.runner import (
    CommandParser,
    add_deprecated,
    add_images_and_model,
    add_workers,
    log_to_stderr,
    report,
    run,
)
from fgvc.data.files import collect_images, display_path
from fgvc.deploy.outputs import OUTPUT_FORMATS, format_predictions
from fgvc.deploy.predict import BACKENDS, load_predictor, predict_files
from fgvc.deploy.publish import atomic_write_text
from fgvc.errors import UsageError

PROG = "fgvc predict"


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog=PROG,
        description="Top-k classes of images from an export folder (ONNX Runtime or "
        "PyTorch) or a checkpoint.",
        epilog="Exit codes: 0 all images predicted; 1 some images could not be read (reported "
        "on stderr, the others predicted); 2 usage errors; 130/143 stopped by Ctrl-C/SIGTERM.",
    )
    add_images_and_model(parser)
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto (default): ONNX Runtime when the export folder has model.onnx, else pt2, "
        "else torch",
    )
    parser.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average with the mirrored image (default: as the model was evaluated)",
    )
    parser.add_argument("--format", choices=OUTPUT_FORMATS, default="table")
    parser.add_argument(
        "--results-file",
        metavar="FILE",
        help="write the results to this file instead of stdout (UTF-8, whole or not at all)",
    )
    add_deprecated(parser, "--output", "-o", dest="results_file", new="--results-file FILE")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    add_workers(parser, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str], stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """``fgvc predict``: returns the exit code (0 all predicted, 1 some failed, 2 usage)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr

    def body() -> int:
        log_to_stderr(logging.WARNING)  # e.g. a bundle's class names that look alike
        args = build_parser().parse_args(argv)
        if args.topk < 1 or args.batch_size < 1 or args.workers < 1:
            raise UsageError("--topk, --batch-size and --workers must be >= 1")
        if args.results_file is not None:
            parent = Path(args.results_file).expanduser().absolute().parent
            if not parent.is_dir():
                raise UsageError(f"--results-file: folder {parent} does not exist")
        images, missing = collect_images(args.inputs)
        if not images:
            listing = "; ".join(display_path(message) for _, message in missing)
            raise UsageError(
                f"no image found in {' '.join(args.inputs)}" + (f" ({listing})" if listing else "")
            )
        predictor = load_predictor(args.model, args.backend, args.device, args.runs_root)

        def skipped(path: Path, message: str) -> None:
            print(f"{PROG}: skipped {display_path(message)}", file=err, flush=True)

        for path, message in missing:
            skipped(path, message)
        tta = predictor.preprocessing.tta if args.tta is None else args.tta
        predictions, errors = predict_files(
            predictor,
            images,
            topk=args.topk,
            tta=tta,
            batch_size=args.batch_size,
            workers=args.workers,
            on_error=skipped,
            progress=False if args.no_progress else None,
        )
        errors = missing + errors
        meta = {
            "model": predictor.source,
            "backend": predictor.backend,
            "tta": tta,
            "topk": min(args.topk, len(predictor.class_names)),
        }
        text = format_predictions(args.format, predictions, errors, meta)
        if args.results_file is None:
            out.write(text)
            out.flush()
        else:
            atomic_write_text(args.results_file, text)
        if errors:
            report(
                PROG,
                f"{len(errors)} of {len(images) + len(missing)} images could not be read "
                f"(listed above); {len(predictions)} predicted",
                err,
            )
            return 1
        return 0

    return run(PROG, body, stderr=err)
