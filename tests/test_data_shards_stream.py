"""The training stream over shards: every image once an epoch with equal batch counts on
every process, order and augmentation from (seed, epoch), exact resume inside an epoch
(the loader alone and under a plain ``pl.Trainer``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from fgvc.data.shards.stream import EpochPlan, ShardStream, ShardTrainLoader
from fgvc.data.shards.write import write_shards
from fgvc.data.transforms import build_transforms
from tests.replicas import make_folders


def one_image_a_class(root: Path, count: int) -> Path:
    """Shards of ``count`` images, each its own class: a label names an image."""
    folders = make_folders(root / "folders", {"train": {f"c{i:03d}": 1 for i in range(count)}})
    write_shards("folder", folders, str(root / "shards"), jobs=1, chunk_bytes="3KB", log=str)
    return root / "shards" / "train"


def loader(split: Path, rank=0, world=1, workers=0, batch=3, epoch=0, seed=5, **kw):
    pipeline = build_transforms("generic", train=True, image_size=16, normalize=False)
    stream = ShardStream(str(split), pipeline=pipeline, seed=seed, rank=rank, world_size=world)
    return ShardTrainLoader(
        stream, epoch_fn=lambda: epoch, batch_size=batch, num_workers=workers, **kw
    )


def batches(dl) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images.clone(), labels.clone()) for images, labels in dl]


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b)
    )


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_plan_every_image_once_and_equal_batches(world, workers, batch):
    rng = np.random.default_rng(world * 100 + workers * 10 + batch)
    for _ in range(20):
        sizes = rng.integers(1, 9, size=rng.integers(1, 8))
        starts = np.concatenate([[0], np.cumsum(sizes)])
        intervals = [[int(s), int(s), int(e), int(e)] for s, e in zip(starts, starts[1:])]
        total = int(starts[-1])
        plan = EpochPlan.build(intervals, rng.permutation(len(sizes)), world, workers, batch)
        seen = [i for spans in plan.intervals for _, a, b, _ in spans for i in range(a, b)]
        assert sorted(seen) == list(range(total))  # each image once...
        pads = [i for p in plan.pads for i in p]
        leftover = total % (world * batch)
        if 0 < leftover < world and total > world * batch or total < world:
            assert 0 < len(pads) < world  # ...and < world repeats where unavoidable
        else:
            assert pads == []
        counts = []
        for rank in range(world):
            mine = range(rank * workers, (rank + 1) * workers)
            items = [
                sum(b - a for _, a, b, _ in plan.intervals[w]) + len(plan.pads[w]) for w in mine
            ]
            counts.append(sum(math.ceil(n / batch) for n in items))
            # round robin: every worker's batches are full but the rank's last one
            assert sum(n % batch != 0 for n in items) <= 1
        assert len(set(counts)) == 1 and counts[0] == max(1, math.ceil(total / (world * batch)))


@pytest.mark.parametrize(
    ("count", "world", "workers"), [(11, 2, 0), (15, 3, 2), (13, 3, 2), (9, 2, 1)]
)
def test_processes_see_every_image_once_in_as_many_batches(tmp_path, count, world, workers):
    split = one_image_a_class(tmp_path, count)
    for epoch in (0, 1):
        per_rank = [
            batches(loader(split, r, world, workers, batch=4, epoch=epoch)) for r in range(world)
        ]
        lengths = {len(b) for b in per_rank}
        assert lengths == {len(loader(split, 0, world, workers, batch=4))}
        labels = [int(v) for b in per_rank for _, lab in b for v in lab]
        # 9 images on 2 processes x 4: one image is left for 2 last batches - one repeat
        left = count % (world * 4)
        assert sorted(set(labels)) == list(range(count))
        assert len(labels) - count == (world - left if 0 < left < world else 0)
    first = [int(v) for _, lab in batches(loader(split, epoch=0)) for v in lab]
    second = [int(v) for _, lab in batches(loader(split, epoch=1)) for v in lab]
    assert sorted(first) == sorted(second) and first != second  # reshuffled each epoch


def test_augmentation_belongs_to_the_image_not_the_worker(tmp_path):
    split = one_image_a_class(tmp_path, 12)

    def by_image(dl) -> dict[int, bytes]:
        return {
            int(lab): img.numpy().tobytes() for imgs, labs in dl for img, lab in zip(imgs, labs)
        }

    zero, two = by_image(loader(split, workers=0)), by_image(loader(split, workers=2))
    assert zero == two and len(zero) == 12
    other_epoch = by_image(loader(split, workers=0, epoch=1))
    assert sum(other_epoch[k] != zero[k] for k in zero) >= 10  # new crops each epoch
    assert by_image(loader(split, workers=0, seed=6)) != zero


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_resumes_exactly_inside_an_epoch(tmp_path, workers):
    split = one_image_a_class(tmp_path, 14)
    full = batches(loader(split, workers=workers, epoch=2))
    assert len(full) == 5
    for k in (1, 3, 4):
        first = loader(split, workers=workers, epoch=2)
        it = iter(first)
        head = [(i.clone(), lab.clone()) for i, lab in (next(it) for _ in range(k))]
        state = first.state_dict()
        del it
        resumed = loader(split, workers=workers, epoch=2)
        resumed.load_state_dict(state)
        assert same(head + batches(resumed), full), k
        # the epoch after the resumed one is the uninterrupted run's next epoch
        resumed.epoch_fn = lambda: 3
        assert same(batches(resumed), batches(loader(split, workers=workers, epoch=3)))


def test_resume_on_another_layout_is_refused_in_one_line(tmp_path):
    from fgvc.errors import ConfigError

    split = one_image_a_class(tmp_path, 14)
    first = loader(split, workers=0)
    it = iter(first)
    next(it)
    state = first.state_dict()
    assert (state["batches"], state["epoch_batches"], state["world_size"]) == (1, 5, 1)
    with pytest.raises(
        ConfigError, match="saved inside an epoch with 1 process.es. x 3 images, 0 "
    ):
        loader(split, workers=2).load_state_dict(state)
    with pytest.raises(ConfigError, match="this run has 1 process.es. x 4 images"):
        loader(split, batch=4).load_state_dict(state)
    # a whole epoch taken: the next one starts on any layout, the uninterrupted run's
    for _ in it:
        pass
    done = first.state_dict()
    assert done["batches"] == done["epoch_batches"] == 5
    other = loader(split, workers=2, batch=4, epoch=1)
    other.load_state_dict(done)
    assert same(batches(other), batches(loader(split, workers=2, batch=4, epoch=1)))


class Stopped(Exception):
    """A run that died mid-epoch, after its last checkpoint."""


class Recorder(pl.LightningModule):
    """Trains a linear layer on the images and records what each step saw."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.fail_at = fail_at
        self.seen: list[tuple[int, int, bytes]] = []

    def training_step(self, batch, batch_idx):
        images, labels = batch
        if self.fail_at is not None and self.global_step == self.fail_at:
            raise Stopped
        self.seen.append((self.current_epoch, batch_idx, images.numpy().tobytes()))
        return self.layer(images.float().mean(dim=(2, 3))).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(data, model, folder: Path, ckpt_path: str | None = None) -> None:
    steps = pl.callbacks.ModelCheckpoint(
        dirpath=folder, every_n_train_steps=1, save_top_k=-1, filename="{step}"
    )
    epochs = pl.callbacks.ModelCheckpoint(
        dirpath=folder, save_on_train_epoch_end=True, save_top_k=-1, filename="end{epoch}"
    )
    trainer = pl.Trainer(
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[steps, epochs],
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)


@pytest.mark.parametrize("workers", [0, 2])
def test_trainer_resumes_the_stream_where_it_stopped(tmp_path, workers):
    from fgvc.data.shards.datamodule import ShardDataModule

    split = one_image_a_class(tmp_path, 14)

    def data() -> ShardDataModule:
        return ShardDataModule(
            str(split.parent), batch_size=3, num_workers=workers, image_size=16, val_split=0.0
        )

    whole = Recorder()
    fit(data(), whole, tmp_path / "whole")
    assert len(whole.seen) == 10  # 2 epochs of 5 batches

    # inside the first epoch, inside the second, from the end of the first (the loader's
    # state is not loaded there: the new epoch's order must still be the second one's)
    for stop, name in ((2, "step=2"), (7, "step=7"), (5, "endepoch=0")):
        stopped = Recorder(fail_at=stop)
        with pytest.raises(Stopped):
            fit(data(), stopped, tmp_path / f"stop{stop}")
        resumed = Recorder()
        ckpt = tmp_path / f"stop{stop}" / f"{name}.ckpt"
        fit(data(), resumed, tmp_path / f"resumed{stop}", ckpt_path=str(ckpt))
        assert stopped.seen + resumed.seen == whole.seen, stop
