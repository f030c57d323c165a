"""Paper 02 (Chuman & Kiya): block scrambling with per-image keys, augmentation before
encryption, test keys K_T and the server's flip test-time augmentation
(ppml.papers.block_scramble_augmentation, ppml.transforms)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ppml.ciphers import BlockScramble
from ppml.keys import BlockScrambleKey
from ppml.papers.block_scramble_augmentation import (GRIDMASK_32, FreshBlockScramble, IndexedBatchLoader,
                                                     PerImageBlockScramble, block_scramble_keys,
                                                     block_scramble_pipelines, mirror_block_perm, scramble_blocks,
                                                     unscramble_blocks)
from ppml.loader import BatchLoader
from ppml.train import evaluate
from ppml.transforms import Compose, EncryptBatch, GridMask, RandomCrop, RandomHorizontalFlip, hflip, identity


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen(seed))


# ------------------------------------------------------------------ the batched block permutation

@pytest.mark.parametrize("block", [4, 8, 16])
def test_scramble_blocks_equals_the_block_scramble_cipher(block):
    x = images(6)
    keys = block_scramble_keys(6, block_size=block, seed=block)
    perms = torch.from_numpy(np.stack([k.block_perm for k in keys]))
    y = scramble_blocks(x, perms, block)  # one key per image, one gather
    for i, k in enumerate(keys):
        assert torch.equal(y[i:i + 1], BlockScramble(key=k)(x[i:i + 1]))
    assert torch.equal(unscramble_blocks(y, perms, block), x)
    # one key for the whole batch; float input exact too
    assert torch.equal(scramble_blocks(x, perms[0], block), BlockScramble(key=keys[0])(x))
    xf = x.float() / 255
    assert torch.equal(unscramble_blocks(scramble_blocks(xf, perms, block), perms, block), xf)


def test_scramble_blocks_moves_whole_blocks_and_checks_its_input():
    x = torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4)
    y = scramble_blocks(x, torch.tensor([3, 2, 1, 0]), 2)
    assert y[0, 0].tolist() == [[10, 11, 8, 9], [14, 15, 12, 13], [2, 3, 0, 1], [6, 7, 4, 5]]
    with pytest.raises(ValueError, match="not divisible by block size 3"):
        scramble_blocks(x, torch.arange(1), 3)
    with pytest.raises(ValueError, match=r"perms must have shape \(4,\) or \(1, 4\)"):
        scramble_blocks(x, torch.arange(5), 2)
    with pytest.raises(ValueError, match="integer block indices"):
        scramble_blocks(x, torch.arange(4.0), 2)
    with pytest.raises(ValueError, match="batch tensor"):
        scramble_blocks(x[0], torch.arange(4), 2)


# ------------------------------------------------------------------ the server's flip (TTA)

def test_flip_of_encrypted_image_is_the_flipped_image_under_the_mirrored_key():
    x = images(32, seed=1)
    perms = torch.rand(32, 16, generator=gen(2)).argsort(-1)
    mirrored = mirror_block_perm(perms, (4, 4))
    # exact identity: hflip(S_K(x)) = S_{m∘K∘m}(hflip(x))
    assert torch.equal(hflip(scramble_blocks(x, perms, 8)), scramble_blocks(hflip(x), mirrored, 8))
    # ... which is NOT the flipped image under the same key, unless K commutes with the mirror
    same_key = (hflip(scramble_blocks(x, perms, 8)) == scramble_blocks(hflip(x), perms, 8)).flatten(1).all(1)
    commutes = (mirrored == perms).all(1)
    assert torch.equal(same_key, commutes) and not bool(commutes.any())
    assert torch.equal(mirror_block_perm(mirrored, (4, 4)), perms)  # an involution
    ident = torch.arange(16)
    assert torch.equal(mirror_block_perm(ident, (4, 4)), ident)
    assert torch.equal(hflip(scramble_blocks(x, ident, 8)), scramble_blocks(hflip(x), ident, 8))


def test_mirrored_keys_of_uniform_keys_are_uniform():
    # With per-image keys K ~ uniform, K' = m∘K∘m is uniform too (a bijection of the key space),
    # so a server-flipped encrypted image is distributed like a flipped image encrypted afresh.
    perms = torch.rand(20000, 4, generator=gen(3)).argsort(-1)  # 2×2 blocks: 24 keys
    codes = lambda p: (p * torch.tensor([1, 4, 16, 64])).sum(1)
    a = torch.bincount(codes(perms), minlength=256)
    b = torch.bincount(codes(mirror_block_perm(perms, (2, 2))), minlength=256)
    assert int((a > 0).sum()) == int((b > 0).sum()) == 24
    assert float(b[b > 0].min()) > 20000 / 24 * 0.8 and float(b.max()) < 20000 / 24 * 1.2


# ------------------------------------------------------------------ keys

def test_block_scramble_keys_from_one_seed_or_os_entropy():
    ks = block_scramble_keys(4, image_size=32, block_size=8, seed=7)
    assert len(ks) == 4 and all(isinstance(k, BlockScrambleKey) and k.block_size == 8 for k in ks)
    assert len({k.sha256() for k in ks}) == 4
    assert ks == block_scramble_keys(4, image_size=32, block_size=8, seed=7)
    assert ks != block_scramble_keys(4, image_size=32, block_size=8, seed=8)
    a, b = block_scramble_keys(2), block_scramble_keys(2)  # OS entropy: different every time
    assert {k.sha256() for k in a}.isdisjoint({k.sha256() for k in b})
    with pytest.raises(ValueError, match="positive int"):
        block_scramble_keys(0)
    with pytest.raises(ValueError, match="seed must be"):
        block_scramble_keys(2, seed=1.5)
    with pytest.raises(ValueError, match="not divisible by block size 5"):
        block_scramble_keys(2, block_size=5)


def test_per_image_keys_table_is_per_image_and_redrawn_every_call():
    t = PerImageBlockScramble(num_images=50, num_keys=4, image_size=32, block_size=8, seed=0)
    assert t.perms.shape == (50, 4, 16) and t.num_keys == 4 and t.num_images == 50
    assert (t.perms.long().sort(-1).values == torch.arange(16)).all()  # every entry a permutation
    # N·J keys, (almost surely) all different: every image has its own keys
    assert len({tuple(p) for p in t.perms.reshape(-1, 16).tolist()}) == 200
    x, idx = images(50), torch.arange(50)
    g = gen(1)
    y1 = t(x, g, index=idx)
    s1 = t.last_keys.clone()
    for j in range(50):
        assert torch.equal(y1[j], scramble_blocks(x[j:j + 1], t.perms[j, s1[j]].long(), 8)[0])
    assert torch.equal(t.inverse(y1, index=idx), x)
    y2 = t(x, g, index=idx)  # the next epoch: s drawn anew per image
    s2 = t.last_keys.clone()
    assert not torch.equal(s1, s2) and sorted(set(s1.tolist() + s2.tolist())) == [0, 1, 2, 3]
    assert torch.equal(t.inverse(y2, index=idx, keys=s2), x)
    assert torch.equal(t(x, gen(1), index=idx), y1)  # reproducible from the generator
    # the same image under the same key number in two batches gives the same ciphertext
    assert torch.equal(t(x[3:4], index=[3], keys=2), t(x[:5], index=torch.arange(5), keys=2)[3:4])
    # a table made from the same seed is the same; from OS entropy it is not
    assert torch.equal(PerImageBlockScramble(50, 4, seed=0).perms, t.perms)
    assert not torch.equal(PerImageBlockScramble(50, 4).perms, t.perms)


def test_per_image_keys_with_one_key_give_the_same_encryption_every_epoch():
    t = PerImageBlockScramble(num_images=10, num_keys=1, seed=0)
    x = images(10)
    assert torch.equal(t(x, gen(1), index=torch.arange(10)), t(x, gen(2), index=torch.arange(10)))


def test_per_image_keys_errors_are_clear():
    t = PerImageBlockScramble(num_images=10, num_keys=2, seed=0)
    x = images(4)
    with pytest.raises(ValueError, match="needs index=.*IndexedBatchLoader"):
        t(x, gen(0))
    with pytest.raises(ValueError, match=r"image indices must lie in \[0, 10\)"):
        t(x, gen(0), index=[0, 1, 2, 10])
    with pytest.raises(ValueError, match="one dataset index per image"):
        t(x, gen(0), index=[0, 1])
    with pytest.raises(ValueError, match=r"key numbers must lie in \[0, 2\)"):
        t(x, index=[0, 1, 2, 3], keys=2)
    with pytest.raises(ValueError, match="built for"):
        t(images(4, size=16), gen(0), index=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="no matching previous call"):
        PerImageBlockScramble(num_images=10, num_keys=2, seed=0).inverse(x, index=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="num_keys must be a positive int"):
        PerImageBlockScramble(num_images=10, num_keys=0)
    with pytest.raises(ValueError, match="not divisible by block size 5"):
        PerImageBlockScramble(num_images=10, block_size=5)


def test_fresh_test_keys_differ_per_image_and_per_call():
    t = FreshBlockScramble(block_size=8)
    x = images(64).expand(64, 3, 32, 32)[:1].expand(64, 3, 32, 32).contiguous()  # one image, 64 copies
    y = t(x, gen(0))
    p = t.last_perms.clone()
    assert len({tuple(r) for r in p.tolist()}) == 64  # a different key for every test image
    assert torch.equal(t.inverse(y), x)
    t(x, gen(1))
    assert not torch.equal(t.last_perms, p)
    with pytest.raises(ValueError, match="not divisible by block size 8"):
        t(images(2, size=20), gen(0))


# ------------------------------------------------------------------ loader

def test_indexed_loader_passes_indices_and_matches_the_base_loader():
    x = images(37)
    y = torch.arange(37)
    aug = [RandomCrop(32, padding=4), RandomHorizontalFlip()]
    a = IndexedBatchLoader(x, y, 8, transforms=aug, seed=3)
    b = BatchLoader(x, y, 8, transforms=aug, seed=3)
    for e in (0, 1):
        a.set_epoch(e)
        b.set_epoch(e)
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)

    class Record(nn.Module):
        needs_index = True

        def forward(self, x, g=None, *, index):
            self.seen = index
            return x

    rec = Record()
    loader = IndexedBatchLoader(x, y, 8, transforms=[rec], seed=3)
    for _, yb in loader:
        assert torch.equal(rec.seen, yb)  # labels here are the indices


def test_training_pipeline_augments_first_then_encrypts_with_a_new_key_every_epoch():
    x, y = images(40, seed=4), torch.arange(40)
    p = block_scramble_pipelines("per_image", num_images=40, num_keys=4, key_seed=0)
    enc = p.train[-1]
    loader = p.train_loader((x, y), batch_size=40, seed=5)
    loader.to_float = False
    aug_only = BatchLoader(x, y, 40, transforms=p.train[:-1], seed=5, to_float=False)
    keys = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        aug_only.set_epoch(epoch)
        (xe, ye), (xa, _) = next(iter(loader)), next(iter(aug_only))
        # decrypting the client's output with its keys gives exactly the augmented image
        assert torch.equal(enc.inverse(xe, index=ye), xa)
        keys.append(enc.last_keys[torch.argsort(ye)].clone())
    assert not torch.equal(keys[0], keys[1]) and not torch.equal(keys[1], keys[2])


def test_pipeline_variants_and_errors():
    p = block_scramble_pipelines("per_image", num_images=10, augment=False, key_seed=0)
    assert [type(t).__name__ for t in p.train] == ["PerImageBlockScramble"]
    assert [type(t).__name__ for t in p.test] == ["FreshBlockScramble"] and p.server == [identity]
    assert "no TTA" in p.describe() and "N=4 keys per image" in p.describe() and "encrypt only" in p.describe()
    p = block_scramble_pipelines("none", augment=True)
    assert [type(t).__name__ for t in p.train] == ["RandomCrop", "RandomHorizontalFlip", "GridMask"]
    assert p.server == [identity, hflip] and p.block_size is None and "test: crop+flip; server TTA" in p.describe()
    p = block_scramble_pipelines("shared", num_keys=3, block_size=4, key_seed=1)
    tr, te = p.train[-1], p.test[-1]
    assert isinstance(tr, EncryptBatch) and tr.num_keys == 3 and tr is not te
    assert all(a is b for a, b in zip(tr.ciphers, te.ciphers))  # test images use a key of the set
    assert block_scramble_pipelines("none", augment=True, tta=False).server == [identity]
    gm = next(t for t in block_scramble_pipelines("none").train if isinstance(t, GridMask))
    assert (gm.d1, gm.d2, gm.ratio, gm.rotate, gm.mode, gm.prob) == tuple(GRIDMASK_32.values())
    with pytest.raises(ValueError, match="encrypt must be one of none, per_image, shared"):
        block_scramble_pipelines("etc")
    with pytest.raises(ValueError, match="needs num_images="):
        block_scramble_pipelines("per_image")
    with pytest.raises(ValueError, match="not divisible by block size 7"):
        block_scramble_pipelines("none", block_size=7)


def test_evaluate_on_the_client_test_pipeline_with_server_tta():
    x, y = images(30, seed=6), torch.randint(0, 3, (30,), generator=gen(6))
    p = block_scramble_pipelines("per_image", num_images=30, key_seed=0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3))
    r = evaluate(model, p.test_loader((x, y), 16, seed=2), transforms=p.server)
    assert r["n"] == 30 and len(r["acc_each"]) == 2
    # the client's test encryption is reproducible from the loader seed (same K_T on every call)
    assert evaluate(model, p.test_loader((x, y), 16, seed=2), transforms=p.server) == r


# ------------------------------------------------------------------ GridMask as the paper uses it

def test_gridmask_mode1_fraction_matches_expectation_and_is_seeded():
    # mode 1 (Chen et al.'s ImageNet setting) removes the (d − l)² squares: expected removed
    # fraction prob · E_d[(1 − l/d)²] with l = floor(d·ratio + 0.5).
    gm = GridMask(14, 32, ratio=0.6, rotate=1, prob=0.8, mode=1)
    fr = [(1 - math.floor(d * 0.6 + 0.5) / d) ** 2 for d in range(14, 32)]
    expected = 0.8 * sum(fr) / len(fr)
    assert gm.expected_masked_fraction() == pytest.approx(expected)
    removed = 1 - gm.sample_mask(4000, 32, 32, gen(0)).float().mean((1, 2))
    assert abs(float(removed.mean()) - expected) < 5 * float(removed.std()) / math.sqrt(4000) + 1e-3
    paper = GridMask(**GRIDMASK_32)  # with rotation: close to the same fraction
    removed = 1 - paper.sample_mask(4000, 32, 32, gen(1)).float().mean()
    assert abs(float(removed) - paper.expected_masked_fraction()) < 0.03
    x = images(16)
    assert torch.equal(paper(x, gen(3)), paper(x, gen(3))) and not torch.equal(paper(x, gen(3)), paper(x, gen(4)))


# ------------------------------------------------------------------ Fig. 3's gap against compute

def test_gap_trend_per_epoch_gaps_crossing_and_figure():
    from ppml.papers.block_scramble_augmentation import gap_trend
    from ppml.plots import gap_trend_figure
    import matplotlib.pyplot as plt

    curves = {("none", False): [0.5, 0.7, 0.8, 0.85], ("per_image", False): [0.3, 0.6, 0.75, 0.75],
              ("none", True): [0.4, 0.6, 0.8, 0.86], ("per_image", True): [0.1, 0.55, 0.65, 0.8]}
    t = gap_trend(curves)
    assert t["epochs"] == [1, 2, 3, 4]
    assert t["no_augmentation"] == pytest.approx([0.2, 0.1, 0.05, 0.1])
    assert t["augmentation_tta"] == pytest.approx([0.3, 0.05, 0.15, 0.06])
    assert t["narrower"] == [False, True, False, True]
    assert t["crossing_epoch"] == 4  # narrower from epoch 4 to the end (not from the transient epoch 2)
    assert t["final"] == pytest.approx({"no_augmentation": 0.1, "augmentation_tta": 0.06})
    assert t["accuracy"]["per_image_aug_tta"] == curves[("per_image", True)]
    widening = {**curves, ("per_image", True): [0.1, 0.5, 0.6, 0.7]}
    assert gap_trend(widening)["crossing_epoch"] is None
    fig = gap_trend_figure(t, scale="smoke", note="a note")
    assert len(fig.axes) == 2 and "from epoch 4" in fig.axes[1].get_title()
    plt.close(fig)
    with pytest.raises(ValueError, match="missing"):
        gap_trend({k: v for k, v in curves.items() if k != ("none", True)})
    with pytest.raises(ValueError, match="equally long"):
        gap_trend({**curves, ("none", True): [0.4, 0.6]})
    with pytest.raises(ValueError, match="equally long"):  # fit without val_data gives None per epoch
        gap_trend({**curves, ("none", True): [None] * 4})
