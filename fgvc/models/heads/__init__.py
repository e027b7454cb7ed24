"""Representation heads: feature map (B, C, h, w) -> image vector (B, output_dim).

``HEADS`` is the table of representations; a head is its module here (the module, its
:class:`HeadEntry` ``ENTRY``), one line below and its test.
"""

from fgvc.models.heads import bcnn, cbp, gap, isqrt, mpncov
from fgvc.models.heads.bcnn import BilinearHead
from fgvc.models.heads.cbp import CompactBilinearHead
from fgvc.models.heads.gap import AvgPoolHead
from fgvc.models.heads.isqrt import CovarianceHead
from fgvc.models.heads.mpncov import MPNCovHead
from fgvc.models.heads.reduction import ReducedHead
from fgvc.models.heads.registry import AUTO, HeadEntry, HeadSettings

#: ``model.representation`` -> its entry; the first is the default.
HEADS: dict[str, HeadEntry] = {
    entry.name: entry for entry in (isqrt.ENTRY, gap.ENTRY, mpncov.ENTRY, bcnn.ENTRY, cbp.ENTRY)
}

#: Names accepted for ``representation`` by :func:`fgvc.models.build_model`.
REPRESENTATIONS: tuple[str, ...] = tuple(HEADS)


def head_entry(name: str) -> HeadEntry:
    """The entry of representation ``name``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if not isinstance(name, str) or name not in HEADS:
        raise ValueError(
            f"unknown representation {name!r}; choose one of {', '.join(REPRESENTATIONS)}"
        )
    return HEADS[name]


__all__ = [
    "AUTO",
    "HEADS",
    "REPRESENTATIONS",
    "AvgPoolHead",
    "BilinearHead",
    "CompactBilinearHead",
    "CovarianceHead",
    "HeadEntry",
    "HeadSettings",
    "MPNCovHead",
    "ReducedHead",
    "head_entry",
]
