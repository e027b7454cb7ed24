"""The training commands' output without other libraries' chatter.

Lines that tell an fgvc user nothing to act on are dropped by their exact message; every
other warning and message passes. :func:`install` (called by the CLI) drops:

* Lightning's tips to install litlogger / litmodels (``💡 Tip: ...``);
* ``TPU available: False, using: 0 TPU cores`` (kept on a machine that has a TPU);
* ``Loading `train_dataloader` to estimate number of stepping batches.``;
* Lightning's deprecation of its own pytree helper under this torch
  (```isinstance(treespec, LeafSpec)` is deprecated``);
* ``Checkpoint directory ... exists and is not empty``: fgvc gives every new run a folder
  of its own, so this is only ever a resumed run continuing in its folder;
* ``The dirpath has changed from ...``: a run folder that was moved or named by another
  path is recognized (:class:`fgvc.train.callbacks.RunCheckpoint`); what is left is a run
  resumed into a new folder, which fgvc announces itself;
* wandb's root-logger ``Images sizes do not match``: the Grad-CAM panel shows images at their
  own sizes on purpose.

wandb's banner and end-of-run tables are not filtered here: fgvc's W&B logger asks wandb for
its warnings and errors only, and says where the run is itself (:mod:`fgvc.train.loggers`).
"""

from __future__ import annotations

import logging
import re
import warnings

#: messages of log records that are dropped (searched in the formatted message)
CHATTER_LOGS = (
    re.compile(r"^💡 Tip: .*\[lit(logger|models)\]"),
    re.compile(r"^TPU available: False, using: 0 TPU cores$"),
    re.compile(r"^Loading `train_dataloader` to estimate number of stepping batches\.$"),
    re.compile(r"^Images sizes do not match\. This will causes? images to be display"),
)
#: messages of Python warnings that are dropped (matched at the start of the message)
CHATTER_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Checkpoint directory .* exists and is not empty",
    r"The dirpath has changed from ",
)
#: the loggers the chatter is logged on: Lightning's rank-zero helpers (which of the three
#: names they log under depends on import order) and the root logger (wandb's images)
CHATTER_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
    "",
)


class ChatterFilter(logging.Filter):
    """Drops the log records whose message is one of :data:`CHATTER_LOGS`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(pattern.search(message) for pattern in CHATTER_LOGS)


def install() -> None:
    """Drop the chatter in this process (again safe: nothing is added twice)."""
    for name in CHATTER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ChatterFilter) for f in logger.filters):
            logger.addFilter(ChatterFilter())
    for message in CHATTER_WARNINGS:
        # an identical filter is moved to the front, not added again
        warnings.filterwarnings("ignore", message=message)
