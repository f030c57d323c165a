"""ppml.attacks.fr (FR-Attack), ppml.attacks.gan (SIA-GAN, the GAN-Attack) and ppml.attacks.suite."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppml._checks import DTypeError, ShapeError
from ppml.attacks.fr import _Assign, _values, candidate_table, fold, fr_attack
from ppml.attacks.gan import BlockFrontEnd, SIAGANDiscriminator, SIAGANGenerator, gan_attack, polarity, to_input
from ppml.ciphers import cipher_for
from ppml.datasets import photo_crops
from ppml.keys import EtCKey, ELEKey, LEKey, PEKey
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
    assert torch.equal(fr_attack(test_protected=a, stage="fold"), fold(photos))


def test_fold_recovers_dark_images_exactly(photos):
    """Where every plain value is <= 127 the fold is the identity: the negpos key is undone."""
    dark = photos // 2
    y = cipher_for(_negpos_only(3))(dark)
    assert torch.equal(fr_attack(test_protected=y, stage="fold"), dark)
    # matching must also guess the global channel order: reference means of other dark crops decide it
    ref = photo_crops(64, 32, seed=9) // 2
    assert ssim(fr_attack(test_protected=y, train_plain=ref), dark).mean() > 0.85


def test_match_result_does_not_depend_on_the_pe_key(photos):
    """Each pixel's candidate set (all channel orders × all sign patterns) is the same for
    every PE key, so the matched reconstruction is a function of the plain image only."""
    r1, r2 = (fr_attack(test_protected=cipher_for(PEKey.generate(image_size=32, seed=s))(photos)) for s in (10, 11))
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
    """PE leaks edges (paper 03 Fig. 6: FR SSIM 0.303 on PE); with 4×4 blocks moved, rotated
    and flipped (EtC) or per-block nibble keys (ELE) it reveals little (0.042, 0.055)."""
    ref = photo_crops(64, 32, seed=6)
    pe = cipher_for(PEKey.generate(image_size=32, seed=0))(photos)
    etc = cipher_for(EtCKey.generate(image_size=32, block_size=4, seed=0))(photos)
    ele = cipher_for(ELEKey.generate(image_size=32, block_size=4, seed=0))(photos)
    s_pe_enc = ssim(pe, photos).mean()
    s_pe_fold = ssim(fr_attack(test_protected=pe, stage="fold"), photos).mean()
    s_pe = ssim(fr_attack(test_protected=pe, train_plain=ref), photos).mean()
    assert s_pe_enc < 0.05 < 0.2 < s_pe_fold < s_pe and s_pe > 0.35
    assert ssim(fr_attack(test_protected=etc, train_plain=ref), photos).mean() < 0.25
    assert ssim(fr_attack(test_protected=ele, train_plain=ref), photos).mean() < 0.1


def test_fr_attack_shapes_grey_and_chunks():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8, generator=g)
    out = fr_attack(test_protected=y, chunk=2)
    assert out.shape == y.shape and out.dtype == torch.uint8
    assert torch.equal(out, fr_attack(test_protected=y, chunk=5))
    assert torch.equal(fr_attack(test_protected=255 - y), fr_attack(test_protected=y))  # a global negation is undone


def test_fr_attack_errors():
    y = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="unknown stage 'x'"):
        fr_attack(test_protected=y, stage="x")
    with pytest.raises(DTypeError, match="test_protected must be uint8"):
        fr_attack(test_protected=y.float())
    with pytest.raises(ValueError, match="shape \\(N, C, H, W\\)"):
        fr_attack(test_protected=y[0])
    with pytest.raises(ValueError, match="sweeps must be"):
        fr_attack(test_protected=y, sweeps=-1)
    with pytest.raises(ShapeError, match="train_plain must be"):
        fr_attack(test_protected=y, train_plain=torch.zeros(2, dtype=torch.uint8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fold(y.numpy())


# ----------------------------------------------------------------------------- GAN-Attack
def _le_front_end_weights(key: LEKey, c: int = 3):
    """Front-end weight ``(C·b·b, 2C·b·b)`` and bias that decrypt LE exactly on nibble planes:
    plain nibble perm[j] = cipher nibble j (inverted where invert[j])."""
    b = key.block_size
    bbc = b * b * c
    w = torch.zeros(c * b * b, 2 * c * b * b, dtype=torch.float64)  # (features C * b*b, inputs 2C * b*b)
    bias = torch.zeros(c * b * b, dtype=torch.float64)
    for j in range(2 * bbc):
        half_j, t = divmod(j, bbc)
        (r_j, s_j), c_j = divmod(t // c, b), t % c
        i = (half_j * c + c_j) * b * b + r_j * b + s_j  # input: nibble plane half*C + c at (r, s)
        k = int(key.perm[j])
        half_k, t = divmod(k, bbc)
        (r_k, s_k), c_k = divmod(t // c, b), t % c
        o = c_k * b * b + r_k * b + s_k  # output: feature (channel) c at (r, s)
        scale = (16 if half_k else 1) / 255  # nibble value = 15 * input
        if key.invert[j]:
            w[o, i] -= 15 * scale
            bias[o] += 15 * scale
        else:
            w[o, i] += 15 * scale
    return w, bias


def test_front_end_decrypts_le_exactly_with_weights_from_the_key(photos):
    """SIA-GAN's block-wise front end, shared over blocks and fed nibble planes, can represent
    an LE decryption exactly: LE uses one key for every block, and on nibbles it is linear."""
    key = LEKey.generate(image_size=32, block_size=4, seed=11)
    enc = cipher_for(key)(photos)
    gen = SIAGANGenerator(block_size=4, image_size=(32, 32), in_channels=6, block_features=3, width=4,
                          shared_blocks=True, spectral_norm=False).eval()
    w, bias = _le_front_end_weights(key)
    with torch.no_grad():
        gen.front.weight.copy_(w[None].float())
        bn = gen.front.bn  # eval-mode BatchNorm as the identity plus the inversion offsets
        bn.running_mean.zero_(); bn.running_var.fill_(1.0)
        bn.weight.fill_((1 + bn.eps) ** 0.5); bn.bias.copy_(bias.float())
        dec = (gen.features(to_input(enc, "nibbles")) * 255).round().to(torch.uint8)
    assert torch.equal(dec, photos)
    # the same weights do not decrypt another key's images
    other = cipher_for(LEKey.generate(image_size=32, block_size=4, seed=12))(photos)
    with torch.no_grad():
        assert not torch.equal((gen.features(to_input(other, "nibbles")) * 255).round().to(torch.uint8), photos)


def test_front_end_per_position_maps_are_independent():
    """Unshared (SIA-GAN): one map per block position; shared: one map for all."""
    x = torch.rand(2, 3, 8, 8)
    fe = BlockFrontEnd(block_size=4, in_channels=3, features=2, image_size=(8, 8), spectral_norm=False).eval()
    assert fe.weight.shape == (4, 2 * 16, 3 * 16)
    y0 = fe(x)
    with torch.no_grad():
        fe.weight[3] += 1.0  # only the bottom-right block's map
    y1 = fe(x)
    assert torch.equal(y0[..., :4, :], y1[..., :4, :]) and torch.equal(y0[..., :4], y1[..., :4])
    assert not torch.equal(y0[..., 4:, 4:], y1[..., 4:, 4:])
    assert BlockFrontEnd(block_size=4, in_channels=3, features=2, image_size=(8, 8), shared=True).weight.shape[0] == 1


def test_spectral_norm_front_end_has_unit_spectral_norm():
    torch.manual_seed(0)  # the power iteration's start vector: unseeded, the test depended on earlier tests
    fe = BlockFrontEnd(block_size=2, in_channels=3, features=2, image_size=(4, 4))
    for _ in range(50):
        w = fe.effective_weight()  # training mode: one power iteration per call
    assert torch.allclose(torch.linalg.matrix_norm(w.detach(), ord=2), torch.ones(4), atol=1e-3)


def test_siagan_sizes():
    gen = SIAGANGenerator(block_size=4, image_size=(32, 32))  # SIA-GAN: 64 maps 3 -> 16*16, width 64, 3 res blocks
    assert gen.front.weight.shape == (64, 256, 48)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in gen.body.modules()) == 1 + 2 * 3 + 2
    disc = SIAGANDiscriminator()  # ndf 1024: 128-256-512, attention, 1024, attention, linear 1024*4*4 -> 1
    assert disc.linear.in_features == 1024 * 4 * 4
    out, feat = gen(torch.rand(2, 3, 32, 32), return_features=True)
    assert out.shape == (2, 3, 32, 32) and feat.shape == (2, 16, 32, 32) and 0 <= out.min() and out.max() <= 1
    assert disc(out).shape == (2,)


def test_gan_attack_shapes_determinism_and_learning():
    plain = photo_crops(96, 16, seed=7)
    key = EtCKey.generate(image_size=16, block_size=4, seed=0)
    enc = cipher_for(key)(plain)
    kw = dict(block_size=4, epochs=4, seed=3, paired=True, width=8, d_width=4, block_features=4, batch_size=16,
              lr=1e-3, return_history=True)
    rec, hist = gan_attack(train_plain=plain, train_protected=enc, test_protected=enc[:10], **kw)
    rec2, hist2 = gan_attack(train_plain=plain, train_protected=enc, test_protected=enc[:10], **kw)
    assert rec.shape == (10, 3, 16, 16) and rec.dtype == torch.uint8
    assert torch.equal(rec, rec2) and {k: v for k, v in hist.items() if k != "cpu_seconds"} == \
        {k: v for k, v in hist2.items() if k != "cpu_seconds"}
    assert hist["pixel"][-1] < 0.9 * hist["pixel"][0]
    assert len(hist["d_loss"]) == 4 and all(np.isfinite(hist["d_loss"]))
    small = dict(block_size=4, epochs=1, paired=True, width=4, d_width=4, block_features=4, batch_size=16)
    assert not torch.equal(gan_attack(train_plain=plain[:32], train_protected=enc[:32], test_protected=enc[:4], seed=3,
                                      **small),
                           gan_attack(train_plain=plain[:32], train_protected=enc[:32], test_protected=enc[:4], seed=4,
                                      **small))


def test_gan_attack_ssim_curve():
    """eval_every / eval_fn give the SSIM-against-steps curve; its last point is the returned
    reconstruction's score."""
    plain = photo_crops(40, 16, seed=9)
    victims = photo_crops(6, 16, seed=10)
    le = cipher_for(LEKey.generate(image_size=16, block_size=4, seed=1))
    calls = []
    rec, hist = gan_attack(train_plain=plain, train_protected=le(plain), test_protected=le(victims), block_size=4,
                           epochs=3, batch_size=8, seed=0,
                           input="nibbles", shared_blocks=True, width=4, d_width=4, block_features=4,
                           eval_every=2, eval_fn=lambda r: calls.append(r) or float(ssim(r, victims).mean()),
                           return_history=True)
    assert hist["step"] == [2, 4, 6, 8, 10, 12, 14, 15]  # 5 steps per epoch, and the last step
    assert len(hist["eval"]) == len(hist["cpu_seconds"]) == 8 and hist["cpu_seconds"] == sorted(hist["cpu_seconds"])
    assert torch.equal(calls[-1], rec) and hist["eval"][-1] == pytest.approx(float(ssim(rec, victims).mean()))


