"""The ``fgvc`` command: one entry point, one module per subcommand.

    fgvc fit|validate|test --config configs/<x>.yaml [--ckpt_path ...]   training (LightningCLI)
    fgvc tune --config configs/<x>.yaml [--min_lr ...]                   a learning rate for it
    fgvc data download|check|synth ...                                    datasets
    fgvc export --model <ckpt|run|best> --out DIR [--formats ...]         deployment bundle
    fgvc predict IMAGES_OR_FOLDERS --model <bundle|ckpt|run|best> ...     inference
    fgvc explain IMAGES_OR_FOLDERS --model <bundle|ckpt|run|best> -o DIR  Grad-CAM heat maps
    fgvc serve BUNDLE [--host 127.0.0.1] [--port 8000]                    HTTP API + web page

Subcommands import only what they need: no Lightning outside training, and no torchvision,
albumentations, timm, ONNX or W&B before the work needs them (``--help`` never does; see
``benchmarks/startup.py``). Exit codes, error lines and the shared flags:
:mod:`fgvc.commands.runner`.
"""

from __future__ import annotations

import importlib
import sys

from fgvc.commands.runner import USAGE as USAGE_ERROR
from fgvc.commands.runner import exit_code_table, report, sigterm_exits

USAGE = f"""usage: fgvc <command> [options]

commands:
  fit | validate | test   train / evaluate from a config (fgvc fit --help)
  tune                    suggest model.lr for a config: learning-rate finder (fgvc tune --help)
  data                    download | check | synth datasets (fgvc data --help)
  export                  checkpoint -> safetensors + ONNX bundle (fgvc export --help)
  predict                 classify image files or folders (fgvc predict --help)
  explain                 Grad-CAM heat maps of images (fgvc explain --help)
  serve                   HTTP API and web page for a bundle (fgvc serve --help)

the same flag means the same in every command:
  --model SRC    what to run: export folder, .ckpt file, run folder or 'best'
  -o, --out DIR  the folder the command writes into (predict prints, or --results-file FILE)
  --workers N    data-loader workers decoding images (fit: --data.num_workers;
                 data check's processes: --jobs N)
  --device, --runs-root, --batch-size, --tta, --force, --no-progress

exit codes (an error is one line on stderr: fgvc <command>: error: <what, and the fix>):
{exit_code_table()}

fgvc --version: fgvc's version and the versions of the libraries it runs on
start with: fgvc fit --config configs/demo.yaml"""

#: the libraries whose versions ``fgvc --version`` prints (read without importing them)
_LIBRARIES = ("torch", "torchvision", "pytorch-lightning", "timm", "onnxruntime")

_MODULES = {
    "data": "fgvc.commands.data",
    "explain": "fgvc.commands.explain",
    "export": "fgvc.commands.export",
    "predict": "fgvc.commands.predict",
    "serve": "fgvc.commands.serve",
    "tune": "fgvc.commands.tune",
}
_TRAINING = ("fit", "validate", "test")


def main(argv: list[str] | None = None) -> int:
    """Run ``fgvc`` with ``argv`` (None: ``sys.argv[1:]``); returns the exit code."""
    from_command_line = argv is None
    words = list(sys.argv[1:] if argv is None else argv)
    if not words or words[0] in ("-h", "--help", "help"):
        print(USAGE, file=sys.stdout if words else sys.stderr)
        return 0 if words else USAGE_ERROR
    command = words[0]
    if command in ("-V", "--version"):
        print(version_line())
        return 0
    if command in _TRAINING:
        from fgvc.commands.train import main as train_main

        # the console script lets LightningCLI read sys.argv itself
        return train_main(None if from_command_line else words)
    if command not in _MODULES:
        report("fgvc", f"unknown command {command!r}; see fgvc --help")
        return USAGE_ERROR
    with sigterm_exits():  # fit has its own: every process stops at the same step
        return importlib.import_module(_MODULES[command]).main(words[1:])


def version_line() -> str:
    """``fgvc <version> (torch <v>, ...)``, for bug reports; instant (nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    from fgvc import __version__

    found = []
    for name in _LIBRARIES:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} not installed")
    return f"fgvc {__version__} ({', '.join(found)}; Python {sys.version.split()[0]})"


if __name__ == "__main__":
    raise SystemExit(main())
