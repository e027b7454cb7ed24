"""fgvc's error types, and how any error becomes the one line a user reads.

Every ``fgvc`` command maps them to its exit code (:mod:`fgvc.commands.runner`):

* :class:`UsageError` and its subclasses - the command cannot be carried out as given (a bad
  argument or config value, a path that does not exist, a checkpoint that is not fgvc's or
  does not fit): exit code 2.
* every other :class:`FgvcError` (and ``OSError``) - the work itself failed (a corrupt image
  met during training, an export that disagrees with PyTorch, a download): exit code 1.

This module imports nothing of fgvc, so every layer can raise these types.
"""

from __future__ import annotations

import errno
import shutil
import tempfile
from collections import deque
from typing import ClassVar


class FgvcError(Exception):
    """A failure fgvc reports as one line (exit code 1)."""

    #: The one-line texts of the latest instances: jsonargparse keeps only the text of an
    #: error raised while it tries each type of a Union (a logger's constructor), as a line
    #: of its own message, and :func:`user_message` finds ours there by it.
    recent: ClassVar[deque[str]] = deque(maxlen=16)

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        FgvcError.recent.append(one_line(self))


class UsageError(FgvcError, ValueError):
    """The request cannot be carried out as given (exit code 2)."""


class ConfigError(UsageError):
    """A config value (or ``--ckpt_path``) that the model, the data or the trainer rejected."""


class CheckpointError(UsageError):
    """A checkpoint could not be read safely, is not the kind expected, or does not fit."""


class ExportError(FgvcError, RuntimeError):
    """An export failed: an exporter raised, or the exported model disagrees with PyTorch."""


class DownloadError(FgvcError, RuntimeError):
    """A download failed (offline, HTTP error) or its checksum did not match."""


class ImageDecodeError(FgvcError, OSError):
    """An image file is missing, truncated, too large or not an image."""


class DiskFullError(FgvcError, OSError):
    """A write found its filesystem (or quota) full; the message names the file and the
    filesystem, and what was kept."""


def one_line(err: BaseException) -> str:
    """``err``'s text as one line (whitespace collapsed; its type name when it has none)."""
    return " ".join(str(err).split()) or type(err).__name__


# Plain built-in errors that our own code raises with a user-facing message.
_PLAIN = (ValueError, TypeError, FileNotFoundError)


def user_message(err: BaseException) -> str:
    """The line to show for ``err``, whatever wrapped it.

    jsonargparse wraps constructor errors in messages about links and union types, and a
    DataLoader worker re-raises with the worker's traceback in the text: the outermost fgvc
    error of the cause chain is reported (our own wrappers add what they know, such as the
    other sources of a failed download), else the innermost plain built-in one, else the
    outermost OS error (``<what>: <file>``); by its last line when it carries a traceback,
    without a leading ``module.Type:``.
    """
    chosen = reported_error(err)
    if not isinstance(chosen, FgvcError) and (listed := _listed_own_message(err)):
        return listed
    if isinstance(chosen, OSError) and chosen.errno in _NO_SPACE and chosen.filename is None:
        return _no_space_line(chosen)
    if isinstance(chosen, OSError) and chosen.strerror and chosen.filename is not None:
        # "no space left on device: /runs/x/ckpt" rather than "[Errno 28] No space ...: '...'"
        text = f"{chosen.strerror[:1].lower()}{chosen.strerror[1:]}: {chosen.filename}"
        return " ".join(text.split())
    lines = [line.strip().strip("'\"") for line in str(chosen).splitlines() if line.strip()]
    if not lines:
        return type(chosen).__name__
    text = lines[-1] if "Traceback (most recent call last)" in str(chosen) else lines[0]
    qualified = f"{type(chosen).__module__}.{type(chosen).__name__}: "
    if text.startswith(qualified):
        text = text[len(qualified) :]
    return " ".join(text.split())


def reported_error(err: BaseException) -> BaseException:
    """The error of ``err``'s cause chain that :func:`user_message` reports."""
    chain = _chain(err)
    ours = [e for e in chain if isinstance(e, FgvcError)]
    if ours:
        return ours[0]
    plain = [e for e in chain if type(e) in _PLAIN]
    if plain:
        return plain[-1]
    # an OS error raised while a library handled another error (Pillow's 'no fileno')
    return next((e for e in chain if isinstance(e, OSError)), chain[-1])


def is_usage_error(err: BaseException) -> bool:
    """Whether ``err`` means "the request cannot be carried out as given" (exit code 2).

    A failure of the work anywhere in the chain decides: a config error that re-words a
    download which failed while the config's classes were built is still that failure.
    """
    chain = _chain(err)
    if any(isinstance(e, FgvcError) and not isinstance(e, UsageError) for e in chain):
        return False
    return isinstance(reported_error(err), UsageError) or isinstance(err, UsageError)


# ENOSPC, EDQUOT: the disk or the quota is full
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _no_space_line(err: OSError) -> str:
    """A full disk met by a library that did not say which file: most often the temporary
    folder (Lightning's checkpoint saves and others go through it), so name it."""
    folder = tempfile.gettempdir()
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:,.0f} MiB free"
    except OSError:
        free = "free space unknown"
    return (
        f"{(err.strerror or 'no space left on device').lower()} writing a file the library did "
        f"not name, often a temporary one: the temporary folder is {folder} ({free}; TMPDIR "
        f"sets it); free space there or on the output's disk, or set TMPDIR to a larger disk"
    )


def _listed_own_message(err: BaseException) -> str | None:
    """The text of one of our errors that a library listed in its own message, if any."""
    recent = set(FgvcError.recent)
    for error in _chain(err):
        for line in str(error).splitlines():
            text = " ".join(line.strip().lstrip("-").split())
            if text in recent:
                return text
    return None


def _chain(err: BaseException) -> list[BaseException]:
    chain = [err]
    while (nxt := _cause(chain[-1])) is not None and len(chain) < 20:
        chain.append(nxt)
    return chain


def _cause(err: BaseException) -> BaseException | None:
    """The explicit cause, else the implicit context unless ``raise ... from None`` hid it."""
    if err.__cause__ is not None:
        return err.__cause__
    return None if err.__suppress_context__ else err.__context__
