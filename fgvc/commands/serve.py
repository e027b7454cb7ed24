"""``fgvc serve``: an export bundle behind HTTP (LitServe), with a web page.

    fgvc serve BUNDLE [--host 127.0.0.1] [--port 8000] [--backend auto|onnx|torch]
                      [--device auto|cpu|cuda] [--max-batch-size 16] [--batch-timeout 0.01]
                      [--max-upload-mb 20] [--no-explain] [--tta | --no-tta]

    curl -F image=@photo.jpg 'http://127.0.0.1:8000/predict?top_k=5'
    curl --data-binary @photo.jpg http://127.0.0.1:8000/predict
    curl http://127.0.0.1:8000/health

Routes and answers: :mod:`fgvc.deploy.serve.server`. Runs until Ctrl-C or SIGTERM, then stops
every process it started. Exit codes: 0 stopped; 1 the server failed; 2 usage errors (a
folder that is no bundle, a port in use).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import TextIO

from fgvc.commands.runner import CommandParser, run
from fgvc.errors import UsageError

PROG = "fgvc serve"
HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # what LitServe binds


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog=PROG,
        description="Serve an export folder over HTTP: POST /predict (an image: multipart "
        "field 'image' or the raw body) answers the top-k classes as JSON; GET / is a web "
        "page with top-5 and Grad-CAM; GET /health.",
        epilog="Exit codes: 0 stopped (Ctrl-C, SIGTERM); 1 the server failed; 2 usage errors.",
    )
    parser.add_argument("bundle", metavar="BUNDLE", help="export folder (fgvc export)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        choices=HOSTS,
        help="127.0.0.1 (default: this machine only), 0.0.0.0 or :: (every interface)",
    )
    parser.add_argument("--port", type=int, default=8000, help="1024 to 65535 (default 8000)")
    parser.add_argument(
        "--backend",
        choices=("auto", "onnx", "torch"),
        default="auto",
        help="of /predict; auto (default): ONNX Runtime when the bundle has model.onnx",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average with the mirrored image (default: as the model was evaluated)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=16,
        help="requests /predict runs together (default 16; 1: no batching)",
    )
    parser.add_argument(
        "--batch-timeout",
        type=float,
        default=0.01,
        help="seconds a request waits for others to join its batch (default 0.01)",
    )
    parser.add_argument(
        "--max-upload-mb", type=float, default=20.0, help="largest upload (default 20 MiB)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds a request may wait for the model before 504 (default 30)",
    )
    parser.add_argument(
        "--no-explain",
        dest="explain",
        action="store_false",
        help="no POST /explain (saves the second worker and its copy of the network)",
    )
    parser.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        default="warning",
        help="of LitServe and uvicorn (info: one line per request)",
    )
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Values LitServe would refuse with a traceback, refused in one line."""
    if not 1024 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: choose a port from 1024 to 65535")
    if args.max_batch_size < 1:
        raise UsageError("--max-batch-size must be >= 1")
    if not 0 <= args.batch_timeout <= 10:
        raise UsageError("--batch-timeout must be between 0 and 10 seconds")
    if not 0 < args.max_upload_mb <= 1024:
        raise UsageError("--max-upload-mb must be in (0, 1024]")
    if args.timeout <= 0:
        raise UsageError("--timeout must be > 0 seconds")
    check_port(args.host, args.port)


def check_port(host: str, port: int) -> None:
    """The port must be free now (else LitServe would exit after loading the model)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as err:
            raise UsageError(
                f"cannot listen on {host} port {port} ({err.strerror or err}); another server "
                f"may be using it - choose another with --port"
            ) from err


def _stop_on_signal() -> Callable[[], None]:
    """SIGTERM stops the server as Ctrl-C does (LitServe then stops its workers); returns
    what restores the previous handlers.

    LitServe's HTTP servers are forked from this process and inherit these handlers. uvicorn
    re-raises the signal it stopped on once it has stopped: there the handler lets it
    return (exit code 0) instead of raising KeyboardInterrupt inside its closing event loop
    (a traceback), and leaves any later signal to the default action.
    """
    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            return
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(sig, old) for sig, old in previous.items()] and None


def main(argv: list[str], stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """``fgvc serve``: serves until stopped; returns the exit code."""
    err = stderr or sys.stderr

    def body() -> int:
        from fgvc.commands.runner import log_to_stderr

        args = build_parser().parse_args(argv)
        check_args(args)
        import logging

        log_to_stderr(logging.WARNING)  # e.g. a bundle's class names that look alike
        from fgvc.deploy.serve.server import FgvcServer

        server = FgvcServer(
            args.bundle,
            backend=args.backend,
            device=args.device,
            tta=args.tta,
            explain=args.explain,
            max_batch_size=args.max_batch_size,
            batch_timeout=args.batch_timeout,
            max_bytes=int(args.max_upload_mb * 2**20),
            timeout=args.timeout,
        )
        restore = _stop_on_signal()
        try:
            server.serve(args.host, args.port, args.log_level)
        except KeyboardInterrupt:
            pass  # LitServe stopped the workers
        finally:
            restore()
        print(f"{PROG}: stopped", file=err, flush=True)
        return 0

    return run(PROG, body, stderr=err)
