"""A training loader that can stop and continue inside an epoch.

Lightning saves the state of every training loader that has ``state_dict`` /
``load_state_dict`` into each checkpoint (``loops.fit_loop.state_dict.combined_loader``) and
hands it back when a run restarts from a checkpoint saved inside an epoch; that is the one
mechanism fgvc uses (:mod:`fgvc.train.resume` writes those checkpoints). Any train loader
with the two methods takes part - this one, or a streaming loader that is stateful itself
(litdata's ``StreamingDataLoader``) - as long as its ``state_dict`` describes the batches the
training loop has taken from it: for loaders with a length, Lightning takes batches one at a
time, without prefetching, so "batches yielded" is that count.

:class:`ResumableLoader` needs no more than a count. The folder DataModules' training order
and every sample's augmentation follow from ``(seed, epoch, sample)``
(:class:`~fgvc.data.sampler.EpochSeededSampler`), so continuing epoch ``e`` after ``k``
batches means drawing epoch ``e``'s order again and starting at position ``k x batch_size``
of this process's shard: the skipped samples' indices are passed over, never read or
decoded.

A checkpoint saved inside an epoch continues only on the same layout (processes, batch
size, shard length): another one would split the rest of the epoch differently, and the
run would no longer be the one that was interrupted. The refusal says what to do.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, DistributedSampler, Sampler

from fgvc.errors import ConfigError


class ResumableSampler(DistributedSampler):
    """Another sampler that can start its next pass ``skip`` positions in.

    A ``DistributedSampler`` (so that Lightning leaves it alone, as it does the wrapped one),
    its length is the whole pass's: Lightning counts the batches of a resumed epoch from
    where it stopped, up to the epoch's full number.

    Args:
        sampler: the sampler whose passes are continued (it keeps its rank and world size).
    """

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.rank = getattr(sampler, "rank", 0)
        self.num_replicas = getattr(sampler, "num_replicas", 1)
        self.shuffle = getattr(sampler, "shuffle", False)
        self.drop_last = getattr(sampler, "drop_last", False)
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        skip, self.skip = self.skip, 0  # once: the next epoch starts at its beginning
        return itertools.islice(iter(self.sampler), skip, None)


class ResumableLoader(DataLoader):
    """A ``DataLoader`` whose position inside an epoch is its state (see the module doc).

    ``state_dict()`` is ``{"batches": k, "epoch_batches": n, "batch_size", "world_size",
    "samples"}``: ``k`` of this epoch's ``n`` batches were taken; ``load_state_dict`` makes the
    next pass start at batch ``k`` (a whole epoch taken: the pass is empty, whatever the
    layout). Takes the ``DataLoader`` arguments; ``sampler`` is required (the epoch's order).

    Raises (from ``load_state_dict``):
        ConfigError: the state was saved with another number of processes, batch size or
            number of training samples.
    """

    def __init__(self, dataset: Any, *args: Any, sampler: Sampler, **kwargs: Any) -> None:
        if not isinstance(sampler, ResumableSampler):  # Lightning may build it again
            sampler = ResumableSampler(sampler)
        super().__init__(dataset, *args, sampler=sampler, **kwargs)
        self._yielded = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "batches": self._yielded,
            "epoch_batches": len(self),
            "batch_size": self.batch_size,
            "world_size": self.sampler.num_replicas,  # type: ignore[union-attr]
            "samples": len(self.sampler),  # type: ignore[arg-type]
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        batches = int(state_dict["batches"])
        if batches == 0:  # nothing of the epoch taken (the batch-size finder's restore point)
            self.sampler.skip = self._yielded = 0  # type: ignore[union-attr]
            return
        if batches == state_dict.get("epoch_batches", -1):  # saved at the epoch's end
            self.sampler.skip = len(self.sampler)  # type: ignore[union-attr, arg-type]
            self._yielded = len(self)
            return
        mine = self.state_dict()
        saved = {k: state_dict.get(k) for k in ("world_size", "batch_size", "samples")}
        now = {k: mine[k] for k in saved}
        if saved != now:
            raise ConfigError(
                f"the checkpoint was saved inside an epoch by {_layout(saved)}, this run has "
                f"{_layout(now)}: a mid-epoch checkpoint continues only on the same processes "
                f"and batch size (trainer.devices x num_nodes, data.init_args.batch_size) - "
                f"resume with those, or from a checkpoint saved at an epoch's end"
            )
        if not 0 <= batches <= len(self):
            raise ConfigError(
                f"the checkpoint's loader state says {batches} batches were taken "
                f"of an epoch of {len(self)}; it is not from this data"
            )
        self.sampler.skip = batches * (self.batch_size or 1)  # type: ignore[union-attr]
        self._yielded = batches

    def __iter__(self) -> Iterator[Any]:
        # the count starts where the sampler starts: 0, or the batches a checkpoint had taken
        skip = self.sampler.skip  # type: ignore[union-attr]
        self._yielded = min(len(self), skip // (self.batch_size or 1))
        for batch in super().__iter__():
            self._yielded += 1
            yield batch


def _layout(state: dict[str, Any]) -> str:
    return (
        f"{state['world_size']} process(es) x {state['batch_size']} images "
        f"({state['samples']} training samples per process)"
    )
