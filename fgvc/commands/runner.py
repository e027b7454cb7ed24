"""What every ``fgvc`` command shares: one-line errors and the exit codes.

Exit codes: 0 success; 1 failure (the work itself failed: :class:`~fgvc.errors.FgvcError`,
an OS error); 2 usage error (:class:`~fgvc.errors.UsageError`: bad arguments or config
values, a missing input, a checkpoint that is not fgvc's). Every error is one line on stderr,
``fgvc <command>: error: <what and the fix>``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import NoReturn, TextIO

from fgvc.errors import FgvcError, UsageError, is_usage_error, user_message

OK, FAILURE, USAGE = 0, 1, 2


class CommandParser(argparse.ArgumentParser):
    """argparse whose usage errors are :class:`UsageError` (one line, exit code 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def add_images_and_model(parser: argparse.ArgumentParser) -> None:
    """The arguments of the commands that run a trained network on image files."""
    from fgvc.runs import RUNS_ROOT

    parser.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files or folders")
    parser.add_argument(
        "--model",
        default="best",
        help="export folder (fgvc export), .ckpt file, run folder, or 'best' (default: the "
        "best checkpoint of the most recent run under --runs-root)",
    )
    parser.add_argument("--runs-root", default=RUNS_ROOT, help="where runs are, for 'best'")


def report(prog: str, message: str, stderr: TextIO | None = None) -> None:
    """Print ``<prog>: error: <message>`` on stderr."""
    print(f"{prog}: error: {message}", file=stderr or sys.stderr, flush=True)


def run(prog: str, body: Callable[[], int | None], stderr: TextIO | None = None) -> int:
    """Run a command's body and map what it raises to the exit code (see module doc)."""
    try:
        check_environment()
        return int(body() or OK)
    except SystemExit as exit_:  # --help, --version, --print_config
        code = exit_.code
        return code if isinstance(code, int) else (OK if code is None else FAILURE)
    except (FgvcError, OSError) as err:
        report(prog, user_message(err), stderr)
        return USAGE if is_usage_error(err) else FAILURE
    except KeyboardInterrupt:
        report(prog, "interrupted", stderr)
        return 130
    except RuntimeError as err:
        if not peer_failed(err):
            raise
        # the failing process has printed its own line; this one only says why it stops
        report(prog, "stopped: another process of this run failed (its error is above)", stderr)
        return FAILURE


# How gloo and NCCL report a peer that went away (it raised, was killed, lost its node).
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def peer_failed(err: BaseException) -> bool:
    """Whether ``err`` is a collective that failed because another process of the run is
    gone (only in a distributed run, where that process reports the cause itself)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return False
    if dist.get_world_size() < 2:
        return False
    return isinstance(err, getattr(dist, "DistNetworkError", ())) or any(
        text in str(err) for text in _PEER_GONE
    )


def check_environment() -> None:
    """fgvc's environment variables, read before any work: a bad value is one usage line
    naming it, not a failure met in a DataLoader worker or at each image."""
    from fgvc.data.io import max_image_pixels

    max_image_pixels()


def log_to_stderr(level: int = logging.INFO) -> None:
    """fgvc's own log messages (not other libraries' chatter) from ``level`` on stderr, once."""
    fgvc_logger = logging.getLogger("fgvc")
    if not fgvc_logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        fgvc_logger.addHandler(handler)
        fgvc_logger.setLevel(level)