def test_gan_attack_unpaired_nibbles_labels_and_tv_run():
    plain = photo_crops(32, 8, seed=8)
    enc = torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    rec, hist = gan_attack(train_plain=plain, train_protected=enc, test_protected=enc[:3], block_size=4, epochs=1,
                           seed=0, input="nibbles", width=4, d_width=4,
                           block_features=4, batch_size=8, labels=torch.arange(24) % 3, tv_weight=1e-3,
                           fix_polarity=True, return_history=True)
    assert rec.shape == (3, 3, 8, 8) and hist["pixel"] == [0.0] and hist["ce"][0] > 0
    assert to_input(enc, "nibbles").shape == (24, 6, 8, 8)
    assert torch.equal((to_input(enc, "nibbles")[:, 3:] * 15).round() * 16 + (to_input(enc, "nibbles")[:, :3] * 15).round(),
                       enc.float())


def test_gan_attack_resumes_from_its_checkpoint_bit_for_bit(tmp_path):
    plain = photo_crops(24, 8, seed=4)
    enc = cipher_for(LEKey.generate(image_size=8, block_size=4, seed=2))(plain)
    kw = dict(block_size=4, seed=1, input="nibbles", width=4, d_width=4, block_features=4, batch_size=8)
    full = gan_attack(train_plain=plain, train_protected=enc, test_protected=enc[:4], epochs=3, **kw)
    ck = tmp_path / "gan.pt"
    gan_attack(train_plain=plain, train_protected=enc, test_protected=enc[:4], epochs=1, checkpoint=ck,
               **kw)  # "killed" after one epoch
    assert torch.equal(gan_attack(train_plain=plain, train_protected=enc, test_protected=enc[:4], epochs=3,
                                  checkpoint=ck, **kw), full)
    with pytest.raises(ValueError, match="other data or settings"):
        gan_attack(train_plain=plain, train_protected=enc, test_protected=enc[:4], epochs=3, checkpoint=ck,
                   **{**kw, "seed": 2})
    ck.write_bytes(b"junk")
    with pytest.raises(ValueError, match="corrupt"):
        gan_attack(train_plain=plain, train_protected=enc, test_protected=enc[:4], epochs=3, checkpoint=ck, **kw)


