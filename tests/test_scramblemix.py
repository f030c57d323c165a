"""ScrambleMix encoder, self-teaching loss, T-view inference (notebook 01)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import stats

from ppml.ciphers import PE, cipher_for
from ppml.encoders import ScrambleMix
from ppml.train import evaluate_views, predict_views
from ppml.encoders.scramblemix import ReferencePE, reference_channel_map
from ppml.keys import PEKey, channel_permutations
from ppml.losses import scramblemix_loss, scramblemix_loss_hook, self_teaching_loss
from ppml.train import fit


@pytest.fixture
def x():
    return torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def gen(s=0):
    return torch.Generator().manual_seed(s)


def test_view_is_the_convex_mix_of_the_two_scramblings(x):
    sm = ScrambleMix.generate(num_pairs=3, image_size=8, seed=0)
    m = torch.linspace(0, 1, 6)
    pair = torch.tensor([0, 1, 2, 0, 1, 2])
    v = sm.encode(x, pair, m)
    for i in range(6):
        p = int(pair[i])
        a = sm.scramblers[2 * p](x[i:i + 1]).float() / 255
        b = sm.scramblers[2 * p + 1](x[i:i + 1]).float() / 255
        assert torch.allclose(v[i:i + 1], (1 - m[i]) * a + m[i] * b, atol=1e-6)
    # float input in [0, 1] gives the same views as uint8
    assert torch.allclose(sm.encode(x.float() / 255, pair, m), v, atol=1e-6)


def test_mix_ratio_zero_is_plain_scrambling_with_key_a(x):
    sm = ScrambleMix.generate(num_pairs=2, image_size=8, seed=3, mix_ratio=0.0)
    v = sm.views(x, gen(), num_views=5)
    assert v.shape == (6, 5, 3, 8, 8)
    for t in range(5):  # view t uses pair t mod P
        assert torch.equal(v[:, t], sm.scramblers[2 * (t % 2)](x).float() / 255)
    ones = ScrambleMix(list(zip(sm.scramblers[0::2], sm.scramblers[1::2])), mix_ratio=1.0)
    assert torch.equal(ones.views(x, gen())[:, 1], sm.scramblers[3](x).float() / 255)


def test_views_are_reproducible_and_fresh_per_call(x):
    sm = ScrambleMix.generate(num_pairs=2, image_size=8, seed=0, alpha=1.0)
    assert torch.equal(sm.views(x, gen(5)), sm.views(x, gen(5)))
    g = gen(5)
    assert not torch.equal(sm.views(x, g), sm.views(x, g))
    assert sm(x, gen(5)).shape == (6, 2, 3, 8, 8)  # forward = the D training views
    assert sm.sample(x, gen()).shape == (6, 3, 8, 8)


@pytest.mark.parametrize("a", [0.005, 0.3, 2.0])
def test_mixing_ratio_is_beta_alpha_alpha(a):
    sm = ScrambleMix.generate(num_pairs=1, image_size=4, seed=0, alpha=a)
    m = sm.sample_m(40_000, gen(0)).numpy()
    if a >= 0.1:  # for tiny α about 40 % of draws round to exactly 0 or 1 in float64: KS needs no ties
        assert stats.kstest(m, stats.beta(a, a).cdf).pvalue > 1e-3
    assert abs((m < 0.5).mean() - 0.5) < 0.01
    mixed = ((m > 0.01) & (m < 0.99)).mean()
    expected = stats.beta(a, a).cdf(0.99) - stats.beta(a, a).cdf(0.01)
    assert abs(mixed - expected) < 0.01


def test_other_schemes_and_bad_arguments(x):
    for scheme in ("le", "etc"):
        sm = ScrambleMix.generate(num_pairs=1, scheme=scheme, image_size=8, block_size=4, seed=0, mix_ratio=0.0)
        assert torch.equal(sm.views(x, gen())[:, 0], sm.scramblers[0](x).float() / 255)
    with pytest.raises(ValueError, match="unknown scheme"):
        ScrambleMix.generate(scheme="xor")
    with pytest.raises(ValueError, match="non-empty sequence of"):
        ScrambleMix([])
    with pytest.raises(ValueError, match="alpha must be > 0"):
        ScrambleMix.generate(num_pairs=1, image_size=8, alpha=0)
    with pytest.raises(ValueError, match="mix_ratio must lie in"):
        ScrambleMix.generate(num_pairs=1, image_size=8, mix_ratio=1.5)
    sm = ScrambleMix.generate(num_pairs=2, image_size=8, seed=0)
    with pytest.raises(ValueError, match=r"pair indices must lie in \[0, 2\)"):
        sm.encode(x, 2, 0.0)
    with pytest.raises(ValueError, match="expected a batch"):
        sm.encode(x[0], 0, 0.0)
    with pytest.raises(ValueError, match="num_views must be >= 1"):
        sm.views(x, gen(), num_views=0)


def test_reference_channel_map_duplicates_channels():
    ref = reference_channel_map()
    perms = channel_permutations(3)
    assert np.array_equal(ref[0], perms[0])  # identity survives
    assert all(len(set(r)) < 3 for r in ref[1:])  # every other code duplicates a channel
    # simulate the assignment independently: channel c written in order from the live array
    for code, perm in enumerate(perms):
        img = [0, 1, 2]
        for c, p in enumerate(perm):
            img[c] = img[p]
        assert list(ref[code]) == img


def test_reference_pe_matches_pe_on_the_identity_code_and_compat_option(x):
    key = PEKey.generate(image_size=8, seed=0)
    ident = PEKey(negpos=key.negpos, channel_perm=np.zeros((8, 8), dtype=np.int64))
    assert torch.equal(ReferencePE(ident)(x), PE(key=ident)(x))
    sm = ScrambleMix([(key, key)], compat="reference")
    assert isinstance(sm.scramblers[0], ReferencePE)
    assert isinstance(ScrambleMix([(key, key)]).scramblers[0], PE)
    with pytest.raises(ValueError, match="compat must be"):
        ScrambleMix([(key, key)], compat="original")


# ----------------------------------------------------------------------------- losses
def test_self_teaching_loss_is_mean_kl_to_the_mean_posterior():
    z = torch.randn(5, 4, 7, generator=gen(0))
    p = z.softmax(-1)
    pbar = p.mean(1, keepdim=True)
    expected = (p * (p.log() - pbar.log())).sum(-1).mean()
    assert torch.allclose(self_teaching_loss(z), expected, atol=1e-6)
    assert float(self_teaching_loss(z)) > 0
    same = z[:, :1].expand(5, 4, 7)
    assert abs(float(self_teaching_loss(same))) < 1e-6


def test_stop_gradient_changes_the_graph_not_the_gradient():
    z1 = torch.randn(3, 4, 5, generator=gen(1), requires_grad=True)
    z2 = z1.detach().clone().requires_grad_(True)
    self_teaching_loss(z1, stop_grad=True).backward()
    self_teaching_loss(z2, stop_grad=False).backward()
    assert torch.allclose(z1.grad, z2.grad, atol=1e-6)
    assert z1.grad.abs().sum() > 0


def test_scramblemix_loss_and_hook_run_the_model_once_on_all_views():
    z = torch.randn(4, 3, 5, generator=gen(2))
    y = torch.tensor([0, 1, 2, 3])
    ce = F.cross_entropy(z.reshape(12, 5), y.repeat_interleave(3))
    assert torch.allclose(scramblemix_loss(z, y, lam=0.5), ce + 0.5 * self_teaching_loss(z), atol=1e-6)
    assert torch.allclose(scramblemix_loss(z, y, lam=0), ce)

    calls = []
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    views = torch.rand(4, 3, 3, 2, 2)
    loss, logits = scramblemix_loss_hook(1.0)(net, views, y)
    assert calls == [12] and logits.shape == (4, 5)
    direct = net(views.reshape(12, 3, 2, 2)).view(4, 3, 5)
    assert torch.allclose(loss, scramblemix_loss(direct, y), atol=1e-6)
    with pytest.raises(ValueError, match=r"needs views \(B, D, C, H, W\)"):
        scramblemix_loss_hook()(net, views[:, 0], y)
    with pytest.raises(ValueError, match=r"shape \(B, D, K\)"):
        self_teaching_loss(z[0])


# ----------------------------------------------------------------------------- inference
def test_predict_views_averages_posteriors_or_logits(x):
    sm = ScrambleMix.generate(num_pairs=2, image_size=8, seed=0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 4))
    enc = lambda v, g: sm.views(v, g, num_views=3)
    per = predict_views(net, x, enc, per_view=True, batch_size=4, seed=7)
    assert per.shape == (6, 3, 4)
    views = torch.cat([sm.views(x[:4], g := gen(7), num_views=3), sm.views(x[4:], g, num_views=3)])
    with torch.no_grad():
        logits = net(views.reshape(18, 3, 8, 8)).view(6, 3, 4)
    assert torch.allclose(per, logits.softmax(-1), atol=1e-6)
    assert torch.allclose(predict_views(net, x, enc, batch_size=4, seed=7), logits.softmax(-1).mean(1), atol=1e-6)
    assert torch.allclose(predict_views(net, x, enc, average="logits", batch_size=4, seed=7),
                          logits.mean(1).softmax(-1), atol=1e-6)
    with pytest.raises(ValueError, match="average must be one of"):
        predict_views(net, x, enc, average="mean")


def test_fit_with_scramblemix_views_learns_a_key_scrambled_task():
    # two classes told apart by brightness: learnable through PE keys (a view per key pair)
    g = gen(0)
    y = torch.arange(64) % 2
    x = (torch.rand(64, 3, 8, 8, generator=g) * 60 + 40 + 120 * y.view(-1, 1, 1, 1)).to(torch.uint8)
    sm = ScrambleMix.generate(num_pairs=2, image_size=8, seed=1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 2))
    r = fit(net, (x, y), epochs=8, batch_size=16, transforms=[sm], loss=scramblemix_loss_hook(1.0), lr=0.05,
            optimizer="adamw", schedule="constant", progress=False)
    assert r.final["train_acc"] > 0.9
    acc = evaluate_views(net, (x, y), lambda v, gg: sm.views(v, gg, num_views=4))
    assert acc > 0.9


@pytest.mark.parametrize("scheme,compat", [("pe", "paper"), ("pe", "reference"), ("le", "paper"), ("etc", "paper")])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float64])
def test_encode_through_the_key_set_equals_the_loop_over_pairs(x, scheme, compat, dtype):
    sm = ScrambleMix.generate(num_pairs=3, scheme=scheme, image_size=8, block_size=4, seed=2, compat=compat)
    assert sm._key_set() is not None and sm._key_set().num_keys == 6
    xs = x if dtype == torch.uint8 else x.to(dtype) / 255
    pair, m = torch.tensor([2, 0, 1, 1, 0, 2]), torch.rand(6, generator=gen(3))
    v = sm.encode(xs, pair, m)
    loop = ScrambleMix(list(zip(sm.scramblers[0::2], sm.scramblers[1::2])), compat=compat)
    loop._key_sets[x.device] = (tuple(loop.scramblers), None)  # force the per-pair path
    assert torch.equal(v, loop.encode(xs, pair, m))
    assert sorted(sm.state_dict()) == sorted(f"scramblers.{i}.{n}" for i, s in enumerate(sm.scramblers)
                                             for n in s.state_dict())


def test_reference_pe_key_set_scrambles_each_image_with_its_key(x):
    keys = [PEKey.generate(image_size=8, seed=s) for s in range(3)]
    ids = torch.tensor([2, 0, 1, 1, 0, 2])
    ks = ReferencePE.from_keys(keys)
    assert ks.num_keys == 3 and tuple(ks.src.shape) == (3, 3, 8, 8)
    for dt in (torch.uint8, torch.float32):
        xs = x if dt == torch.uint8 else x.float() / 255
        y = ks(xs, key_ids=ids)
        for i in range(6):
            assert torch.equal(y[i:i + 1], ReferencePE(keys[int(ids[i])])(xs[i:i + 1]))
    with pytest.raises(ValueError, match="key_ids must be an int64 tensor"):
        ks(x)
    with pytest.raises(ValueError, match=r"key_ids must lie in 0..2"):
        ks(x, key_ids=torch.full((6,), 3))
    with pytest.raises(ValueError, match="exactly one of key= .* or keys="):
        ReferencePE()
