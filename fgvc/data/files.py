"""Finding image files safely: no link loops, no folders pulled in through links, each real
file once, and every entry left out reported with the reason.

What :func:`walk_images` does with each entry of ``folder``::

    folder/                          (may itself be a link, e.g. into a shared pool)
        a.jpg                        taken
        sub/b.png                    taken: sub-folders are searched
        c.jpg -> /pool/c.jpg         taken: file links are followed
        again.jpg -> /pool/c.jpg     skipped: same file as c.jpg, counted once
        loop -> .                    skipped: folder links are never followed (a loop)
        other -> ../sibling          skipped: it would pull in another folder's images
        locked/       (mode 000)     skipped: cannot be read
        notes.txt                    ignored: not an image extension

Files come in ``sorted(os.walk(folder))`` order: folders by path, files by name within.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fgvc.data.io import IMAGE_EXTENSIONS

FileKey = tuple[int, int]  # (st_dev, st_ino): one real file, whatever the path to it


def display_path(path: str | os.PathLike) -> str:
    """``path`` as text that prints anywhere: bytes that are not UTF-8 shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_utf8(name: str | os.PathLike) -> bool:
    """Whether a file name (``str`` from ``os`` functions, or bytes) is valid UTF-8."""
    try:
        os.fsencode(name).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass
class WalkResult:
    """What :func:`walk_images` found.

    Attributes:
        files: the image files, as paths under the walked folder.
        skipped: ``(path, one-line reason)`` for each entry left out.
        keys: ``(st_dev, st_ino)`` of each file (aligned with ``files``).
    """

    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    keys: list[FileKey] = field(default_factory=list, repr=False)


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _unreadable(folder: str | os.PathLike, err: OSError) -> str:
    reason = err.strerror or str(err)
    return (
        f"{display_path(folder)}: cannot read folder ({reason}); fix its permissions (chmod u+rx)"
    )


class _Walk:
    """One walk: the state shared by the folders it visits."""

    def __init__(self, top: str, extensions: tuple[str, ...]) -> None:
        self.top = top
        self.real_top = os.path.realpath(top)
        self.extensions = extensions
        self.found: list[tuple[str, str, FileKey, bool]] = []  # dirpath, name, key, is link
        self.skipped: list[tuple[Path, str]] = []
        self.visited: set[FileKey] = set()

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append((Path(path), f"{display_path(path)}: {reason}"))

    def is_image(self, name: str) -> bool:
        return name.lower().endswith(self.extensions)

    def folder(self, dirpath: str) -> list[str]:
        """Record the images of ``dirpath``; return its sub-folders to walk."""
        with os.scandir(dirpath) as entries:
            ordered = sorted(entries, key=lambda entry: entry.name)
        subfolders = []
        for entry in ordered:
            try:
                if entry.is_symlink():
                    self.link(entry, dirpath)
                elif entry.is_dir(follow_symlinks=False):
                    info = os.stat(entry.path)  # st_dev: a bind mount can loop too
                    key = (info.st_dev, info.st_ino)
                    if key in self.visited:
                        self.skip(
                            entry.path, "folder already walked by another path (a bind mount)"
                        )
                    else:
                        self.visited.add(key)
                        subfolders.append(entry.path)
                elif self.is_image(entry.name):
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(info.st_mode):
                        key = (info.st_dev, info.st_ino)
                        self.found.append((dirpath, entry.name, key, False))
                    else:
                        self.skip(entry.path, "not a regular file; replace it with an image file")
            except OSError as err:
                reason = err.strerror or str(err)
                self.skip(entry.path, f"cannot stat ({reason}); fix the permissions of its folder")
        return subfolders

    def link(self, entry: os.DirEntry, dirpath: str) -> None:
        target = os.path.realpath(entry.path)
        shown = display_path(target)
        try:
            info = os.stat(entry.path)
        except OSError as err:  # dangling, a loop of links, or no permission
            if self.is_image(entry.name):
                reason = err.strerror or str(err)
                self.skip(entry.path, f"broken link to {shown} ({reason}); fix or remove it")
            return
        if stat.S_ISDIR(info.st_mode):
            if _within(os.path.realpath(dirpath), target):
                why = "a loop (it points to a folder that holds it); remove the link"
            elif _within(target, self.real_top):
                why = (
                    f"it points inside {display_path(self.top)}, whose images are counted where "
                    f"they are; remove the link"
                )
            else:
                why = (
                    f"it points outside {display_path(self.top)} (a folder link can pull in "
                    f"another class's images); link the image files instead"
                )
            self.skip(entry.path, f"link to folder {shown} not followed: {why}")
        elif not self.is_image(entry.name):
            return
        elif stat.S_ISREG(info.st_mode):
            self.found.append((dirpath, entry.name, (info.st_dev, info.st_ino), True))
        else:
            self.skip(entry.path, f"link to {shown}, not a regular file; link an image file")


