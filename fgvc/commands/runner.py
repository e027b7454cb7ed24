"""What every ``fgvc`` command shares: one-line errors, the exit codes and the flags.

Exit codes (:data:`EXIT_CODES`): 0 success; 1 failure (the work itself failed:
:class:`~fgvc.errors.FgvcError`, an OS error); 2 usage error (:class:`~fgvc.errors.UsageError`:
bad arguments or config values, a missing input, a checkpoint that is not fgvc's); 130
Ctrl-C; 143 SIGTERM; 137 SIGKILL (set by the system, not by fgvc). Every error is one line on
stderr, ``fgvc <command>: error: <what and the fix>``.

The flags several commands share are added here, so that one name has one meaning
everywhere: ``--model`` (what to run), ``-o/--out`` (the folder a command writes into),
``--workers`` (data-loader workers), ``--device``, ``--runs-root``. Old spellings stay
accepted through :func:`add_deprecated` (one warning line on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any, NoReturn, TextIO

from fgvc.errors import FgvcError, UsageError, is_usage_error, user_message

OK, FAILURE, USAGE = 0, 1, 2
#: 128 + the signal's number, as a shell reports a process the signal ended
INTERRUPTED, TERMINATED, KILLED = 128 + signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGKILL

#: every exit code of ``fgvc`` and what it means (``fgvc --help`` and the README print it)
EXIT_CODES: dict[int, str] = {
    OK: "success",
    FAILURE: "the work failed (a corrupt image in training, an export that disagrees with "
    "PyTorch, a download, a full disk, a diverged fit; predict/explain: some images "
    "unreadable, the others done; data check: problems found)",
    USAGE: "usage error: bad arguments, config values or settings, a missing input, a "
    "checkpoint or bundle that is not fgvc's",
    INTERRUPTED: "stopped by Ctrl-C (SIGINT); fit stops at a step: resume with --ckpt_path last",
    TERMINATED: "stopped by SIGTERM (a scheduler preempting the job); fit: as 130",
    KILLED: "killed by SIGKILL (out-of-memory killer, kill -9, a scheduler's hard limit; "
    "set by the system, nothing is printed); fit: resume with --ckpt_path last",
}


def exit_code_table(indent: str = "  ", width: int = 92) -> str:
    """:data:`EXIT_CODES` as ``<code>  <meaning>`` lines wrapped to ``width``, for ``--help``."""
    import textwrap

    lead = " " * (len(indent) + 5)
    return "\n".join(
        textwrap.fill(text, width, initial_indent=f"{indent}{code:<4} ", subsequent_indent=lead)
        for code, text in sorted(EXIT_CODES.items())
    )


class Terminated(BaseException):
    """SIGTERM reached a command running under :func:`sigterm_exits` (a BaseException, as
    KeyboardInterrupt, so that no ``except Exception`` in the work swallows it)."""


class CommandParser(argparse.ArgumentParser):
    """argparse whose usage errors are :class:`UsageError` (one line, exit code 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


class _Deprecated(argparse.Action):
    """An old spelling of a flag: does what ``new`` does, after one warning line."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str, **kwargs: Any):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        warn(parser.prog, f"{option_string} is deprecated; use {self.new}")
        setattr(namespace, self.dest, values)


def add_deprecated(
    parser: argparse.ArgumentParser, *flags: str, dest: str, new: str, **kwargs: Any
) -> None:
    """Keep ``flags`` (an old spelling) working as ``new``, left out of ``--help``; using it
    prints ``<prog>: warning: <flag> is deprecated; use <new>`` once, so scripts keep running
    while they are updated. ``kwargs``: as ``new``'s (``type``, ``metavar``)."""
    parser.add_argument(
        *flags,
        dest=dest,
        new=new,
        action=_Deprecated,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
        **kwargs,
    )


def add_images_and_model(parser: argparse.ArgumentParser) -> None:
    """The arguments of the commands that run a trained network on image files."""
    from fgvc.runs import RUNS_ROOT

    parser.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files or folders")
    parser.add_argument(
        "--model",
        default="best",
        metavar="SRC",
        help="what to run: an export folder (fgvc export), a .ckpt file, a run folder, or "
        "'best' (default: the best checkpoint of the most recent run under --runs-root)",
    )
    parser.add_argument("--runs-root", default=RUNS_ROOT, help="where runs are, for 'best'")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda if any"
    )


def add_out_folder(parser: argparse.ArgumentParser, what: str, required: bool = False) -> None:
    """``-o/--out DIR``: the folder a command writes its files into (in every command)."""
    parser.add_argument("--out", "-o", metavar="DIR", required=required, help=f"folder: {what}")


def add_workers(parser: argparse.ArgumentParser, default: int, kind: str = "threads") -> None:
    """``--workers N``: data-loader workers, those that decode and preprocess images (in
    every command; ``fgvc fit``: ``--data.num_workers``)."""
    parser.add_argument(
        "--workers",
        type=int,
        default=default,
        metavar="N",
        help=f"data-loader workers ({kind} decoding and preprocessing images; default {default})",
    )


def report(prog: str, message: str, stderr: TextIO | None = None) -> None:
    """Print ``<prog>: error: <message>`` on stderr."""
    print(f"{prog}: error: {message}", file=stderr or sys.stderr, flush=True)


def warn(prog: str, message: str, stderr: TextIO | None = None) -> None:
    """Print ``<prog>: warning: <message>`` on stderr."""
    print(f"{prog}: warning: {message}", file=stderr or sys.stderr, flush=True)


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
        return INTERRUPTED
    except Terminated:
        report(prog, "stopped by SIGTERM", stderr)
        return TERMINATED
    except RuntimeError as err:
        if not peer_failed(err):
            raise
        # the failing process has printed its own line; this one only says why it stops
        report(prog, "stopped: another process of this run failed (its error is above)", stderr)
        return FAILURE


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """SIGTERM ends the work as Ctrl-C does: :class:`Terminated` is raised where the work is
    (its ``finally`` blocks remove staged files), and :func:`run` exits 143 with one line.
    Only in the main thread; not for ``fit``, whose own handlers stop every process at the
    same step (:mod:`fgvc.train.interrupt`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
