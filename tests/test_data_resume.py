"""fgvc.data.resume: a training loader stopped after k batches continues with exactly the
batches an uninterrupted pass would have given, without reading the skipped samples."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from fgvc.data.resume import ResumableLoader
from fgvc.data.sampler import ClassBalancedSampler, EpochSeededSampler
from fgvc.errors import ConfigError


class Indices(Dataset):
    """Sample ``i`` is ``(i, seed)`` (the sampler's epoch is dropped); every read is
    recorded (in this process)."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.read: list[int] = []

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item: tuple[int, int, int]) -> tuple[int, int]:
        index, seed, _ = item
        self.read.append(index)
        return index, seed


def loader(data: Indices, rank: int = 0, world: int = 1, batch: int = 3, epoch: int = 0, **kw):
    sampler = EpochSeededSampler(
        len(data), seed=5, epoch_fn=lambda: epoch, rank=rank, world_size=world
    )
    return ResumableLoader(data, batch_size=batch, sampler=sampler, drop_last=True, **kw)


def batches(iterable) -> list[list[int]]:
    return [b[0].tolist() for b in iterable]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stopped_pass_continues_with_the_batches_it_had_left(workers):
    kw = {"num_workers": workers, "persistent_workers": workers > 0}  # as the DataModules
    whole = batches(loader(Indices(40), **kw))
    assert len(whole) == 13  # 40 // 3, the ragged batch dropped

    first = loader(Indices(40), **kw)
    taken = []
    for batch in first:
        taken.append(batch[0].tolist())
        if len(taken) == 5:
            break
    state = first.state_dict()
    assert state == {
        "batches": 5,
        "epoch_batches": 13,
        "batch_size": 3,
        "world_size": 1,
        "samples": 40,
    }

    data = Indices(40)
    again = loader(data, **kw)
    again.load_state_dict(state)
    assert len(again) == 13  # the epoch's length: Lightning counts on from batch 5
    rest = batches(again)
    assert taken + rest == whole
    if workers == 0:  # the skipped samples were never read
        assert sorted(data.read) == sorted(i for b in rest for i in b)
    assert again.state_dict()["batches"] == 13
    assert batches(again) == whole  # the next pass starts at its beginning again


def test_two_processes_resumed_take_every_image_once():
    data = [Indices(22), Indices(22)]
    first = [loader(data[r], rank=r, world=2, batch=2) for r in (0, 1)]
    seen = []
    for dl in first:  # both stop after 2 batches, as processes do at an agreed step
        it = iter(dl)
        seen += [i for _ in range(2) for i in next(it)[0].tolist()]
    states = [dl.state_dict() for dl in first]
    assert states[0] == states[1]  # rank 0's state (the one saved) fits both
    for r in (0, 1):
        resumed = loader(Indices(22), rank=r, world=2, batch=2)
        resumed.load_state_dict(states[0])
        seen += [i for b in batches(resumed) for i in b]
    # 11 a process, 5 full batches each: 20 images of 22, none twice
    assert len(seen) == 20 and len(set(seen)) == 20


def test_the_class_balanced_order_continues_too():
    targets = [0] * 15 + [1] * 3 + [2] * 2

    def make():
        sampler = ClassBalancedSampler(targets, seed=1, epoch_fn=lambda: 3)
        return ResumableLoader(Indices(20), batch_size=4, sampler=sampler, drop_last=True)

    whole = batches(make())
    first = make()
    it = iter(first)
    head = [next(it)[0].tolist() for _ in range(2)]
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    assert head + batches(resumed) == whole


@pytest.mark.parametrize(
    "change", [{"world": 2}, {"batch": 4}], ids=["other processes", "other batch size"]
)
def test_another_layout_is_refused_in_one_line(change):
    first = loader(Indices(40))
    it = iter(first)
    next(it)
    other = loader(Indices(40), world=change.get("world", 1), batch=change.get("batch", 3))
    with pytest.raises(ConfigError) as err:
        other.load_state_dict(first.state_dict())
    message = str(err.value)
    assert "\n" not in message and "1 process(es) x 3 images" in message
    assert "same processes and batch size" in message


def test_a_whole_epoch_taken_leaves_nothing_on_any_layout():
    done = loader(Indices(40))
    assert len(batches(done)) == 13
    other = loader(Indices(40), world=2, batch=4)
    other.load_state_dict(done.state_dict())
    assert batches(other) == [] and other.state_dict()["batches"] == len(other) == 5
    assert len(batches(other)) == 5  # the next epoch is whole


def test_a_state_beyond_the_epoch_is_refused():
    dl = loader(Indices(40))
    with pytest.raises(ConfigError, match="14 batches were taken of an epoch of 13"):
        dl.load_state_dict({**dl.state_dict(), "batches": 14})


def test_the_skipped_positions_are_the_sampler_order():
    """Independent truth: the epoch's order drawn by the sampler itself, sliced by hand."""
    sampler = EpochSeededSampler(30, seed=9, epoch_fn=lambda: 2, rank=1, world_size=3)
    order = [index for index, _, _ in sampler]
    dl = ResumableLoader(Indices(30), batch_size=2, sampler=sampler, drop_last=False)
    dl.load_state_dict(
        {"batches": 3, "epoch_batches": 5, "batch_size": 2, "world_size": 3, "samples": 10}
    )
    got = [i for b in batches(dl) for i in b]
    assert got == order[6:]
    assert torch.equal(torch.tensor(got), torch.tensor(order)[6:])


def test_a_state_before_the_first_batch_starts_the_epoch_on_any_layout():
    """The batch-size finder restores a checkpoint taken before any batch, at another batch
    size: nothing of the epoch was taken, so the epoch starts at its beginning."""
    saved = loader(Indices(40), batch=2).state_dict()
    assert saved["batches"] == 0
    dl = loader(Indices(40), batch=4)
    dl.load_state_dict(saved)
    taken = batches(dl)
    assert len(taken) == 10 and taken == batches(loader(Indices(40), batch=4))
