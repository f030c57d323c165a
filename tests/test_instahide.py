"""InstaHide and DataMix encoders, and Carlini et al.'s attack (notebook 01)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ppml.attacks.instahide import (abs_features, encoding_similarity, instahide_attack,
                                    match_reconstructions, reconstruct_groups, train_colour_fix)
from ppml.encoders import DataMix, InstaHide
from ppml.train import predict_datamix
from ppml.encoders.instahide import instahide_loss_hook
from ppml.keys import PEKey


def gen(s=0):
    return torch.Generator().manual_seed(s)


@pytest.fixture
def x():
    return torch.rand(10, 3, 6, 6, generator=gen(3))


def test_weights_follow_the_reference_rule():
    w = InstaHide(k=4).sample_weights(5000, gen(0))
    assert torch.allclose(w.sum(1), torch.ones(5000), atol=1e-6)
    assert bool((w >= 0).all()) and bool(w.max() <= 0.65)
    assert float(w.max()) > 0.6  # the cap binds: it is a resampling bound, not a clamp at a lower value
    assert torch.equal(InstaHide(k=1).sample_weights(3, gen()), torch.ones(3, 1))


def test_encoding_is_signed_weighted_sum_of_centred_partners(x):
    y = torch.arange(10) % 3
    b = InstaHide(k=4).encode(x, gen(1), y=y, num_classes=3)
    assert torch.equal(b.partners[:, 0], torch.arange(10))
    for j in range(1, 4):
        assert torch.equal(b.partners[:, j].sort().values, torch.arange(10))  # each slot is a permutation
    mix = sum(b.weights[:, j].view(-1, 1, 1, 1) * (2 * x[b.partners[:, j]] - 1) for j in range(4))
    assert torch.allclose(b.images, b.signs * mix, atol=1e-6)
    assert set(b.signs.unique().tolist()) == {-1, 1}
    expected = sum(b.weights[:, j:j + 1] * F.one_hot(y[b.partners[:, j]], 3).float() for j in range(4))
    assert torch.allclose(b.targets, expected, atol=1e-6)
    assert float(b.images.abs().max()) <= 1.0


def test_k1_is_only_the_sign_mask_and_draws_are_reproducible(x):
    b = InstaHide(k=1).encode(x, gen(2))
    assert torch.equal(b.images.abs(), (2 * x - 1).abs())
    ih = InstaHide(k=3)
    assert torch.equal(ih.encode(x, gen(4)).images, ih.encode(x, gen(4)).images)
    assert ih.views(x, gen(), num_views=5).shape == (10, 5, 3, 6, 6)
    u8 = (x * 255).round().to(torch.uint8)
    assert torch.allclose(ih.encode(u8, gen(4)).images, ih.encode(u8.float() / 255, gen(4)).images)


def test_cross_dataset_mode_labels_only_private_images(x):
    pub = torch.rand(12, 3, 6, 6, generator=gen(5))
    ih = InstaHide(k=4, public=pub, k_private=2)
    y = torch.arange(10) % 2
    b = ih.encode(x, gen(6), y=y, num_classes=2)
    assert bool((b.partners[:, 2:] < 0).all()) and bool((b.partners[:, :2] >= 0).all())
    pub_imgs = [pub[-1 - b.partners[:, j]] for j in (2, 3)]
    mix = sum(b.weights[:, j].view(-1, 1, 1, 1) * (2 * x[b.partners[:, j]] - 1) for j in (0, 1)) + \
        sum(b.weights[:, j].view(-1, 1, 1, 1) * (2 * p - 1) for j, p in zip((2, 3), pub_imgs))
    assert torch.allclose(b.images, b.signs * mix, atol=1e-6)
    # not renormalised: the targets sum to the private share λ0 + λ1 (< 1)
    assert torch.allclose(b.targets.sum(1), b.weights[:, :2].sum(1), atol=1e-6)


# ---- parity with the authors' train_cross.py, restated literally in numpy (their mixup_data /
# generate_sample / mixup_criterion), independent of the torch code under test
def _authors_lams(n, klam, upper, dom, rng):
    lams = rng.normal(0, 1, size=(n, klam))
    for i in range(n):
        lams[i] = np.abs(lams[i]) / np.sum(np.abs(lams[i]))
        if klam > 1:
            while lams[i].max() > upper or (lams[i][0] + lams[i][1]) < dom:
                lams[i] = rng.normal(0, 1, size=(1, klam))
                lams[i] = np.abs(lams[i]) / np.sum(np.abs(lams[i]))
    return lams


def _authors_targets(lams, ys, nclass, inside_cnt=2):
    onehot = [np.eye(nclass)[y] for y in ys]
    mixy = lams[:, 0:1] * onehot[0]
    for i in range(1, inside_cnt):
        mixy = mixy + lams[:, i:i + 1] * onehot[i]
    return mixy


def test_cross_mode_weights_follow_the_authors_rejection_rule():
    from scipy.stats import ks_2samp

    n = 4000
    ours = InstaHide(k=6, k_private=2, public=torch.rand(1, 3, 2, 2)).sample_weights(n, gen(0)).double().numpy()
    theirs = _authors_lams(n, 6, 0.65, 0.3, np.random.default_rng(0))
    for w in (ours, theirs):
        assert np.allclose(w.sum(1), 1) and w.max() <= 0.65 + 1e-6 and (w[:, 0] + w[:, 1]).min() >= 0.3 - 1e-6
    assert (ours[:, 0] + ours[:, 1]).min() < 0.31  # the private-share bound binds (a rejection, not a clamp)
    for stat in (lambda w: w[:, 0] + w[:, 1], lambda w: w.max(1), lambda w: w[:, 3]):
        assert ks_2samp(stat(ours), stat(theirs)).pvalue > 1e-3  # same conditional distribution
    inside = InstaHide(k=6).sample_weights(n, gen(1)).double().numpy()
    assert (inside[:, 0] + inside[:, 1]).min() < 0.3  # train_inside.py has no such bound
    with pytest.raises(ValueError, match="min_private_share must lie in"):
        InstaHide(k=6, k_private=2, public=torch.rand(8, 3, 2, 2), min_private_share=1.5)


def test_cross_mode_targets_are_the_authors_unnormalised_mix(x):
    pub = torch.rand(10, 3, 6, 6, generator=gen(7))
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    b = InstaHide(k=6, k_private=2, public=pub).encode(x, gen(8), y=y, num_classes=4)
    lams = b.weights.double().numpy()
    ys = [y[b.partners[:, j]].numpy() for j in range(2)]
    assert np.allclose(b.targets.double().numpy(), _authors_targets(lams, ys, 4), atol=1e-6)
    assert float(b.targets.sum(1).max()) < 1 - 1e-3 or float((lams[:, :2].sum(1)).max()) > 0.999


def test_cross_mode_public_partners_are_a_per_epoch_permutation(x):
    pub = torch.rand(25, 3, 6, 6, generator=gen(9))
    ih = InstaHide(k=6, k_private=2, public=pub)
    g, subsets = gen(10), []
    for _ in range(3):  # three epochs
        cols = -1 - ih.encode(x, g).partners[:, 2:]  # (10, 4) public indices
        sets = [set(c.tolist()) for c in cols.T]
        assert all(len(c) == 10 for c in sets)  # no repeats within a column
        assert all(s == sets[0] for s in sets)  # every public slot permutes the epoch's first n of P
        subsets.append(frozenset(sets[0]))
    assert len(set(subsets)) > 1  # a fresh permutation of the public set every epoch
    full = -1 - InstaHide(k=6, k_private=2, public=pub[:10]).encode(x, gen(11)).partners[:, 2:]
    assert all(sorted(c.tolist()) == list(range(10)) for c in full.T)
    with pytest.raises(ValueError, match="at least\nas many images as the batch|at least as many images as the batch"):
        InstaHide(k=6, k_private=2, public=pub[:5]).encode(x, gen())


def test_instahide_errors(x):
    with pytest.raises(ValueError, match="needs a public image pool"):
        InstaHide(k=4, k_private=2)
    with pytest.raises(ValueError, match="max_weight must lie in"):
        InstaHide(k=4, max_weight=0.2)
    with pytest.raises(ValueError, match="need num_classes="):
        InstaHide(k=2).encode(x, gen(), y=torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="expected a batch"):
        InstaHide().encode(x[0])


def test_instahide_hook_trains_on_mixed_soft_targets(x):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(108, 3))
    y = torch.arange(10) % 3
    loss, logits = instahide_loss_hook(InstaHide(k=2), 3)(net, x, y)
    assert logits.shape == (10, 3) and loss.ndim == 0 and float(loss.detach()) > 0


# ----------------------------------------------------------------------------- DataMix
def test_datamix_is_pe_of_the_quantised_mixture(x):
    key = PEKey.generate(image_size=6, seed=0)
    dm = DataMix(key)
    y = torch.arange(10) % 3
    b = dm.encode(x, gen(1), y=y, num_classes=3)
    assert bool((b.lam >= 0.5).all()) and bool((b.lam < 1).all())
    mix = b.lam.view(-1, 1, 1, 1) * x + (1 - b.lam.view(-1, 1, 1, 1)) * x[b.partners]
    q = (mix * 255).round().to(torch.uint8)
    assert torch.equal(b.images, dm.cipher(q).float() / 255)
    onehot = F.one_hot(y, 3).float()
    assert torch.allclose(b.targets, b.lam[:, None] * onehot + (1 - b.lam[:, None]) * onehot[b.partners])
    assert torch.equal(DataMix(None).encode(x, gen(1)).images, q.float() / 255)
    with pytest.raises(ValueError, match="lam_min must lie in"):
        DataMix(key, lam_min=2)


def test_datamix_decoding_removes_the_partner_share():
    # a "model" that returns exactly the mixed one-hot label of the (unencrypted) mixture
    class Oracle(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, v):  # class 0 images are black, class 1 white: the mean pixel is λ-mix of labels
            p1 = v.mean((1, 2, 3))
            return torch.stack([1 - p1, p1], 1).clamp_min(1e-9).log()

    imgs = torch.cat([torch.zeros(4, 3, 2, 2), torch.ones(4, 3, 2, 2)])
    labels = torch.tensor([0] * 4 + [1] * 4)
    dm = DataMix(None, lam_min=0.5)
    p = predict_datamix(Oracle(), dm, imgs, imgs, labels, num_classes=2)
    assert torch.equal(p.argmax(1), labels)
    # decoded scores: the image's own share λ ≥ 0.5 on its class, the partner's share removed
    assert bool((p.max(1).values >= 0.5 - 1e-5).all())
    raw = predict_datamix(Oracle(), dm, imgs, imgs, labels, num_classes=2, decode=False)
    assert torch.allclose(raw.sum(1), torch.ones(8), atol=1e-5) and not torch.allclose(raw, p)


# ----------------------------------------------------------------------------- attack
def test_abs_features_remove_the_sign_mask(x):
    b = InstaHide(k=1).encode(x, gen(0))
    assert torch.allclose(abs_features(b.images), (2 * x - 1).abs())
    assert torch.allclose(abs_features(x, value_range=(0, 1)), x)
    assert torch.allclose(abs_features(x, value_range=(0, 1), centre=True), (2 * x - 1).abs())
    with pytest.raises(ValueError, match="hi > lo"):
        abs_features(x, value_range=(1, 0))


def test_attack_recovers_sign_masked_images_exactly_when_k_is_1(x):
    enc = torch.cat([InstaHide(k=1).encode(x, gen(i)).images for i in range(4)])
    r = instahide_attack(encodings=enc, n_originals=10, k=1, neighbours=3, iters=0)
    truth = (2 * x - 1).abs()
    m = match_reconstructions(truth, r.raw)
    assert torch.allclose(r.raw[m], truth, atol=1e-5)
    labels = r.labels.reshape(4, 10)
    assert all(len(set(labels[:, i])) == 1 for i in range(10))  # the 4 encodings of an image share a group
    assert len(set(labels[0])) == 10


def test_similarity_and_group_reconstruction():
    a = torch.rand(6, 3, 4, 4, generator=gen(1))
    s = encoding_similarity(a)
    assert torch.allclose(s, s.T) and torch.allclose(s.diagonal(), torch.ones(6), atol=1e-5)
    labels = np.array([0, 0, 1, 1, 1, 2])
    means = reconstruct_groups(a, labels, 3, iters=0)
    assert torch.allclose(means[1], a[2:5].mean(0), atol=1e-6)
    refined = reconstruct_groups(a, labels, 3, k=2, iters=10)
    assert refined.shape == (3, 3, 4, 4) and bool((refined >= 0).all()) and bool((refined <= 1).all())


def test_match_reconstructions_is_a_min_mse_assignment():
    o = torch.rand(5, 3, 4, 4, generator=gen(2))
    perm = torch.tensor([3, 0, 4, 1, 2])
    r = o[perm] + 0.01 * torch.randn(5, 3, 4, 4, generator=gen(3))
    m = match_reconstructions(o, r)
    assert torch.equal(perm[m], torch.arange(5))


def test_colour_fix_trains_and_maps_to_unit_range():
    pub = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, generator=gen(0))
    fix = train_colour_fix(pub, value_range=(-1, 1), centre=False, steps=3, batch_size=4, crop=8)
    out = fix(torch.rand(2, 3, 16, 16))
    assert out.shape == (2, 3, 16, 16) and bool((out >= 0).all()) and bool((out <= 1).all())


# ----------------------------------------------------------------------------- the faithful attack
from ppml.attacks.instahide import (align_pixel_signs, carlini_attack, challenge_scores, global_sign,  # noqa: E402
                                    instahide_challenge, labelled_photo_crops, make_challenge, mixing_matrix,
                                    reconstruct_signed, sign_accuracy, weights_from_labels)


def _synthetic(n=8, m=80, k=3, shape=(1, 4, 4), seed=0):
    g = gen(seed)
    x = torch.rand(n, *shape, generator=g, dtype=torch.float64) * 2 - 1
    members = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(m)])
    lam = torch.rand(m, k, generator=g, dtype=torch.float64) + 0.2
    lam = lam / lam.sum(1, keepdim=True)
    return x, members, lam


def test_forward_model_is_abs_of_the_mixture_and_is_inverted_exactly():
    x, members, lam = _synthetic()
    W = mixing_matrix(members, lam, 8)
    m = (W @ x.flatten(1)).view(80, 1, 4, 4)
    signs = torch.randint(0, 2, m.shape, generator=gen(1)).double() * 2 - 1
    e = signs * m
    # the model the attack fits is |Σλx|, not Σλ|x| (which the sign mask does not give)
    assert torch.allclose(e.abs(), (W @ x.flatten(1)).abs().view_as(e))
    assert not torch.allclose(e.abs(), (W @ x.abs().flatten(1)).view_as(e), atol=1e-2)
    X, res = reconstruct_signed(e.abs(), W, restarts=32)
    flip = (X * x).sum(0).sign()  # exact up to one sign per pixel position, shared by all images
    assert torch.allclose(X, x * flip, atol=1e-6) and float(res.max()) < 1e-10
    # a known offset (the cross-dataset public mean) fixes that sign too
    off = 0.3 * torch.ones_like(m)
    X2, _ = reconstruct_signed((m + off).abs(), W, offset=off, restarts=32)
    assert torch.allclose(X2, x, atol=1e-6)


def test_pixel_signs_and_global_sign_are_recovered_on_real_photos():
    x, _ = labelled_photo_crops(16, 16, seed=0)
    pub = photo = labelled_photo_crops(32, 16, seed=1, sources=("china", "flower"))[0]
    xc = 2 * x.double() / 255 - 1
    flips = torch.randint(0, 2, xc.shape[1:], generator=gen(2)).double() * 2 - 1
    f = align_pixel_signs(xc * flips)
    fixed = xc * flips * f
    fixed = fixed * global_sign(fixed, pub)
    assert sign_accuracy(fixed, x) >= 0.95 and photo is pub


def test_weights_from_labels_and_mixing_matrix_errors():
    t = torch.tensor([[0.5, 0.3, 0.2]])
    assert torch.allclose(weights_from_labels(t, torch.tensor([[0, 1, 2]]), torch.tensor([0, 1, 2])),
                          torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64))
    with pytest.raises(ValueError, match="both be"):
        mixing_matrix(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 3), 4)
    with pytest.raises(ValueError, match="n_private"):
        mixing_matrix(torch.tensor([[5]]), torch.ones(1, 1), 4)
    with pytest.raises(ValueError, match="expected \\|encodings\\|"):
        reconstruct_signed(torch.rand(3, 4), torch.ones(3, 2))
    with pytest.raises(ValueError, match="mixing matrix must be"):
        reconstruct_signed(torch.rand(3, 1, 2, 2), torch.ones(4, 2))
    with pytest.raises(ValueError, match="targets must be"):
        carlini_attack(encodings=torch.rand(3, 1, 2, 2), targets=torch.rand(4, 2), n_private=2, k_private=1,
                       public=torch.rand(2, 1, 2, 2))
    with pytest.raises(ValueError, match="mode must be"):
        instahide_challenge(torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), torch.rand(2, 3, 8, 8), mode="x")


def test_oracle_attack_beats_the_floor_on_real_photos():
    x, y = labelled_photo_crops(12, 16, seed=0)
    pub = labelled_photo_crops(24, 16, seed=1, sources=("china", "flower", "stereo_motorcycle"))[0]
    ch = make_challenge(x, y, 4, k=4, encodings_per_image=24, seed=0)
    ch.public = pub.float() / 255
    r = carlini_attack(encodings=ch.encodings, targets=ch.targets, n_private=12, k_private=4, public=pub,
                       members=ch.members,
                       weights=ch.weights, classes=y, restarts=16)
    sc = challenge_scores(ch, r)
    assert sc["mean_ssim"] > sc["floor"] + 0.2 and sc["sign_accuracy"] >= 0.95
    assert sc["frac_above_0.5"] >= 0.6


def test_attack_figure_draws_every_row():
    import matplotlib
    matplotlib.use("Agg")
    from ppml.plots import attack_figure

    im = torch.rand(4, 3, 8, 8)
    ih = {"originals": im, "oracle_images": im, "images": im, "oracle_mean_ssim": 0.8, "mean_ssim": 0.4, "mode": "inside"}
    rep = {"instahide": ih, "modes": {"inside": ih}, "floor": 0.3, "scramblemix": {"images": im, "mean_ssim": 0.1},
           "scramblemix_adaptive": {"images": im, "mean_ssim": 0.2}}
    fig = attack_figure(rep, n=3)
    assert len(fig.axes) == 5 * 3 and "0.40" in fig.axes[6].get_title(loc="left")


def _small_challenge(mode, seed=0, n=16, T=24, size=16):
    x, y = labelled_photo_crops(n, size, seed=seed)
    pub = labelled_photo_crops(64, size, seed=seed + 1, sources=("china", "flower", "stereo_motorcycle"))[0]
    kw = dict(k=4) if mode == "inside" else dict(k=6, k_private=2, public=pub)
    ch = make_challenge(x, y, 4, encodings_per_image=T, seed=seed, **kw)
    ch.public = pub.float() / 255
    return ch, pub


def test_class_counts_and_membership_errors():
    from ppml.attacks.instahide import class_counts, find_membership, recode_members

    ch, _ = _small_challenge("inside")
    assert torch.equal(class_counts(ch.targets, 16), torch.bincount(ch.labels, minlength=4))
    with pytest.raises(ValueError, match="carry no weight"):
        class_counts(torch.zeros(3, 2), 2)
    with pytest.raises(ValueError, match="targets must be"):
        find_membership(torch.rand(5, 1, 4, 4), torch.rand(4, 2), 2, 1)
    with pytest.raises(ValueError, match="X must be"):
        recode_members(torch.rand(5, 1, 4, 4), torch.rand(5, 2), torch.rand(2, 1, 3, 3), torch.tensor([0, 1]), 1)


def test_public_partners_lift_the_cross_mode_oracle():
    ch, pub = _small_challenge("cross")
    kw = dict(encodings=ch.encodings, targets=ch.targets, n_private=16, k_private=2, public=pub, k=6,
              members=ch.members, weights=ch.weights[:, :2], classes=ch.labels, restarts=2)
    sc = challenge_scores(ch, carlini_attack(**kw))
    plain = challenge_scores(ch, carlini_attack(find_public=False, **kw))
    assert sc["mean_ssim"] >= 0.5 and sc["sign_accuracy"] >= 0.95
    assert sc["mean_ssim"] > plain["mean_ssim"] + 0.05


@pytest.mark.parametrize("mode", ["inside", "cross"])
def test_full_attack_beats_the_floor_by_0_1(mode):
    ch, pub = _small_challenge(mode)
    r = carlini_attack(encodings=ch.encodings, targets=ch.targets, n_private=16, k_private=ch.k_private, public=pub,
                       k=ch.k, restarts=16 if mode == "inside" else 2)
    sc = challenge_scores(ch, r)
    assert sc["mean_ssim"] >= sc["floor"] + 0.1 and sc["max_ssim"] >= sc["floor"] + 0.1
