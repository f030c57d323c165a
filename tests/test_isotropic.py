"""Eqs. (4) and (5) of the isotropic-network paper (MaungMaung & Kiya, Sec. III-F), the
patch-embedding helpers of Fig. 5 and the paper's printed numbers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import torch
import torch.nn as nn

from ppml.papers.isotropic_etc import isotropic as iso
from ppml.ciphers import BlockGrid, EtC
from ppml.keys import BlockScrambleKey, EtCKey, channel_permutations
from ppml.models import create_model
from ppml.papers import reported
from ppml.recipes import count_parameters, train_and_test


def _vit(patch: int = 4, seed: int = 0) -> nn.Module:
    """A random ViT whose logits depend strongly on its input and on token order: timm's
    init (std 0.02) makes attention uniform (hence order-blind) and logits ~1e-3, under which
    any Δ would look tiny."""
    torch.manual_seed(seed)
    m = create_model("vit", patch_size=patch, embed_dim=24, depth=2, num_heads=2).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Linear):
                mod.weight.normal_(0, mod.in_features ** -0.5)
        m.pos_embed.normal_(0, 1.0)
        m.head.weight.normal_(0, 1.0)
    return m


def _convmixer(patch: int = 4) -> nn.Module:
    torch.manual_seed(0)
    m = create_model("convmixer", dim=16, depth=2, kernel_size=3, patch_size=patch).eval()
    with torch.no_grad():
        m[-1].weight.normal_(0, 3.0)  # logits O(10), so a Δ > 1e-2 is a real change
    return m


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


# ----------------------------------------------------------------------------- Eq. (4)
def test_eq4_exact_when_block_equals_patch_and_not_otherwise(images):
    r = iso.eq4_check(_vit(4), images, seed=3)
    rows = {row["block_size"]: row for row in r["rows"]}
    assert r["patch_size"] == 4 and sorted(rows) == [2, 4, 8]
    assert r["matched"] <= 1e-5                      # Eq. (4): exact up to float rounding
    assert r["matched_uncompensated"] > 0.1          # the ViT alone is not invariant
    assert rows[2]["max_abs_dlogit"] > 0.1 and not rows[2]["exact"]  # blocks cut patches
    assert rows[8]["exact"] and rows[8]["max_abs_dlogit"] <= 1e-5    # 8x8 blocks = groups of patches
    assert r["mismatched"] == rows[2]["max_abs_dlogit"]


def test_eq4_by_hand_with_the_block_scramble_cipher(images):
    """Independent of eq4_check: permute pos_embed rows by the key and compare logits."""
    from ppml.ciphers import BlockScramble

    m = _vit(8)
    key = BlockScrambleKey.generate(image_size=32, block_size=8, seed=5)
    m2 = iso.permute_position_embedding(m, key.block_perm)
    x = images.float() / 255
    with torch.no_grad():
        expected = m(x)
        got = m2(BlockScramble(key=key)(x))
        manual = m.pos_embed.clone()
        manual[0, 1:] = m.pos_embed[0, 1 + torch.from_numpy(np.array(key.block_perm))]
    assert torch.equal(m2.pos_embed, manual)
    assert (got - expected).abs().max() <= 1e-5
    assert not torch.equal(m2.pos_embed, m.pos_embed)  # the original is untouched (a copy)


def test_patch_permutation():
    perm = np.array([2, 0, 3, 1])
    assert iso.patch_permutation(perm, 8, 4, 4).tolist() == perm.tolist()
    # 2x2 grid of 4x4 blocks, patches 2x2 -> 4x4 patch grid; block 0 of the output is block 2
    pp = iso.patch_permutation(perm, 8, 4, 2).reshape(4, 4)
    assert pp[:2, :2].tolist() == [[8, 9], [12, 13]]
    with pytest.raises(ValueError, match="block size 2 is not a multiple of patch size 4"):
        iso.patch_permutation(np.arange(16), 8, 2, 4)
    with pytest.raises(ValueError, match="permutation of 4 blocks"):
        iso.patch_permutation([0, 0, 1, 2], 8, 4, 4)


def _patch_permutation_by_coordinates(perm, image_size, b, p):
    """Independent reference: the source patch of every output patch, by its coordinates."""
    (h, w), r = image_size, b // p
    gw, ph, pw = w // b, h // p, w // p
    py, px = np.meshgrid(np.arange(ph), np.arange(pw), indexing="ij")
    src = np.asarray(perm)[(py // r) * gw + px // r]
    return (((src // gw) * r + py % r) * pw + (src % gw) * r + px % r).reshape(-1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=st.integers(1, 3), r=st.integers(1, 3), gh=st.integers(1, 3), gw=st.integers(1, 4), data=st.data())
def test_patch_permutation_moves_patches_as_the_block_permutation_moves_pixels(p, r, gh, gw, data):
    b = p * r
    size = (gh * b, gw * b)
    perm = np.array(data.draw(st.permutations(range(gh * gw))), dtype=np.int64)
    pp = iso.patch_permutation(perm, size, b, p)
    assert pp.tolist() == _patch_permutation_by_coordinates(perm, size, b, p).tolist()
    x = torch.arange(2 * size[0] * size[1]).reshape(2, 1, *size)
    by_blocks = BlockGrid(size, b).permute_blocks(x, torch.from_numpy(perm))
    assert torch.equal(BlockGrid(size, p).permute_blocks(x, torch.from_numpy(pp)), by_blocks)


def test_eq4_needs_a_position_embedding(images):
    with pytest.raises(ValueError, match="no position embedding"):
        iso.eq4_check(_convmixer(), images)
    with pytest.raises(ValueError, match="no position embedding"):
        iso.permute_position_embedding(_convmixer(), [0])
    with pytest.raises(ValueError, match="permutation of the model's 64 patches"):
        iso.permute_position_embedding(_vit(4), np.arange(16))


# ----------------------------------------------------------------------------- Eq. (5)
@pytest.mark.parametrize("make", [_vit, _convmixer], ids=["vit", "convmixer"])
def test_eq5_shared_codes_exact_per_block_codes_not(make, images):
    r = iso.eq5_check(make(4), images, seed=2)
    rows = {row["steps"]: row for row in r["rows"]}
    assert rows["2-4, one shared code"]["max_abs_dlogit"] <= 1e-5
    assert rows["1-4, per-block codes (real EtC)"]["max_abs_dlogit"] > 1e-2
    if make is _vit:
        assert rows["1-4, one shared code"]["max_abs_dlogit"] <= 1e-5     # Eqs. (4) + (5)
    else:
        assert rows["1-4, one shared code"]["max_abs_dlogit"] > 1e-2      # ConvMixer: step 1 not absorbed


def _transform_weight_independently(w: torch.Tensor, rot_flip: int, channel_perm: int) -> torch.Tensor:
    """Apply an EtC block transform to filters viewed as images, with torch.rot90/flip."""
    out = torch.rot90(w, rot_flip % 4, dims=(-2, -1))
    if rot_flip >= 4:
        out = out.flip(-1)
    return out[:, torch.as_tensor(channel_permutations(3)[channel_perm])]


@pytest.mark.parametrize("rot_flip,channel_perm", [(0, 0), (1, 0), (5, 2), (7, 5)])
def test_absorb_is_the_block_transform_applied_to_the_filters(rot_flip, channel_perm):
    """Without negation the transform is an orthogonal permutation T of each patch, so
    <T W, T x> = <W, x>: the new filters are T applied to the old ones."""
    m = _convmixer()
    w = iso.patch_embedding_weights(m)
    m2 = iso.absorb_block_transform(m, rot_flip=rot_flip, channel_perm=channel_perm)
    torch.testing.assert_close(iso.patch_embedding_weights(m2),
                               _transform_weight_independently(w, rot_flip, channel_perm), rtol=0, atol=1e-7)
    assert torch.equal(iso.patch_embedding(m2).bias, iso.patch_embedding(m).bias)


def test_absorb_negation_flips_sign_and_moves_bias():
    m = _convmixer()
    conv = iso.patch_embedding(m)
    m2 = iso.absorb_block_transform(m, negpos=1)
    conv2 = iso.patch_embedding(m2)
    torch.testing.assert_close(conv2.weight, -conv.weight, rtol=0, atol=0)
    # W'(1 - x) + b' = W x + b  =>  b' = b + sum(W)
    torch.testing.assert_close(conv2.bias, conv.bias + conv.weight.sum((1, 2, 3)), rtol=1e-6, atol=1e-6)


def test_absorb_rejects_bad_codes():
    with pytest.raises(ValueError, match="codes out of range"):
        iso.absorb_block_transform(_convmixer(), rot_flip=8)
    with pytest.raises(ValueError, match="codes out of range"):
        iso.absorb_block_transform(_convmixer(), channel_perm=6)


def test_encrypted_equivalent_refuses_per_block_codes_and_mismatched_sizes(images):
    key = EtCKey.generate(image_size=32, block_size=4, seed=0)
    with pytest.raises(ValueError, match="draws rotation/negative-positive/channel codes per block"):
        iso.encrypted_equivalent(_vit(4), key)
    shared = iso.shared_code_key(EtCKey.generate(image_size=32, block_size=8, seed=0), rot_flip=1)
    with pytest.raises(ValueError, match="Eq. \\(5\\) needs block_size = patch_size"):
        iso.encrypted_equivalent(_vit(4), shared)
    # a shared-code key with the block size = patch size is exact (all of EtC's steps)
    shared4 = iso.shared_code_key(key, rot_flip=6, negpos=1, channel_perm=4)
    x = images.float() / 255
    d = iso.max_logit_diff(iso.encrypted_equivalent(_vit(4), shared4), EtC(key=shared4)(x), _vit(4), x)
    assert d <= 1e-5


def test_shared_code_key():
    key = EtCKey.generate(image_size=16, block_size=4, seed=0)
    k = iso.shared_code_key(key, block_perm=False)
    assert k.block_perm.tolist() == list(range(16))
    assert set(k.rot_flip.tolist()) == {int(key.rot_flip[0])}
    with pytest.raises(TypeError, match="expected an EtCKey"):
        iso.shared_code_key(BlockScrambleKey.generate(image_size=16, block_size=4, seed=0))


# ----------------------------------------------------------------------------- Fig. 5 helpers
def test_patch_embedding_lookup():
    assert iso.patch_size_of(_convmixer(2)) == 2
    assert iso.patch_embedding(_vit(8)).weight.shape == (24, 3, 8, 8)
    with pytest.raises(TypeError, match="has no patch embedding"):
        iso.patch_embedding(create_model("resnet20"))


def test_patch_embedding_grid_layout():
    w = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    g = iso.patch_embedding_grid(w, ncols=2, pad=1)
    assert g.shape == (3, 2, 5)
    assert float(g.min()) == 0.0 and float(g.max()) == 1.0
    # filter 0 occupies the top-left 2x2 of every channel, min-max scaled over the filter
    torch.testing.assert_close(g[:, :, :2], (w[0] - w[0].min()) / (w[0].max() - w[0].min()))
    assert torch.equal(g[:, :, 2], torch.ones(3, 2))  # the white separator column
    assert iso.patch_embedding_grid(torch.randn(5, 3, 1, 1), ncols=5).shape == (3, 4, 24)  # P = 1 → 4×4 squares
    with pytest.raises(ValueError, match=r"\(D, C, P, P\)"):
        iso.patch_embedding_grid(torch.zeros(3, 4))


def test_embedding_similarity_orders():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(32, 3, 4, 4, generator=g)
    same = iso.embedding_similarity(w, w.flip(0))
    noisy = iso.embedding_similarity(w, w + 2 * torch.randn(w.shape, generator=g))
    assert same["matched_cosine"] == pytest.approx(1.0)
    assert same["matched_cosine"] > noisy["matched_cosine"] > noisy["random_baseline"]


def test_plot_patch_embeddings_panels():
    import matplotlib

    matplotlib.use("Agg")
    fig = iso.plot_patch_embeddings({"plain": _convmixer(), "EtC": torch.randn(16, 3, 4, 4)})
    assert [a.get_title() for a in fig.axes] == ["plain", "EtC"]
    with pytest.raises(ValueError, match="panels is empty"):
        iso.plot_patch_embeddings({})


def test_train_and_test_learns_a_trivial_task():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(64) % 2
    x = (y.view(-1, 1, 1, 1) * 200 + torch.randint(0, 40, (64, 3, 8, 8), generator=g)).to(torch.uint8)
    m = create_model("convmixer", dim=8, depth=1, kernel_size=3, patch_size=4, num_classes=2)
    r = train_and_test(m, (x, y), (x, y), epochs=3, batch_size=16, schedule="constant", progress=False)
    assert r["acc"] == 1.0 and r["params"] == count_parameters(m) and len(r["history"]) == 3


# ----------------------------------------------------------------------------- paper numbers
def test_reported_numbers_are_consistent():
    rep = reported("03_isotropic_etc")
    # Table III's uncompressed column repeats Table II's EtC accuracies
    assert rep.table3_row("ConvMixer-256/8 (EtC)", "cifar10")["uncompressed"] == \
        rep.table2_row("EtC (proposed)", "ConvMixer-256/8")["cifar10"]
    assert rep.table3_row("ViT-B_16 (EtC)", "imagenette")["uncompressed"] == \
        rep.table2_row("EtC (proposed)", "ViT-B_16")["imagenette"]
    assert rep.table3_row("ShakeDrop (ELE)", "cifar10")["uncompressed"] == rep.table2_row("ELE", "Adaptation + ShakeDrop")["cifar10"]
    # Table IV: EtC compresses almost like plain, ELE much worse; lossy < lossless < raw
    for codec, row in rep.TABLE4.items():
        assert row["plain"] <= row["etc"] < row["ele"], codec
        assert row["etc"] / row["plain"] < 1.05
    assert rep.TABLE4["JPEG QF=80"]["plain"] < rep.TABLE4["JPEG QF=85"]["plain"] < rep.TABLE4["JPEG-LS"]["plain"]
    # ELE images are incompressible: losslessly coded they exceed the raw data
    assert rep.TABLE4["JPEG-LS"]["ele"] > rep.TABLE4_UNCOMPRESSED_MB > rep.TABLE4["JPEG 2000"]["etc"]
    assert set(rep.FIG6_SSIM) == {"Encrypted", "FR-Attack", "GAN-Attack", "ITN-Attack"}
    with pytest.raises(KeyError, match="Table II has no row"):
        rep.table2_row("EtC", "ResNet-18")
