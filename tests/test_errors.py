"""fgvc.errors: the types' exit-code families and the one line a user reads."""

from __future__ import annotations

from fgvc.errors import (
    CheckpointError,
    ConfigError,
    DownloadError,
    ExportError,
    FgvcError,
    ImageDecodeError,
    UsageError,
    one_line,
    user_message,
)


def test_usage_errors_and_failures_are_told_apart():
    for usage in (UsageError, ConfigError, CheckpointError):
        assert issubclass(usage, UsageError) and issubclass(usage, ValueError)
    for failure in (ExportError, DownloadError, ImageDecodeError):
        assert issubclass(failure, FgvcError) and not issubclass(failure, UsageError)
    assert issubclass(ImageDecodeError, OSError)  # callers catching OSError still do


def test_one_line_collapses_whitespace_and_names_empty_errors():
    assert one_line(ValueError("a\n  b\tc ")) == "a b c"
    assert one_line(KeyError()) == "KeyError"


def test_user_message_reports_the_innermost_own_error():
    try:
        try:
            raise ImageDecodeError("/data/x.jpg: cannot decode image")
        except ImageDecodeError as inner:
            raise RuntimeError("Problem with given class_path 'fgvc.data.X':\n  nested") from inner
    except RuntimeError as outer:
        assert user_message(outer) == "/data/x.jpg: cannot decode image"


def test_user_message_takes_the_last_line_of_a_worker_traceback():
    text = (
        "Caught ImageDecodeError in DataLoader worker process 0.\n"
        "Original Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n'
        "fgvc.errors.ImageDecodeError: /d/a.jpg: empty file; replace it\n"
    )
    assert user_message(ImageDecodeError(text)) == "/d/a.jpg: empty file; replace it"


def test_raise_from_none_hides_the_context():
    try:
        try:
            raise ExportError("inner")
        except ExportError:
            raise ExportError("outer (nothing was written)") from None
    except ExportError as err:
        assert user_message(err) == "outer (nothing was written)"
