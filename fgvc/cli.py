"""The ``fgvc`` command."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "data":
        from fgvc.data.cli import main as data_main

        return data_main(argv[1:])
    print("usage: fgvc data {download,check,synth} ...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
