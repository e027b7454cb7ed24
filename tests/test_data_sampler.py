"""EpochSeededSampler and the training loader: order and augmentation from (seed, epoch)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader

from fgvc.data import FolderDataModule
from fgvc.data.datamodule import _init_worker
from fgvc.data.sampler import EpochSeededSampler
from fgvc.data.transforms import build_transforms
from tests.replicas import make_folders

SIZE = 16
SEED = 5


def draw(length: int, seed: int, epoch: int) -> list[tuple[int, int]]:
    return list(EpochSeededSampler(length, seed, lambda: epoch))


# -- the sampler ---------------------------------------------------------------------------
def test_same_seed_and_epoch_give_the_same_permutation_and_seeds():
    first = draw(50, 3, 0)
    assert first == draw(50, 3, 0)
    indices = [i for i, _ in first]
    seeds = [s for _, s in first]
    assert sorted(indices) == list(range(50)) and indices != list(range(50))
    assert all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds)
    assert len(set(seeds)) == 50  # every sample its own augmentation seed
    assert len(EpochSeededSampler(50, 3, lambda: 0)) == 50
    assert draw(0, 3, 0) == [] and [i for i, _ in draw(1, 3, 0)] == [0]


@pytest.mark.parametrize("other", [(3, 1), (3, 2), (4, 0)], ids=["epoch1", "epoch2", "seed4"])
def test_another_epoch_or_seed_gives_another_order_and_other_seeds(other):
    base = draw(50, 3, 0)
    changed = draw(50, *other)
    assert [i for i, _ in changed] != [i for i, _ in base]
    seed_of = dict(base)
    same = sum(seed_of[i] == s for i, s in changed)
    assert same == 0  # the augmentation of each image changes too


def test_the_epoch_is_read_when_iteration_starts():
    epoch = [0]
    sampler = EpochSeededSampler(20, 1, lambda: epoch[0])
    at_zero = list(sampler)
    epoch[0] = 1
    sampler.set_epoch(7)  # Lightning's call changes nothing: epoch_fn decides
    assert list(sampler) == draw(20, 1, 1) != at_zero
    epoch[0] = 0
    assert list(sampler) == at_zero


# -- the training loader -------------------------------------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("sampled")
    make_folders(root, {"train": {"a": 6, "b": 6}})  # 10 training images after the 10% split
    return root


def datamodule(root, num_workers: int = 0, epoch: int = 0) -> FolderDataModule:
    """Random-resized crops and flips, so that every sample seed shows in the pixels."""
    dm = FolderDataModule(
        str(root),
        batch_size=5,
        num_workers=num_workers,
        image_size=SIZE,
        preset="generic",
        seed=SEED,
        persistent_workers=False,
    )
    dm.setup("fit")
    # what the loader reads: the epoch, and where this process stands among the processes
    dm.trainer = SimpleNamespace(current_epoch=epoch, global_rank=0, world_size=1, num_nodes=1)
    return dm


def batches(loader: DataLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images.clone(), labels.clone()) for images, labels in loader]


def expected_batches(dm: FolderDataModule, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The sampler's order, each image through a fresh pipeline seeded with its sample seed."""
    pipeline = build_transforms("generic", train=True, image_size=SIZE, normalize=False)
    images, labels = [], []
    for index, seed in draw(len(dm.train_set), SEED, epoch):
        pipeline.set_random_seed(seed)
        images.append(pipeline(image=dm.train_set.load(index))["image"])
        labels.append(dm.train_set.samples[index][1])
    full = len(images) // dm.batch_size * dm.batch_size
    return [
        (torch.stack(images[i : i + dm.batch_size]), torch.tensor(labels[i : i + dm.batch_size]))
        for i in range(0, full, dm.batch_size)
    ]


def assert_same(got, expected):
    assert len(got) == len(expected)
    for (images, labels), (want_images, want_labels) in zip(got, expected):
        assert torch.equal(labels, want_labels)
        assert torch.equal(images, want_images)


def test_each_sample_is_the_pipeline_seeded_with_its_sample_seed(folder):
    dm = datamodule(folder)
    assert len(dm.train_set) == 10
    got = batches(dm.train_dataloader())
    assert_same(got, expected_batches(dm, 0))
    assert not torch.equal(got[0][0], expected_batches(dm, 1)[0][0])  # the seeds do matter


def test_a_loader_built_at_epoch_0_and_iterated_at_epoch_1_gives_epoch_1(folder):
    dm = datamodule(folder, epoch=0)
    loader = dm.train_dataloader()
    at_zero = batches(loader)
    dm.trainer.current_epoch = 1
    at_one = batches(loader)
    assert_same(at_one, expected_batches(dm, 1))
    assert not torch.equal(at_one[0][1], at_zero[0][1]) or not torch.equal(
        at_one[0][0], at_zero[0][0]
    )


@pytest.mark.parametrize("epoch", [0, 1])
def test_zero_and_two_workers_give_the_same_batches(folder, epoch):
    in_process = batches(datamodule(folder, num_workers=0, epoch=epoch).train_dataloader())
    torch.manual_seed(123)  # another base seed for the workers: must not matter
    in_workers = batches(datamodule(folder, num_workers=2, epoch=epoch).train_dataloader())
    assert_same(in_workers, in_process)
    assert_same(in_workers, expected_batches(datamodule(folder), epoch))


def test_workers_draw_distinct_streams_without_sample_seeds(folder):
    """Indexed by plain integers (no EpochSeededSampler), each worker still augments with
    its own random stream: the same image in both workers' first slot differs."""
    dm = datamodule(folder)
    same_image = dm.train_set.subset([0] * 4, transform=dm.train_set.transform)
    loader = DataLoader(same_image, batch_size=2, num_workers=2, worker_init_fn=_init_worker)
    torch.manual_seed(0)
    first, second = [images for images, _ in loader]  # batch i comes from worker i
    assert not torch.equal(first[0], second[0])
    torch.manual_seed(0)
    again = [images for images, _ in loader]
    assert torch.equal(again[0], first) and torch.equal(again[1], second)


def test_every_training_shard_is_full_even_with_fewer_images_than_processes():
    """Unequal shards would give the processes different step counts: DDP would hang."""
    from fgvc.data.sampler import EpochSeededSampler

    for length, world in ((1, 4), (3, 8), (10, 4)):
        shards = [list(EpochSeededSampler(length, 0, lambda: 0, r, world)) for r in range(world)]
        assert all(len(shard) == len(shards[0]) == -(-length // world) for shard in shards)
        seen = {index for shard in shards for index, _ in shard}
        assert seen == set(range(length))  # every image is in some shard
