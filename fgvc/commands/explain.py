"""``fgvc explain``: heat maps of where a trained network found the evidence for a class.

    fgvc explain IMAGE_OR_FOLDER... [--model DIR|CKPT|RUN|best] -o/--out DIR [--force]
                 [--method gradcam|gradcam++|scorecam] [--class NAME_OR_INDEX] [--tta | --no-tta]

Writes one PNG per image (the evaluation crop beside its heat map, captioned with the class
and its probability), a contact sheet of all of them and ``explanations.json`` into
``--out`` (see :mod:`fgvc.deploy.overlays`; the maps: :mod:`fgvc.deploy.explain`). Runs on
PyTorch: from an export folder's weights or from a checkpoint (ONNX has no gradients). An
image that cannot be read is reported on one line on stderr and skipped. Exit codes: 0 every
image explained; 1 some could not be read (the rest were written); 2 usage errors.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TextIO

from fgvc.commands.runner import (
    CommandParser,
    add_images_and_model,
    add_out_folder,
    log_to_stderr,
    report,
    run,
)
from fgvc.data.files import collect_images, display_path
from fgvc.deploy.explain import METHODS, explain_images, resolve_class
from fgvc.deploy.overlays import write_explanations
from fgvc.deploy.predict import load_predictor
from fgvc.deploy.publish import check_destination
from fgvc.errors import FgvcError, UsageError

PROG = "fgvc explain"


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog=PROG,
        description="Class activation maps (Grad-CAM, Grad-CAM++, Score-CAM) of images, on "
        "the crop the network sees, at the last stage of the ResNet trunk.",
        epilog="Exit codes: 0 all images explained; 1 some images could not be read "
        "(reported on stderr, the others written); 2 usage errors; 130/143 stopped by "
        "Ctrl-C/SIGTERM (nothing half-written).",
    )
    add_images_and_model(parser)
    add_out_folder(
        parser, "the heat maps, contact sheet and explanations.json (empty or new)", True
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty --out (files of the same names are replaced, others kept)",
    )
    parser.add_argument(
        "--method",
        choices=tuple(METHODS),
        default="gradcam",
        help="gradcam (default), gradcam++, or scorecam (no gradients; one forward pass per "
        "channel of the trunk's last layer: slow, 512 to 2048 passes an image)",
    )
    parser.add_argument(
        "--class",
        dest="target",
        metavar="NAME_OR_INDEX",
        help="explain this class in every image (default: each image's predicted class)",
    )
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="flip-average the probabilities in the captions (default: as the model was "
        "evaluated; as fgvc predict)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per pass")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str], stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """``fgvc explain``: returns the exit code (0 all explained, 1 some failed, 2 usage)."""
    out_stream = stdout or sys.stdout
    err = stderr or sys.stderr

    def body() -> int:
        log_to_stderr(logging.WARNING)  # e.g. a bundle's class names that look alike
        args = build_parser().parse_args(argv)
        if args.batch_size < 1:
            raise UsageError("--batch-size must be >= 1")
        out = Path(args.out).expanduser().absolute()
        check_destination(out, args.force, "files of the same names")  # before any work
        images, missing = collect_images(args.inputs)
        if not images:
            listing = "; ".join(display_path(message) for _, message in missing)
            raise UsageError(
                f"no image found in {' '.join(args.inputs)}" + (f" ({listing})" if listing else "")
            )
        model = load_predictor(args.model, "torch", args.device, args.runs_root)
        target = None if args.target is None else resolve_class(args.target, model.class_names)

        def skipped(path: Path, message: str) -> None:
            print(f"{PROG}: skipped {display_path(message)}", file=err, flush=True)

        for path, message in missing:
            skipped(path, message)
        tta = model.preprocessing.tta if args.tta is None else args.tta
        explanations, errors = explain_images(
            model,
            images,
            method=args.method,
            target=target,
            tta=tta,
            batch_size=args.batch_size,
            on_error=skipped,
            progress=False if args.no_progress else None,
        )
        errors = missing + errors
        total = len(images) + len(missing)
        if not explanations:
            raise FgvcError(f"none of the {total} images could be read; nothing written")
        meta = {"model": model.source, "method": args.method, "tta": tta}
        written = write_explanations(explanations, out, args.force, errors, meta)
        for e, path in zip(written.explanations, written.overlays):
            print(
                f"{path.name}  {e.class_name}  p={e.probability:.4f}  {display_path(e.image)}",
                file=out_stream,
            )
        print(f"contact sheet: {written.contact_sheet}", file=out_stream, flush=True)
        if errors:
            report(
                PROG,
                f"{len(errors)} of {total} images could not be read (listed above); "
                f"{len(explanations)} explained",
                err,
            )
            return 1
        return 0

    return run(PROG, body, stderr=err)
