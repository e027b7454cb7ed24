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
    is_usage_error,
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


def test_user_message_keeps_what_an_own_wrapper_adds():
    try:
        try:
            try:
                raise DownloadError("could not download http://x/w.pth (refused)")
            except DownloadError as inner:
                raise DownloadError(f"{inner}. Other ways: a mirror") from inner
        except DownloadError as outer:
            raise RuntimeError("Problem with given class_path") from outer
    except RuntimeError as err:
        assert (
            user_message(err) == "could not download http://x/w.pth (refused). Other ways: a mirror"
        )


def test_a_failure_reworded_as_a_config_error_is_still_a_failure():
    try:
        try:
            raise DownloadError("could not download")
        except DownloadError as inner:
            raise ConfigError(user_message(inner)) from inner
    except ConfigError as err:
        assert not is_usage_error(err)
    try:
        try:
            raise OSError(13, "Permission denied")
        except OSError as inner:
            raise ConfigError("save_dir /x: cannot write there") from inner
    except ConfigError as err:
        assert is_usage_error(err)
    assert is_usage_error(CheckpointError("not a checkpoint"))
    assert not is_usage_error(OSError(28, "No space left on device"))
    assert not is_usage_error(ExportError("disagrees"))


def test_an_own_message_that_a_library_kept_as_text_is_found():
    """jsonargparse lists the error of each type of a Union as lines of its own message."""
    own = ConfigError("W&B cannot write in /ro/.cache/wandb: set WANDB_CACHE_DIR")
    listing = ValueError(
        "Does not validate against any of the Union subtypes\nErrors:\n"
        "  - Not a valid subclass of Logger. Got value: [Namespace(...)]\n"
        f"  - {own}\n"
    )
    try:
        try:
            raise listing
        except ValueError as inner:
            raise ValueError("Not a valid subclass of Logger. Got value: [...]") from inner
    except ValueError as err:
        assert user_message(err) == str(own)
    assert user_message(ValueError("Errors:\n  - not ours")) == "Errors:"


def test_an_os_error_is_what_failed_and_the_file(monkeypatch, tmp_path):
    try:
        try:
            raise AttributeError("'_idat' object has no attribute 'fileno'")  # Pillow's
        except AttributeError:
            raise OSError(28, "No space left on device", "/runs/x/explain/001.png") from None
    except OSError as err:
        assert user_message(err) == "no space left on device: /runs/x/explain/001.png"
    try:
        try:
            raise AttributeError("'_idat' object has no attribute 'fileno'")
        except AttributeError:
            raise OSError(5, "Input/output error")  # noqa: B904 - as Pillow raises it
    except OSError as err:
        assert user_message(err) == "[Errno 5] Input/output error"


def test_a_full_disk_without_a_file_name_names_the_temporary_folder(monkeypatch, tmp_path):
    import tempfile

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    line = user_message(OSError(28, "No space left on device"))
    assert line.startswith(
        f"no space left on device writing a file the library did not name, often a temporary "
        f"one: the temporary folder is {tmp_path} ("
    )
    assert line.endswith(
        "MiB free; TMPDIR sets it); free space there or on the output's disk, or set TMPDIR "
        "to a larger disk"
    )
