"""The ``fgvc`` command.

    fgvc fit|validate|test --config configs/<x>.yaml [--ckpt_path ...]   training (LightningCLI)
    fgvc data download|check|synth ...                                    datasets
    fgvc export --ckpt <path|best> --out DIR [--formats ...]              deployment bundle
    fgvc predict IMAGES_OR_FOLDERS --model <bundle|ckpt|best> ...         inference

Subcommands import only what they need: ``fgvc data`` starts without Lightning.
"""

from __future__ import annotations

import sys

USAGE = """usage: fgvc <command> [options]

commands:
  fit | validate | test   train / evaluate from a config (fgvc fit --help)
  data                    download | check | synth datasets (fgvc data --help)
  export                  checkpoint -> safetensors + ONNX bundle (fgvc export --help)
  predict                 classify image files or folders (fgvc predict --help)

start with: fgvc fit --config configs/demo.yaml"""


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "data":
        from fgvc.data.cli import main as data_main

        return data_main(argv[1:])
    if argv[0] == "export":
        from fgvc.export import export_main

        return export_main(argv[1:])
    if argv[0] == "predict":
        from fgvc.predict import predict_main

        return predict_main(argv[1:])
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from fgvc.data.io import ImageDecodeError
    from fgvc.lightning_cli import ConfigError, build_cli

    try:
        build_cli(None if from_command_line else argv)
    except SIGTERMException:
        print("fgvc: stopped by SIGTERM; resume with --ckpt_path last", file=sys.stderr)
        return 143
    except (ConfigError, ImageDecodeError) as err:
        # DataLoader workers re-raise with the worker traceback in the message: last line
        lines = [line.strip().strip("'\"") for line in str(err).splitlines() if line.strip()]
        message = lines[-1] if lines else repr(err)
        if message.startswith(f"{type(err).__module__}.{type(err).__name__}: "):
            message = message.split(": ", 1)[1]
        print(f"fgvc: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
