"""BatchLoader: per-epoch determinism, sharding, drop_last, transforms and conversion."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from ppml.loader import BatchLoader, make_generator


def data(n: int = 23):
    # Image i is filled with the value i, so a batch reveals which samples it holds.
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return images, torch.arange(n)


def epoch_batches(loader: BatchLoader, epoch: int):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=g) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)


def add_noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return x + torch.randint(0, 3, x.shape, generator=g, dtype=torch.uint8)


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def test_epoch_is_deterministic_and_independent_of_history():
    images, labels = data()
    kw = dict(batch_size=5, transforms=[random_flip, add_noise], seed=7)
    straight = BatchLoader(images, labels, **kw)
    runs = [epoch_batches(straight, e) for e in range(3)]
    # A fresh loader that jumps straight to epoch 2 (a resumed run) sees the same batches.
    fresh = BatchLoader(images, labels, **kw)
    assert same(epoch_batches(fresh, 2), runs[2])
    # Iterating again replays the epoch, even after a partial iteration.
    it = iter(fresh)
    next(it)
    assert same([(x, y) for x, y in fresh], runs[2])


def test_epochs_and_seeds_differ():
    images, labels = data()
    a = BatchLoader(images, labels, 5, seed=1)
    e0, e1 = epoch_batches(a, 0), epoch_batches(a, 1)
    assert not same(e0, e1)
    assert not same(e0, epoch_batches(BatchLoader(images, labels, 5, seed=2), 0))
    # Every epoch is a permutation of the whole data set.
    for ep in (e0, e1):
        assert sorted(torch.cat([y for _, y in ep]).tolist()) == list(range(23))
        # Images and labels stay paired.
        for x, y in ep:
            assert torch.equal((x[:, 0, 0, 0] * 255).round().long(), y)


def test_no_shuffle_is_in_order():
    images, labels = data(10)
    got = torch.cat([y for _, y in BatchLoader(images, labels, 3, shuffle=False)])
    assert got.tolist() == list(range(10))


@pytest.mark.parametrize("n,world", [(23, 2), (24, 4), (5, 3), (2, 4)])
def test_sharding_disjoint_equal_and_covering(n, world):
    images, labels = data(n)
    shards = []
    for r in range(world):
        l = BatchLoader(images, labels, 4, seed=3, rank=r, world_size=world)
        l.set_epoch(5)
        shards.append(torch.cat([y for _, y in l]).tolist())
        assert l.indices().tolist() == shards[-1]
    per = math.ceil(n / world)
    assert all(len(s) == per for s in shards)  # equal sizes keep DDP ranks in lock-step
    flat = [i for s in shards for i in s]
    assert set(flat) == set(range(n))  # covering
    if n % world == 0:
        assert len(set(flat)) == len(flat)  # disjoint
    else:
        # Padding by wrap-around repeats exactly (per·world − n) samples of the permutation.
        assert len(flat) - len(set(flat)) == per * world - n


def test_shards_are_slices_of_one_permutation():
    images, labels = data(12)
    whole = BatchLoader(images, labels, 4, seed=9)
    perm = whole.indices(epoch=3)
    for r in range(3):
        part = BatchLoader(images, labels, 4, seed=9, rank=r, world_size=3).indices(epoch=3)
        assert torch.equal(part, perm[r::3])


def test_drop_last():
    images, labels = data(23)
    keep = BatchLoader(images, labels, 5, drop_last=False)
    drop = BatchLoader(images, labels, 5, drop_last=True)
    assert len(keep) == 5 and len(drop) == 4
    assert [len(y) for _, y in keep] == [5, 5, 5, 5, 3]
    assert [len(y) for _, y in drop] == [5, 5, 5, 5]
    assert len(BatchLoader(images, labels, 30, drop_last=True)) == 0


def test_transforms_receive_the_generator():
    images, labels = data(10)
    seen = []

    def spy(x, g):
        assert isinstance(g, torch.Generator) and g.device.type == "cpu"
        seen.append(torch.rand(1, generator=g).item())
        return x

    l = BatchLoader(images, labels, 4, transforms=spy, seed=4)
    epoch_batches(l, 0)
    first = list(seen)
    assert len(first) == 3 and len(set(first)) == 3  # one generator advanced through the epoch
    seen.clear()
    epoch_batches(l, 0)
    assert seen == first
    seen.clear()
    epoch_batches(l, 1)
    assert seen != first
    # Per-rank transform streams differ, so ranks do not apply identical augmentations.
    seen.clear()
    epoch_batches(BatchLoader(images, labels, 4, transforms=spy, seed=4, rank=1, world_size=2), 0)
    assert seen[0] != first[0]


def test_to_float_and_float_transforms():
    images, labels = data(4)
    x, _ = next(iter(BatchLoader(images, labels, 4, shuffle=False)))
    assert x.dtype == torch.float32 and torch.allclose(x[:, 0, 0, 0], torch.arange(4) / 255)
    x, _ = next(iter(BatchLoader(images, labels, 4, shuffle=False, to_float=False)))
    assert x.dtype == torch.uint8
    # A transform that already returns floats (e.g. a mixing cipher) is not divided again.
    half = lambda x, g: x.float() / 510  # noqa: E731
    x, _ = next(iter(BatchLoader(images, labels, 4, shuffle=False, transforms=half)))
    assert torch.allclose(x[:, 0, 0, 0], torch.arange(4) / 510)


def test_from_dataset_and_pairs():
    images, labels = data(9)
    ds = SimpleNamespace(images=images, labels=labels)
    a = BatchLoader.from_dataset(ds, 4, seed=1)
    b = BatchLoader.from_dataset((images, labels), 4, seed=1)
    assert len(a) == 3 and same(epoch_batches(a, 0), epoch_batches(b, 0))
    with pytest.raises(TypeError, match="images"):
        BatchLoader.from_dataset(object(), 4)


def test_device_argument_moves_batches():
    images, labels = data(6)
    x, y = next(iter(BatchLoader(images, labels, 6, device="cpu")))
    assert x.device.type == "cpu" and y.device.type == "cpu"


def test_generator_helper():
    a = torch.rand(4, generator=make_generator(1, 2))
    assert torch.equal(a, torch.rand(4, generator=make_generator(1, 2)))
    assert not torch.equal(a, torch.rand(4, generator=make_generator(1, 3)))
    assert not torch.equal(a, torch.rand(4, generator=make_generator(2, 1)))


def test_validation_errors():
    images, labels = data(6)
    with pytest.raises(ValueError, match="differ in length"):
        BatchLoader(images, labels[:5], 2)
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(images, labels, 0)
    with pytest.raises(ValueError, match="rank"):
        BatchLoader(images, labels, 2, rank=2, world_size=2)
    with pytest.raises(TypeError, match="callables"):
        BatchLoader(images, labels, 2, transforms=[1])
    with pytest.raises(ValueError, match="epoch"):
        BatchLoader(images, labels, 2).set_epoch(-1)
