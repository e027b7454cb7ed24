"""What a head is to the rest of fgvc: a :class:`HeadEntry` in the table ``HEADS``.

The factory builds heads from entries, :class:`~fgvc.models.spec.NetSpec` validates settings
and computes feature lengths with them, and the CLI takes its choices from the table, so a
new head needs its module, one line in the table and its test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

#: ``reduce_dim`` value meaning "the head's default" (``null`` means no reduction).
AUTO = "auto"


class HeadSettings(Mapping[str, Any]):
    """A head's settings (e.g. ``{"iterations": 5}``): read-only, hashable, and equal to any
    mapping with the same items, so that specs holding them compare and serialize plainly."""

    __slots__ = ("_items",)

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._items = tuple(sorted(dict(values or {}).items()))

    def __getitem__(self, key: str) -> Any:
        for name, value in self._items:
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other)

    def __repr__(self) -> str:
        return repr(dict(self._items))

    def __reduce__(self) -> tuple[Any, ...]:  # pickles as its items (checkpoints, DDP)
        return (HeadSettings, (dict(self._items),))


def _no_check(settings: Mapping[str, Any]) -> None:
    """Settings that need no check beyond their names."""


@dataclass(frozen=True)
class HeadEntry:
    """One representation: how to build it and what it gives.

    Attributes:
        name: the ``model.representation`` value.
        build: ``(in_channels, reduce_dim, settings) -> nn.Module`` with an ``output_dim``.
        feature_dim: ``(channels pooled, settings) -> length of the image vector``.
        title: what it computes, in a few words.
        source: the paper it comes from.
        defaults: its settings (the ``model.head`` group) and their default values.
        check: raises ValueError for bad settings (names are checked before).
        reduce_dim: channels after the 1x1 reduction when ``reduce_dim`` is ``"auto"``
            (None: pools the trunk's channels as they are).
        reduces: False for heads that have no reduction and ignore ``reduce_dim``.
        last_stride: the trunk's default last stride for it.
        abbrev: short names of settings in :meth:`~fgvc.models.NetSpec.describe`.
    """

    name: str
    build: Callable[[int, int | None, Mapping[str, Any]], nn.Module]
    feature_dim: Callable[[int, Mapping[str, Any]], int]
    title: str
    source: str
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    check: Callable[[Mapping[str, Any]], None] = _no_check
    reduce_dim: int | None = None
    reduces: bool = True
    last_stride: int = 1
    abbrev: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def settings(self, given: Mapping[str, Any] | None) -> HeadSettings:
        """``given`` with the defaults filled in, checked.

        Raises:
            ValueError: a setting this head does not have, or a bad value.
            TypeError: ``given`` is not a mapping.
        """
        if given is None:
            given = {}
        if not isinstance(given, Mapping):
            raise TypeError(
                f"model.head must be a mapping of {self.name}'s settings, got {given!r}"
            )
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            takes = ", ".join(self.defaults) or "no settings"
            raise ValueError(
                f"representation {self.name!r} has no setting {', '.join(map(repr, unknown))} "
                f"in model.head; it takes {takes}"
            )
        settings = HeadSettings({**self.defaults, **given})
        self.check(settings)
        return settings

    def describe(self, settings: Mapping[str, Any]) -> str:
        """E.g. ``"N=5"`` for iSQRT-COV's iterations."""
        return " ".join(f"{self.abbrev.get(k, k)}={v}" for k, v in settings.items())