def test_polarity_undoes_negated_channels_of_real_photos(photos):
    """Any pattern of negated channels (incl. the whole negative) is recognised from colour
    correlations plus the attacker's own images' moments."""
    reference = photo_crops(64, 32, seed=6)
    x = photos.float()
    for signs in ([1, 1, 1], [-1, -1, -1], [1, -1, 1], [-1, 1, 1]):
        s = torch.tensor(signs, dtype=torch.float32).view(1, 3, 1, 1)
        flipped = torch.where(s > 0, x, 255 - x)
        assert polarity(flipped, reference.float()).tolist() == [float(v) for v in signs]


def test_gan_attack_errors():
    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="not divisible by block_size 3"):
        gan_attack(train_plain=x, train_protected=x, test_protected=x, block_size=3, epochs=1)
    with pytest.raises(ValueError, match=r"train_plain, train_protected must have the same length \(paired=True"):
        gan_attack(train_plain=x, train_protected=x[:2], test_protected=x, block_size=4, epochs=1, paired=True)
    with pytest.raises(ValueError, match="must be uint8"):
        gan_attack(train_plain=x.float(), train_protected=x, test_protected=x, block_size=4, epochs=1)
    with pytest.raises(ValueError, match="image sizes differ"):
        gan_attack(train_plain=x, train_protected=x, test_protected=torch.zeros(1, 3, 16, 16, dtype=torch.uint8),
                   block_size=4, epochs=1)
    with pytest.raises(ValueError, match="unknown input"):
        gan_attack(train_plain=x, train_protected=x, test_protected=x, block_size=4, epochs=1, input="bits")
    with pytest.raises(ValueError, match="epochs must be an int"):
        gan_attack(train_plain=x, train_protected=x, test_protected=x, block_size=4, epochs=0)
    with pytest.raises(ValueError, match="divisible by 8"):
        gan_attack(train_plain=x[..., :4, :4], train_protected=x[..., :4, :4], test_protected=x[..., :4, :4],
                   block_size=4, epochs=1)
    with pytest.raises(ValueError, match="eval_every needs eval_fn"):
        gan_attack(train_plain=x, train_protected=x, test_protected=x, block_size=4, epochs=1, eval_every=1)
    with pytest.raises(ValueError, match="labels must be"):
        gan_attack(train_plain=x, train_protected=x, test_protected=x, block_size=4, epochs=1,
                   labels=torch.zeros(3, dtype=torch.long))