def walk_images(
    folder: str | os.PathLike, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> WalkResult:
    """The image files under ``folder`` (recursive, sorted), each real file once.

    ``folder`` may be a link. Below it, file links are followed; folder links are not (a
    loop, or another class's folder) and are reported in ``skipped``, as are unreadable
    sub-folders, broken links and further paths to a file already found (a path that is no
    link is kept over links to the same file). Extensions are matched case-insensitively.

    Raises:
        FileNotFoundError / NotADirectoryError / PermissionError: ``folder`` itself cannot
            be listed (one line naming it).
    """
    top = os.fspath(folder)
    walk = _Walk(top, tuple(ext.lower() for ext in extensions))
    try:
        info = os.stat(top)
        if stat.S_ISDIR(info.st_mode):
            walk.visited.add((info.st_dev, info.st_ino))
            pending = walk.folder(top)
    except OSError as err:
        raise type(err)(_unreadable(top, err)) from None
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"{display_path(top)} is not a folder")
    while pending:
        dirpath = pending.pop()
        try:
            pending.extend(walk.folder(dirpath))
        except OSError as err:
            walk.skipped.append((Path(dirpath), _unreadable(dirpath, err)))
    walk.found.sort(key=lambda item: (item[0], item[1]))  # sorted(os.walk()) order
    keep: dict[FileKey, int] = {}
    for index, (_, _, key, is_link) in enumerate(walk.found):
        if key not in keep or (walk.found[keep[key]][3] and not is_link):
            keep[key] = index
    result = WalkResult(skipped=walk.skipped)
    for index, (dirpath, name, key, _) in enumerate(walk.found):
        path = Path(dirpath) / name
        if keep[key] == index:
            result.files.append(path)
            result.keys.append(key)
        else:
            first = walk.found[keep[key]]
            same = display_path(Path(first[0]) / first[1])
            walk.skip(str(path), f"same file as {same}; counted once - remove the duplicate")
    result.skipped.sort(key=lambda item: os.fsencode(item[0]))
    return result


def collect_images(
    inputs: Iterable[str | os.PathLike],
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files from files and folders, in the given order (folders sorted, recursive).

    A folder is searched with :func:`walk_images` (its files sorted by path); an existing
    file is taken whatever its extension.

    Returns:
        ``(images, not_taken)``: ``not_taken`` holds ``(path, one-line reason)`` for each
        input that does not exist or cannot be read, and each entry a folder walk skipped.
    """
    images: list[Path] = []
    not_taken: list[tuple[Path, str]] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            try:
                result = walk_images(path)
            except OSError as err:
                not_taken.append((path, str(err)))
                continue
            images.extend(sorted(result.files))
            not_taken.extend(result.skipped)
        elif path.exists():
            images.append(path)
        else:
            not_taken.append((path, f"{display_path(path)}: no such file or folder"))
    return images, not_taken


def confusable_names(names: Iterable[str]) -> list[list[str]]:
    """Groups of distinct names that differ only in letter case or Unicode normalization
    (``café`` with one character, or with ``e`` and a combining accent)."""
    groups: dict[str, list[str]] = {}
    for name in dict.fromkeys(names):
        groups.setdefault(unicodedata.normalize("NFC", name).casefold(), []).append(name)
    return [group for group in groups.values() if len(group) > 1]


def confusable_message(where: str, group: list[str]) -> str:
    """The one line that warns about one group of :func:`confusable_names` (escaped: the
    names print alike otherwise)."""
    return (
        f"{where}: class names {' and '.join(map(ascii, group))} differ only in letter case or "
        f"Unicode normalization (an accent as part of the letter or as a separate character): "
        f"they are different classes to fgvc but look the same, and a case-insensitive file "
        f"system (macOS, Windows) merges their folders; rename or merge them"
    )
