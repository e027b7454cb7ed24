"""The ``fgvc`` command.

    fgvc fit|validate|test --config configs/<x>.yaml [--ckpt_path ...]   training (LightningCLI)
    fgvc data download|check|synth ...                                    datasets

Subcommands import only what they need: ``fgvc data`` starts without Lightning.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "data":
        from fgvc.data.cli import main as data_main

        return data_main(argv[1:])
    from fgvc.lightning_cli import ConfigError, build_cli

    try:
        build_cli(argv)
    except ConfigError as err:
        print(f"fgvc: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
