"""ppml.attacks.jigsaw: the jigsaw-puzzle solver on block-scrambled and EtC images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppml.attacks import jigsaw as J
from ppml.ciphers import EtC, BlockScramble
from ppml.datasets import photo_crops
from ppml.keys import BlockScrambleKey, EtCKey
from ppml.papers.block_scramble_augmentation import scramble_blocks


def photos(n, size, seed):  # two small sample photos: quick to load
    return photo_crops(n, size, seed=seed, sources=["chelsea", "coffee"])


def smooth(size=32, seed=0):
    return J.smooth_test_image(size, seed=seed)[None]


def etc_key(size, block, seed, **override):
    k = EtCKey.generate(image_size=size, block_size=block, seed=seed)
    arrays = {a: override.get(a, getattr(k, a)) for a in ("block_perm", "rot_flip", "negpos", "channel_perm")}
    return EtCKey(**arrays, image_size=k.image_size, block_size=block, channels=3)


# ---------------------------------------------------------------------------- arrangements

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_true_arrangement_decrypts_etc_and_scrambling(seed):
    x = photos(1, 32, seed)
    key = etc_key(32, 8, seed)
    y = EtC(key=key)(x)
    assert torch.equal(J.assemble(y, J.true_arrangement(key), 8), x)
    assert torch.allclose(J.assemble(y.float() / 255, J.true_arrangement(key), 8), x.float() / 255, atol=1e-6)
    bkey = BlockScrambleKey.generate(image_size=32, block_size=4, seed=seed)
    assert torch.equal(J.assemble(BlockScramble(key=bkey)(x), J.true_arrangement(bkey), 4), x)
    perms = torch.stack([torch.randperm(16, generator=torch.Generator().manual_seed(s)) for s in range(3)])
    xs = photos(3, 32, seed)
    assert torch.equal(J.assemble(scramble_blocks(xs, perms, 8), J.true_arrangement(perms, grid=(4, 4)), 8), xs)


def test_global_transform_tables_match_whole_image_transforms():
    # a whole-image rot90/flip of a solved image is the arrangement transformed by the same code
    x = smooth()
    key = etc_key(32, 8, 3)
    y = EtC(key=key)(x)
    t = J.true_arrangement(key)
    for g in range(8):
        p = J._apply_d(torch.as_tensor(t.piece), g).numpy()
        d = J._COMP8[g, J._apply_d(torch.as_tensor(t.dihedral), g).numpy()]
        other = [J._apply_d(torch.as_tensor(a), g).numpy() for a in (t.negpos, t.channel)]
        moved = J.Arrangement(p, d, *other)
        assert torch.equal(J.assemble(y, moved, 8)[0], J._apply_d(x[0], g))
        s = J.score(moved, t, original=x, encrypted=y, block_size=8)
        assert s["direct"] == s["neighbour"] == s["largest_component"] == s["ssim"] == 1.0


# ---------------------------------------------------------------------------- compatibility

def test_mgc_matrix_product_equals_direct_formula():
    x = photos(1, 32, 4)
    p = J.to_pieces(x, 8)[0]
    d = J.mgc_dissimilarity(p, p, reg=1.0)
    w = J._to_work(p)

    def half(a, b):  # gradients into the seam from a's side, scored against a's edge statistics
        g = a[:, :, -1] - a[:, :, -2]                      # (C, B)
        mu = g.mean(1)
        cov = torch.cov(g) + torch.eye(3, dtype=g.dtype)
        cross = (b[:, :, 0] - a[:, :, -1]).T - mu          # (B, C)
        return float((cross @ torch.linalg.inv(cov) * cross).sum())

    for i, j in [(0, 1), (5, 6), (3, 12)]:
        direct = half(w[i], w[j]) + half(w[j].flip(-1), w[i].flip(-1))
        assert d[i, j].item() == pytest.approx(direct, rel=1e-9)


@pytest.mark.parametrize("source", ["smooth", "photo"])
def test_true_neighbours_are_most_compatible(source):
    x = smooth(64, seed=1) if source == "smooth" else photos(4, 64, 0)
    p = J.to_pieces(x, 8)
    hits = []
    for n in range(p.shape[0]):
        d = J.mgc_dissimilarity(p[n], p[n])
        d.fill_diagonal_(float("inf"))
        idx = torch.arange(64).reshape(8, 8)
        left, right = idx[:, :-1].reshape(-1), idx[:, 1:].reshape(-1)
        hits.append((d[left].argmin(1) == right).float().mean().item())
    assert min(hits) == 1.0 if source == "smooth" else np.mean(hits) > 0.6


# ---------------------------------------------------------------------------- solver

@pytest.mark.parametrize("block", [8, 4])
def test_solver_reassembles_block_scrambled_smooth_image_exactly(block):
    x = smooth(32, seed=2)
    n = (32 // block) ** 2
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(block))
    y = scramble_blocks(x, perm, block)
    r = J.jigsaw_attack(test_protected=y, block_size=block, scheme="BlockScramble",
                        truth=J.true_arrangement(perm, grid=(32 // block,) * 2),
                        test_plain=x)
    assert r["direct"] == r["neighbour"] == r["largest_component"] == 1.0
    assert r["ssim"] == pytest.approx(1.0)
    assert torch.equal(r["reconstruction"], x)


@pytest.mark.parametrize("block", [8, 4])
def test_solver_reassembles_etc_smooth_image_up_to_global_symmetry(block):
    x = smooth(32, seed=0)
    key = etc_key(32, block, 1)
    y = EtC(key=key)(x)
    sol = J.solve(y, block, scheme="EtC")
    s = J.score(sol, J.true_arrangement(key), original=x, encrypted=y, block_size=block)
    assert s == {"direct": 1.0, "neighbour": 1.0, "largest_component": 1.0, "colour": 1.0, "ssim": pytest.approx(1.0)}
    rec = J.aligned_reconstruction(y, sol, J.true_arrangement(key), block)
    assert torch.equal(rec, x)


def test_etc_negative_positive_and_channel_order_only():
    # blocks stay in place: only the colour steps of EtC; the solver must resolve them from neighbours
    x = smooth(32, seed=5)
    n = 16
    key = etc_key(32, 8, 7, block_perm=np.arange(n), rot_flip=np.zeros(n, np.int64))
    assert key.negpos.any() and key.channel_perm.any()
    y = EtC(key=key)(x)
    for features in ("full", "sorted"):
        sol = J.solve(y, 8, scheme="EtC", features=features)
        assert J.score(sol, J.true_arrangement(key))["colour"] == 1.0
    # without the colour stage the channel order stays unresolved (colour < 1), the geometry is still right
    sol = J.solve(y, 8, scheme="EtC", features="sorted", colour=False)
    s = J.score(sol, J.true_arrangement(key))
    assert s["direct"] == 1.0 and s["colour"] < 1.0


def test_block_scramble_solver_never_rotates_pieces():
    x = photos(2, 32, 3)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    sol = J.solve(scramble_blocks(x, perm, 4), 4, scheme="BlockScramble")
    assert (sol.dihedral == 0).all() and (sol.negpos == 0).all() and (sol.channel == 0).all()
    assert sorted(sol.piece[1].reshape(-1).tolist()) == list(range(64))


# ---------------------------------------------------------------------------- scores

def test_scores_on_hand_built_arrangements():
    t = J.Arrangement.identity(1, (2, 3))
    z = np.zeros((1, 2, 3), np.int64)
    assert J.score(t, t) == {"direct": 1.0, "neighbour": 1.0, "largest_component": 1.0, "colour": 1.0}
    swap = J.Arrangement(np.array([[[1, 0, 2], [3, 4, 5]]]), z, z, z)  # pieces 0 and 1 exchanged
    s = J.score(swap, t)
    # 7 adjacencies: 0-1, 1-2, 3-4, 4-5 (horizontal), 0-3, 1-4, 2-5 (vertical); kept: 3-4, 4-5, 2-5
    assert s["direct"] == pytest.approx(4 / 6)
    assert s["neighbour"] == pytest.approx(3 / 7)
    assert s["largest_component"] == pytest.approx(4 / 6)   # {2, 3, 4, 5}
    rot = J.Arrangement(t.piece, np.array([[[0, 0, 0], [0, 1, 0]]]), z, z)   # piece 4 turned in place
    s = J.score(rot, t)
    assert s["direct"] == pytest.approx(5 / 6) and s["neighbour"] == pytest.approx(4 / 7)
    # a whole-image 180° turn (rectangular grid: allowed) is a perfect solution up to symmetry
    turned = J.Arrangement(t.piece[:, ::-1, ::-1], np.full((1, 2, 3), 2), z, z)
    assert J.score(turned, t)["direct"] == 1.0 and J.score(turned, t)["neighbour"] == 1.0
    # ... but the same cells without turning the pieces are not
    assert J.score(J.Arrangement(t.piece[:, ::-1, ::-1], z, z, z), t)["direct"] == 0.0
    # colour: one piece with a wrong channel order, the rest right up to one global colour change
    chan = J.Arrangement(t.piece, z, np.ones_like(z), np.array([[[2, 0, 0], [0, 0, 0]]]))
    assert J.score(chan, t)["colour"] == pytest.approx(5 / 6)
    # per-image results
    both = J.Arrangement.concat([t, swap])
    assert J.score(both, J.Arrangement.concat([t, t]), per_image=True)["direct"].tolist() == pytest.approx([1.0, 4 / 6])


# ---------------------------------------------------------------------------- notebook helpers

def test_sweep_and_augmentation_study_records():
    xs = {32: J.smooth_test_image(32, seed=0)[None]}
    res = J.jigsaw_sweep(xs, blocks=(8, 16), seed=0)
    assert set(res.record) == {"EtC-B8-32px", "EtC-B16-32px", "BlockScramble-B8-32px", "BlockScramble-B16-32px"}
    for name, r in res.record.items():
        assert {"direct", "neighbour", "ssim", "pieces", "cpu_s"} <= set(r)
        assert res.examples[name]["reconstruction"].shape == (3, 32, 32)
    assert res.record["EtC-B8-32px"]["direct"] == 1.0 and res.record["EtC-B8-32px"]["pieces"] == 16
    assert "colour" not in res.record["BlockScramble-B8-32px"]
    assert len(J.jigsaw_sweep(xs, blocks=(8,), max_pieces=8).record) == 0
    from ppml.papers.block_scramble_augmentation import augmentation_study

    aug = augmentation_study(xs[32], 8, seed=0)
    assert set(aug.record) == {"no_augmentation", "augmentation", "crop", "flip", "gridmask"}
    assert aug.record["no_augmentation"]["direct"] == 1.0
    assert aug.record["flip"]["direct"] == 1.0     # a flip before scrambling hides nothing
    from ppml.plots import jigsaw_figure
    import matplotlib.pyplot as plt
    plt.close(jigsaw_figure(res.record, res.examples))
    plt.close(jigsaw_figure(aug.record, aug.examples))


# ---------------------------------------------------------------------------- errors

def test_bad_input_raises_clear_errors():
    x = smooth()
    with pytest.raises(ValueError, match="batch tensor"):
        J.solve(x[0], 8)
    with pytest.raises(ValueError, match="not divisible"):
        J.solve(x, 5)
    with pytest.raises(ValueError, match=">= 2"):
        J.solve(x, 1)
    with pytest.raises(ValueError, match="single piece"):
        J.solve(x, 32)
    with pytest.raises(ValueError, match="unknown scheme"):
        J.solve(x, 8, scheme="AES")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        J.solve(x.float(), 8)
    with pytest.raises(ValueError, match="uint8"):
        J.solve(x.long(), 8)
    with pytest.raises(ValueError, match="features"):
        J.solve(x, 8, features="hsv")
    with pytest.raises(ValueError, match="every piece"):
        J.Arrangement(np.zeros((1, 2, 2), np.int64), *(np.zeros((1, 2, 2), np.int64),) * 3)
    with pytest.raises(ValueError, match="grid"):
        J.true_arrangement(np.arange(4))
    with pytest.raises(ValueError, match="differ in"):
        J.score(J.Arrangement.identity(2, (2, 2)), J.Arrangement.identity(2, (3, 3)))
    with pytest.raises(ValueError, match="arrangement is for"):
        J.assemble(x, J.Arrangement.identity(1, (2, 2)), 8)
    with pytest.raises(ValueError, match="B >= 2"):
        J.mgc_dissimilarity(torch.zeros(2, 3, 1, 1), torch.zeros(2, 3, 1, 1))


@pytest.mark.parametrize("scheme", ["BlockScramble", "EtC"])
def test_greedy_fill_from_one_correct_piece_reassembles_smooth_image(scheme):
    # the last stage alone: grow from a single correctly placed piece until the grid is full
    x = smooth(32, seed=0)
    if scheme == "EtC":
        key = etc_key(32, 8, 1)
        y, truth = EtC(key=key)(x), J.true_arrangement(key)
    else:
        perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
        y, truth = scramble_blocks(x, perm, 8), J.true_arrangement(perm, grid=(4, 4))
    pz = J._Puzzle(J.to_pieces(y, 8)[0], (4, 4), scheme, 1.0, "full")
    pos, tr = np.zeros((16, 2), np.int64), np.zeros(16, np.int64)
    seed_piece = int(truth.piece[0, 1, 1])
    if scheme == "EtC":  # display code d + 8·(channel order + 6·negative–positive)
        tr[seed_piece] = truth.dihedral[0, 1, 1] + 8 * (truth.channel[0, 1, 1] + 6 * truth.negpos[0, 1, 1])
    cells = {(0, 0): seed_piece}
    assert J._fill(pz, cells, [0, 0, 0, 0], pos, tr) == 15
    rc = np.array(list(cells.keys()))
    rc -= rc.min(0)
    piece = np.zeros((4, 4), np.int64)
    piece[rc[:, 0], rc[:, 1]] = list(cells.values())
    assert (piece == truth.piece[0]).all()