def test_run_attacks_threat_model_and_scores():
    from ppml.attacks import ATTACKS, run_attacks

    x = photo_crops(24, 16, seed=3)
    victim, victim_train, attacker = x[:6], x[6:12], x[12:]
    make_key = {"PE": lambda k: PEKey.generate(image_size=16, seed=k),
                "EtC": lambda k: EtCKey.generate(image_size=16, block_size=8, seed=k)}
    res = run_attacks(victim, victim_train, attacker, make_key, gan_epochs=1, attack_keys=2, seed=0,
                      gan_block={"PE": 1, "EtC": 8}, gan_kwargs=dict(width=4, d_width=4, block_features=4),
                      gan_scheme_kwargs={"EtC": {"epochs": 2, "body": False}}, eval_every=1,
                      itn_kwargs=dict(epochs=1, width=4, depth=1, progress=False))
    assert list(res.recon) == ["PE", "EtC"] and list(res.recon["PE"]) == ["Encrypted", *ATTACKS]
    # the "Encrypted" row is the victim's images under the victim's key make_key(seed + 1000)
    assert torch.equal(res.recon["PE"]["Encrypted"], cipher_for(make_key["PE"](1000))(victim))
    for sc, rows in res.recon.items():
        for name, r in rows.items():
            assert r.shape == victim.shape and r.dtype == torch.uint8, (sc, name)
            assert res.ssim[sc][name].shape == (6,)
    assert res.mean_ssim()["PE"]["FR-Attack"] > res.mean_ssim()["PE"]["Encrypted"]  # folding undoes PE's negation
    assert -1 <= res.floor <= 1 and set(res.cpu_seconds) == {"GAN PE", "ITN PE", "GAN EtC", "ITN EtC"}
    # SSIM curves: one point per training step (GAN EtC trains 2 epochs of one batch), the last = the result
    assert set(res.curves) == set(res.cpu_seconds)
    assert res.curves["GAN PE"]["step"] == [1] and res.curves["GAN EtC"]["step"] == [1, 2]
    for name, c in res.curves.items():
        attack, sc = name.split()
        assert c["ssim"][-1] == pytest.approx(res.mean_ssim()[sc][f"{attack}-Attack"], abs=1e-6)
    with pytest.raises(ValueError, match="unknown attacks"):
        run_attacks(victim, victim_train, attacker, make_key, attacks=("FR-Attack", "X"))
    with pytest.raises(ValueError, match="must share"):
        run_attacks(victim, victim_train, photo_crops(4, 8, seed=0), make_key)
