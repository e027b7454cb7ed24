"""EpochSeededSampler and the training loader: order and augmentation from (seed, epoch)."""

from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader

from fgvc.data import FolderDataModule
from fgvc.data.loaders import init_worker
from fgvc.data.sampler import ClassBalancedSampler, EpochSeededSampler, train_sampler
from fgvc.data.transforms import build_transforms
from tests.replicas import make_folders

SIZE = 16
SEED = 5


def pairs(sampler, epoch: int) -> list[tuple[int, int]]:
    """The sampler's ``(index, sample_seed)`` pairs; each sample also carries its epoch."""
    keys = list(sampler)
    assert all(len(key) == 3 and key[2] == epoch for key in keys)
    return [(index, seed) for index, seed, _ in keys]


def draw(length: int, seed: int, epoch: int) -> list[tuple[int, int]]:
    return pairs(EpochSeededSampler(length, seed, lambda: epoch), epoch)


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
    at_zero = pairs(sampler, 0)
    epoch[0] = 1
    sampler.set_epoch(7)  # Lightning's call changes nothing: epoch_fn decides
    assert pairs(sampler, 1) == draw(20, 1, 1) != at_zero
    epoch[0] = 0
    assert pairs(sampler, 0) == at_zero


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
    loader = DataLoader(same_image, batch_size=2, num_workers=2, worker_init_fn=init_worker)
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
        shards = [
            pairs(EpochSeededSampler(length, 0, lambda: 0, r, world), 0) for r in range(world)
        ]
        assert all(len(shard) == len(shards[0]) == -(-length // world) for shard in shards)
        seen = {index for shard in shards for index, _ in shard}
        assert seen == set(range(length))  # every image is in some shard


# -- the class-balanced sampler ------------------------------------------------------------
# 3 classes of 60, 12 and 3 images, labels interleaved so that class and index are unrelated
LONG_TAIL = [c for c, n in ((0, 60), (1, 12), (2, 3)) for _ in range(n)]
LONG_TAIL = [LONG_TAIL[(7 * i) % len(LONG_TAIL)] for i in range(len(LONG_TAIL))]


def balanced(targets, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list:
    return pairs(ClassBalancedSampler(targets, seed, lambda: epoch, rank, world), epoch)


def test_balanced_draw_is_fixed_by_seed_and_epoch():
    first = balanced(LONG_TAIL, 3, 0)
    assert first == balanced(LONG_TAIL, 3, 0)
    assert len(first) == len(LONG_TAIL) == len(ClassBalancedSampler(LONG_TAIL, 3, lambda: 0))
    for other in (balanced(LONG_TAIL, 3, 1), balanced(LONG_TAIL, 4, 0)):
        assert [i for i, _ in other] != [i for i, _ in first]
        assert not {s for _, s in other} & {s for _, s in first}  # other augmentations
    assert first != draw(len(LONG_TAIL), 3, 0)  # not the uniform sampler's order


def test_balanced_draw_gives_every_class_its_share_and_spreads_repeats():
    """N draws over C classes: N // C each, N % C classes one more; a class's images are
    used as evenly as its quota allows (a rare image at most once more than another)."""
    n, classes = len(LONG_TAIL), sorted(set(LONG_TAIL))
    members = {c: [i for i, t in enumerate(LONG_TAIL) if t == c] for c in classes}
    for epoch in range(4):
        order = balanced(LONG_TAIL, 9, epoch)
        per_class = Counter(LONG_TAIL[i] for i, _ in order)
        assert sorted(per_class.values()) == sorted(
            [n // len(classes) + (c < n % len(classes)) for c in classes]
        )
        uses = Counter(i for i, _ in order)
        for c in classes:
            quota, size = per_class[c], len(members[c])
            counts = [uses.get(i, 0) for i in members[c]]
            assert min(counts) == quota // size and max(counts) == -(-quota // size)
        # each draw its own augmentation seed, a repeated image included
        assert len({s for _, s in order}) == n
    # the frequent class is subsampled: other epochs bring its other images
    seen = {i for e in range(4) for i, _ in balanced(LONG_TAIL, 9, e) if LONG_TAIL[i] == 0}
    assert len(seen) > n // len(classes)


@pytest.mark.parametrize("world", [2, 3, 4])
def test_balanced_shards_together_are_the_one_process_draw(world):
    whole = balanced(LONG_TAIL, 5, 2)
    shards = [balanced(LONG_TAIL, 5, 2, rank, world) for rank in range(world)]
    per_shard = -(-len(whole) // world)
    assert all(len(shard) == per_shard for shard in shards)  # DDP: equal step counts
    interleaved = [shards[j % world][j // world] for j in range(per_shard * world)]
    padded = (whole * 2)[: per_shard * world]  # the first draws repeated, as the uniform one
    assert interleaved == padded


def test_balanced_shards_are_balanced_within_a_hypergeometric_bound():
    """Each process's shard is a fixed set of positions of a shuffled order: its count of
    class c is hypergeometric (population N, K_c draws of c, shard size n). Every count
    stays within 4.5 standard deviations of n K_c / N (a bound, not a fitted number)."""
    targets = [c % 7 for c in range(700)] + [0] * 1400  # class 0: 1500 images, others 100
    world, n_total = 4, len(targets)
    whole = balanced(targets, 11, 0)
    quota = Counter(targets[i] for i, _ in whole)
    shard_size = n_total // world
    for rank in range(world):
        counts = Counter(targets[i] for i, _ in balanced(targets, 11, 0, rank, world))
        for c, k in quota.items():
            p = k / n_total
            sd = math.sqrt(shard_size * p * (1 - p) * (n_total - shard_size) / (n_total - 1))
            assert abs(counts[c] - shard_size * p) <= 4.5 * sd, (rank, c, counts[c])
    # against the 15:1 imbalance a uniform shard would show
    uniform = Counter(targets[i] for i, _ in draw_shard(n_total, 11, world))
    assert uniform[0] > 10 * uniform[1]


def draw_shard(length: int, seed: int, world: int) -> list[tuple[int, int]]:
    return pairs(EpochSeededSampler(length, seed, lambda: 0, 0, world), 0)


def test_balanced_sampler_edge_cases():
    assert balanced([], 0, 0) == []
    assert [i for i, _ in balanced([4, 4, 4], 0, 0)] != []  # one class: every image, shuffled
    assert sorted(i for i, _ in balanced([4, 4, 4], 0, 0)) == [0, 1, 2]
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\)"):
        ClassBalancedSampler([0, 1], 0, lambda: 0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="^sampler 'weighted': choose uniform or balanced$"):
        train_sampler("weighted", [0, 1], 0, lambda: 0)


def test_balanced_training_loader(tmp_path):
    make_folders(tmp_path, {"train": {"a": 30, "b": 4}})
    dm = FolderDataModule(
        str(tmp_path), batch_size=5, num_workers=0, image_size=SIZE, seed=SEED, sampler="balanced"
    )
    dm.setup("fit")
    dm.trainer = SimpleNamespace(current_epoch=0, global_rank=0, world_size=1, num_nodes=1)
    assert dm.train_class_counts() == [27, 3]  # after the stratified 10% hold-out
    labels = torch.cat([labels for _, labels in dm.train_dataloader()]).tolist()
    assert Counter(labels) == {0: 15, 1: 15}  # as many draws as images, half each
    with pytest.raises(
        ValueError, match="^data.init_args.sampler 'x': choose uniform or balanced$"
    ):
        FolderDataModule(str(tmp_path), sampler="x")
