"""ppml.attacks.fr (FR-Attack) and ppml.attacks.gan (SIA-GAN-style GAN-Attack)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppml.attacks.fr import _Assign, _values, candidate_table, fold, fr_attack
from ppml.attacks.gan import BlockInversionGenerator, gan_attack, to_input
from ppml.ciphers import cipher_for
from ppml.data import photo_crops
from ppml.keys import EtCKey, ELEKey, PEKey
from ppml.metrics import ssim


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return photo_crops(48, 32, seed=5)  # real colour photo crops


def _negpos_only(seed: int) -> PEKey:
    rng = np.random.default_rng(seed)
    return PEKey(negpos=rng.integers(0, 2, (3, 32, 32)), channel_perm=np.zeros((32, 32), dtype=np.int64))


# ----------------------------------------------------------------------------- FR-Attack
def test_fold_is_invariant_to_any_negpos_key(photos):
    a, b = (cipher_for(_negpos_only(s))(photos) for s in (1, 2))
    assert not torch.equal(a, b)
    assert torch.equal(fold(a), fold(b)) and torch.equal(fold(a), fold(photos))
    assert torch.equal(fr_attack(a, stage="fold"), fold(photos))


def test_fold_recovers_dark_images_exactly(photos):
    """Where every plain value is <= 127 the fold is the identity: the negpos key is undone."""
    dark = photos // 2
    y = cipher_for(_negpos_only(3))(dark)
    assert torch.equal(fr_attack(y, stage="fold"), dark)
    # matching must also guess the global channel order: reference means of other dark crops decide it
    ref = photo_crops(64, 32, seed=9) // 2
    assert ssim(fr_attack(y, reference=ref), dark).mean() > 0.85


def test_match_result_does_not_depend_on_the_pe_key(photos):
    """Each pixel's candidate set (all channel orders × all sign patterns) is the same for
    every PE key, so the matched reconstruction is a function of the plain image only."""
    r1, r2 = (fr_attack(cipher_for(PEKey.generate(image_size=32, seed=s))(photos)) for s in (10, 11))
    assert (r1 == r2).float().mean() > 0.99  # up to float near-ties


def test_assignment_equals_brute_force_over_all_48_candidates():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 256, (5, 3, 1, 7), dtype=torch.uint8, generator=g)
    nb = torch.rand(5, 3, 1, 7, generator=g) * 255
    values = _values(y)  # (N, C, 2, 1, 7)
    terms = (values.unsqueeze(3) - nb[:, None, None]).abs()
    got = _Assign(3, y.device)(values, terms)
    perms, signs = candidate_table(3)
    v = y.to(torch.float32)[:, perms]  # (N, 48, C, 1, 7)
    cand = torch.where(signs[None, :, :, None, None].bool(), 255 - v, v)
    cost = (cand - nb[:, None]).abs().sum(dim=2)
    want = cand.gather(1, cost.argmin(dim=1)[:, None, None].expand(-1, 1, 3, -1, -1))[:, 0]
    assert torch.equal(got, want)
    assert perms.shape == (48, 3) and len({tuple(p + [2 * s for s in q]) for p, q in
                                           zip(perms.tolist(), signs.tolist())}) == 48


def test_fr_attack_works_on_pe_and_not_on_block_schemes(photos):
    """PE leaks edges (paper 002 Fig. 6: FR SSIM 0.303 on PE); with 4×4 blocks moved, rotated
    and flipped (EtC) or per-block nibble keys (ELE) it reveals little (0.042, 0.055)."""
    ref = photo_crops(64, 32, seed=6)
    pe = cipher_for(PEKey.generate(image_size=32, seed=0))(photos)
    etc = cipher_for(EtCKey.generate(image_size=32, block_size=4, seed=0))(photos)
    ele = cipher_for(ELEKey.generate(image_size=32, block_size=4, seed=0))(photos)
    s_pe_enc = ssim(pe, photos).mean()
    s_pe_fold = ssim(fr_attack(pe, stage="fold"), photos).mean()
    s_pe = ssim(fr_attack(pe, reference=ref), photos).mean()
    assert s_pe_enc < 0.05 < 0.2 < s_pe_fold < s_pe and s_pe > 0.35
    assert ssim(fr_attack(etc, reference=ref), photos).mean() < 0.25
    assert ssim(fr_attack(ele, reference=ref), photos).mean() < 0.1


def test_fr_attack_shapes_grey_and_chunks():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8, generator=g)
    out = fr_attack(y, chunk=2)
    assert out.shape == y.shape and out.dtype == torch.uint8
    assert torch.equal(out, fr_attack(y, chunk=5))
    assert torch.equal(fr_attack(255 - y), fr_attack(y))  # a global negation is undone


def test_fr_attack_errors():
    y = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="unknown stage 'x'"):
        fr_attack(y, stage="x")
    with pytest.raises(ValueError, match="expected uint8"):
        fr_attack(y.float())
    with pytest.raises(ValueError, match="shape \\(N, C, H, W\\)"):
        fr_attack(y[0])
    with pytest.raises(ValueError, match="sweeps must be"):
        fr_attack(y, sweeps=-1)
    with pytest.raises(ValueError, match="reference must be"):
        fr_attack(y, reference=torch.zeros(2, dtype=torch.uint8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fold(y.numpy())


# ----------------------------------------------------------------------------- GAN-Attack
def test_block_layer_can_express_a_within_block_permutation():
    """The per-block first layer is one linear map shared by all blocks: a fixed
    within-block pixel permutation is exactly representable (why LE falls to this attack)."""
    b, c = 4, 3
    gen = BlockInversionGenerator(block_size=b, in_channels=c, width=4, block_features=c)
    perm = torch.randperm(c * b * b, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w = torch.zeros(c * b * b, c * b * b)  # out (feature f, pixel p) <- in position perm[...]
        w[torch.arange(c * b * b), perm] = 1
        # PixelShuffle(b) takes channel f*b*b + (r*b + s) to feature f at (r, s)
        gen.block.weight.copy_(w.view(c * b * b, c, b, b))
        gen.block.bias.zero_()
    x = torch.rand(2, c, 8, 8)
    blocks = x.unfold(2, b, b).unfold(3, b, b).permute(0, 2, 3, 1, 4, 5).reshape(2, 2, 2, -1)
    want = blocks[..., perm].reshape(2, 2, 2, c, b, b).permute(0, 3, 1, 4, 2, 5).reshape(2, c, 8, 8)
    assert torch.allclose(gen.unblock(gen.block(x)), want)


def test_gan_attack_shapes_determinism_and_learning():
    plain = photo_crops(96, 16, seed=7)
    key = EtCKey.generate(image_size=16, block_size=4, seed=0)
    enc = cipher_for(key)(plain)
    kw = dict(block_size=4, epochs=4, seed=3, paired=True, width=8, batch_size=16, return_history=True)
    rec, hist = gan_attack(plain, enc, enc[:10], **kw)
    rec2, hist2 = gan_attack(plain, enc, enc[:10], **kw)
    assert rec.shape == (10, 3, 16, 16) and rec.dtype == torch.uint8
    assert torch.equal(rec, rec2) and hist == hist2
    assert hist["pixel"][-1] < 0.9 * hist["pixel"][0]
    assert len(hist["d_loss"]) == 4 and all(np.isfinite(hist["d_loss"]))
    small = dict(block_size=4, epochs=1, paired=True, width=4, batch_size=16)
    assert not torch.equal(gan_attack(plain[:32], enc[:32], enc[:4], seed=3, **small),
                           gan_attack(plain[:32], enc[:32], enc[:4], seed=4, **small))


def test_gan_attack_unpaired_and_nibbles_run():
    plain = photo_crops(32, 8, seed=8)
    enc = torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    rec, hist = gan_attack(plain, enc, enc[:3], block_size=4, epochs=1, seed=0, input="nibbles", width=4,
                           batch_size=8, return_history=True)
    assert rec.shape == (3, 3, 8, 8) and hist["pixel"] == [0.0]
    assert to_input(enc, "nibbles").shape == (24, 6, 8, 8)
    assert torch.equal((to_input(enc, "nibbles")[:, 3:] * 15).round() * 16 + (to_input(enc, "nibbles")[:, :3] * 15).round(),
                       enc.float())


def test_gan_attack_errors():
    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="not divisible by block_size 3"):
        gan_attack(x, x, x, block_size=3, epochs=1)
    with pytest.raises(ValueError, match="paired=True needs as many"):
        gan_attack(x, x[:2], x, block_size=4, epochs=1, paired=True)
    with pytest.raises(ValueError, match="must be uint8"):
        gan_attack(x.float(), x, x, block_size=4, epochs=1)
    with pytest.raises(ValueError, match="image sizes differ"):
        gan_attack(x, x, torch.zeros(1, 3, 16, 16, dtype=torch.uint8), block_size=4, epochs=1)
    with pytest.raises(ValueError, match="unknown input"):
        gan_attack(x, x, x, block_size=4, epochs=1, input="bits")
    with pytest.raises(ValueError, match="epochs must be an int"):
        gan_attack(x, x, x, block_size=4, epochs=0)


def test_run_attacks_threat_model_and_scores():
    from ppml.attacks import ATTACKS, run_attacks

    x = photo_crops(24, 16, seed=3)
    victim, victim_train, attacker = x[:6], x[6:12], x[12:]
    make_key = {"PE": lambda k: PEKey.generate(image_size=16, seed=k),
                "EtC": lambda k: EtCKey.generate(image_size=16, block_size=8, seed=k)}
    res = run_attacks(victim, victim_train, attacker, make_key, gan_epochs=1, attack_keys=2, seed=0,
                      gan_block={"PE": 1, "EtC": 8}, itn_kwargs=dict(epochs=1, width=4, depth=1, progress=False))
    assert list(res.recon) == ["PE", "EtC"] and list(res.recon["PE"]) == ["Encrypted", *ATTACKS]
    # the "Encrypted" row is the victim's images under the victim's key make_key(seed + 1000)
    assert torch.equal(res.recon["PE"]["Encrypted"], cipher_for(make_key["PE"](1000))(victim))
    for sc, rows in res.recon.items():
        for name, r in rows.items():
            assert r.shape == victim.shape and r.dtype == torch.uint8, (sc, name)
            assert res.ssim[sc][name].shape == (6,)
    assert res.mean_ssim()["PE"]["FR-Attack"] > res.mean_ssim()["PE"]["Encrypted"]  # folding undoes PE's negation
    assert -1 <= res.floor <= 1 and set(res.cpu_seconds) == {"GAN PE", "ITN PE", "GAN EtC", "ITN EtC"}
    with pytest.raises(ValueError, match="unknown attacks"):
        run_attacks(victim, victim_train, attacker, make_key, attacks=("FR-Attack", "X"))
    with pytest.raises(ValueError, match="must share"):
        run_attacks(victim, victim_train, photo_crops(4, 8, seed=0), make_key)
