"""The transformation network of Ito, Kinoshita & Kiya (paper 04): Eq. (4) and (6), the two
training regimes, protect(), and the h_θ registry entry."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ppml.losses import feature_reconstruction_loss
from ppml.metrics import psnr, ssim
from ppml.models import create_model
from ppml.papers.transformation_network import (REGIMES, TrainingTrace, TransformationLoss, TransformNet,
                                                 build_transformnet, feature_distances, protect, protection_metrics,
                                                 protection_verdict, train_transformnet, trend_figure)


def _phi() -> nn.Module:
    """A small fixed feature extractor (conv-ReLU-pool-conv), standing in for VGG16 relu2_2."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(5, 7, 3, padding=1), nn.ReLU()).requires_grad_(False)


def _toy(n: int = 32, size: int = 8, classes: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    y = (x.float().mean((1, 2, 3)) > 127.5).long() % classes
    return x, y


# --------------------------------------------------------------------------- Eq. (6)


def test_feature_loss_is_eq6():
    phi = _phi()
    torch.manual_seed(0)
    x, xh = torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8)
    fa, fb = phi(xh), phi(x)
    c, h, w = fa.shape[1:]
    want = torch.stack([((fa[i] - fb[i]) ** 2).sum() / (c * h * w) for i in range(3)])
    got = feature_reconstruction_loss(phi, x, xh, reduction="none")
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(feature_reconstruction_loss(phi, x, xh), want.mean())
    torch.testing.assert_close(feature_reconstruction_loss(phi, x, xh, reduction="sum"), want.sum())
    torch.testing.assert_close(feature_reconstruction_loss(phi, x, xh), F.mse_loss(fa, fb))
    assert float(feature_reconstruction_loss(phi, x, x)) == 0.0


def test_feature_loss_gradient_flows_into_x_hat_only():
    phi = _phi()
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    xh = torch.rand(2, 3, 8, 8, requires_grad=True)
    feature_reconstruction_loss(phi, x, xh).backward()
    assert x.grad is None
    assert xh.grad is not None and xh.grad.abs().sum() > 0


def test_feature_loss_errors():
    phi = _phi()
    with pytest.raises(ValueError, match="same shape"):
        feature_reconstruction_loss(phi, torch.rand(2, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="float images in \\[0, 1\\].*x.float\\(\\) / 255"):
        feature_reconstruction_loss(phi, torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="reduction"):
        feature_reconstruction_loss(phi, torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), reduction="max")


# --------------------------------------------------------------------------- Eq. (4)


def test_loss_is_ce_minus_alpha_feat():
    net = build_transformnet(2, width=4, depth=1)
    phi = _phi()
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 1, 0])
    net.eval()
    for alpha in (0.0, 0.005, 0.1):
        hook = TransformationLoss(alpha, features=phi)
        loss, logits = hook(net, x, y)
        xh = net.h(x)
        want = F.cross_entropy(net.psi(xh), y) - alpha * F.mse_loss(phi(xh), phi(x))
        torch.testing.assert_close(loss, want)
        torch.testing.assert_close(logits, net(x))
        assert hook.last["ce"] == pytest.approx(float(F.cross_entropy(logits.detach(), y)), rel=1e-5)


def test_minus_sign_pushes_protected_images_away():
    # With φ = identity, L_feat = MSE(h(x), x). Minimising Eq. (4) with alpha > 0 must *raise*
    # it (the paper's sign: maximise the feature distance); with alpha < 0 it would fall.
    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    y = torch.zeros(16, dtype=torch.long)
    net = build_transformnet(2, width=4, depth=1)
    hook = TransformationLoss(50.0, features=nn.Identity())
    opt = torch.optim.SGD(net.h.parameters(), lr=0.05)
    net.eval()  # fixed BN statistics: a deterministic objective
    before = float(F.mse_loss(net.h(x), x))
    for _ in range(20):
        opt.zero_grad()
        hook(net, x, y)[0].backward()
        opt.step()
    after = float(F.mse_loss(net.h(x), x))
    assert after > before + 0.02


def test_alpha_validation_and_fingerprint():
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        TransformationLoss(-0.1)
    with pytest.raises(ValueError, match="alpha"):
        TransformationLoss(float("nan"))
    a, b = TransformationLoss(0.005), TransformationLoss(0.01)
    assert a.__qualname__ != b.__qualname__ and "0.005" in repr(a) and "relu2_2" in repr(a)


def test_alpha_zero_needs_no_feature_network():
    net = build_transformnet(2, width=4, depth=1)
    hook = TransformationLoss(0.0)  # no VGG is built for alpha = 0
    loss, logits = hook(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))
    assert hook.features is None and hook.last["feat"] == 0.0
    torch.testing.assert_close(loss, F.cross_entropy(logits, torch.tensor([0, 1])))


def test_default_features_are_vgg16_relu2_2():
    metrics = pytest.importorskip("ppml.metrics")
    if not hasattr(metrics, "VGG16Features"):
        pytest.skip("ppml.metrics.VGG16Features not available yet")
    hook = TransformationLoss(0.01)
    net = build_transformnet(2, width=4, depth=1)
    hook(net, torch.rand(2, 3, 16, 16), torch.tensor([0, 1]))
    assert isinstance(hook.features, metrics.VGG16Features)
    assert hook.features(torch.rand(1, 3, 16, 16)).shape == (1, 128, 8, 8)  # relu2_2: 128 maps at 1/2


# --------------------------------------------------------------------------- regimes


def test_frozen_regime_trains_h_only():
    x, y = _toy()
    psi = create_model("resnet20", num_classes=2)
    psi.train()
    psi(x.float() / 255)  # non-trivial BN statistics
    psi0 = copy.deepcopy(psi.state_dict())
    model, res = train_transformnet((x, y), alpha=0.01, regime="frozen", psi=psi, width=4, depth=1,
                                   features=_phi(), epochs=1, batch_size=16, lr=0.05, progress=False)
    for k, v in model.psi.state_dict().items():
        assert torch.equal(v, psi0[k]), k  # weights and BatchNorm buffers untouched
    assert model.freeze_psi and not model.psi.training and model.training
    assert all(not p.requires_grad for p in model.psi.parameters())
    assert res.config["loss"] == "callable:TransformationLoss(alpha=0.01, layer=relu2_2)"


def test_joint_regime_trains_both():
    x, y = _toy()
    torch.manual_seed(0)
    model, res = train_transformnet((x, y), alpha=0.01, regime="joint", num_classes=2, width=4, depth=1,
                                   features=_phi(), epochs=1, batch_size=16, lr=0.05, progress=False)
    fresh = build_transformnet(2, width=4, depth=1)
    assert not model.freeze_psi and all(p.requires_grad for p in model.psi.parameters())
    assert len(res.history) == 1 and res.final["train_acc"] is not None
    # psi moved away from its initialisation: its BN running means are no longer 0
    assert any(float(b.abs().sum()) > 0 for n, b in model.psi.named_buffers() if n.endswith("running_mean"))
    assert fresh.psi.bn1.running_mean.abs().sum() == 0


def test_select_best_uses_validation_loss():
    x, y = _toy(48)
    model, res = train_transformnet((x[:32], y[:32]), val_data=(x[32:], y[32:]), alpha=0.01, num_classes=2,
                                   width=4, depth=1, features=_phi(), epochs=2, batch_size=16, lr=0.05,
                                   progress=False)
    assert res.select_best == "val_loss"
    assert res.best_metric == min(res["val_loss"])


def test_regime_errors():
    with pytest.raises(ValueError, match="regime must be one of joint, frozen"):
        build_transformnet(2, regime="fixed")
    with pytest.raises(ValueError, match="needs psi=.*plain images"):
        build_transformnet(2, regime="frozen")
    assert REGIMES == ("joint", "frozen")


# --------------------------------------------------------------------------- protect / registry


def test_protect_kinds_and_values():
    torch.manual_seed(0)
    h = create_model("transformation_network", width=4, depth=2).eval()
    x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    p = protect(h, x, batch_size=2)
    assert p.dtype == torch.uint8 and p.shape == x.shape
    with torch.no_grad():
        want = (h(x.float() / 255) * 255).round().to(torch.uint8)
    assert torch.equal(p, want)
    pf = protect(TransformNet(h, create_model("resnet20")), x.float() / 255)
    assert pf.dtype == torch.float32
    torch.testing.assert_close(pf, want.float() / 255, atol=0.5 / 255 + 1e-6, rtol=0)
    with pytest.raises(ValueError, match="RGB images"):
        protect(h, torch.zeros(2, 1, 8, 8))


def test_feature_distances_match_loss():
    phi = _phi()
    x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    xh = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    d = feature_distances(phi, x, xh, batch_size=2)
    torch.testing.assert_close(d, feature_reconstruction_loss(phi, x.float() / 255, xh.float() / 255, reduction="none"))


def test_protection_metrics_equal_the_per_network_route():
    phi = _phi()
    x = torch.randint(0, 256, (7, 3, 8, 8), dtype=torch.uint8)
    torch.manual_seed(0)
    nets = {a: create_model("transformation_network", width=4, depth=1) for a in (0.0, 0.01)}
    m = protection_metrics(nets, x, phi, batch_size=3)  # batches of 3, 3, 1
    for a, h in nets.items():
        p = protect(h, x)
        assert m[a]["psnr"] == pytest.approx(float(psnr(p, x).mean()), rel=1e-6)
        assert m[a]["ssim"] == pytest.approx(float(ssim(p, x).mean()), rel=1e-6)
        assert m[a]["feat"] == pytest.approx(float(feature_distances(phi, x, p).mean()), rel=1e-6)
    assert m[0.0] != m[0.01]
    with pytest.raises(ValueError, match="uint8"):
        protection_metrics(nets, x.float() / 255, phi)
    with pytest.raises(ValueError, match="nets is empty"):
        protection_metrics({}, x, phi)


def test_transformation_network_registry_entry():
    h = create_model("transformation_network", width=4, depth=2)
    assert h.sigmoid and h.head.out_channels == 3
    y = h(torch.randn(2, 3, 8, 8) * 20)
    assert y.min() >= 0 and y.max() <= 1
    paper = create_model("transformation_network")
    assert [m.out_channels for m in paper.down.modules() if isinstance(m, nn.Conv2d)][::2] == [64, 128, 256, 512, 1024]


def test_h_init_is_copied_not_shared():
    h0 = create_model("transformation_network", width=4, depth=1)
    net = build_transformnet(2, width=4, depth=1, h_init=h0)
    for (k, a), b in zip(net.h.state_dict().items(), h0.state_dict().values()):
        assert torch.equal(a, b), k
    assert net.h is not h0
    with torch.no_grad():
        next(net.h.parameters()).add_(1.0)
    assert not torch.equal(next(net.h.parameters()), next(h0.parameters()))


def test_identity_init_learns_to_copy():
    from ppml.datasets import photo_crops
    from ppml.papers.transformation_network import identity_init

    x = photo_crops(64, size=8, seed=0)
    h = identity_init(x, width=8, depth=1, epochs=8, batch_size=8, lr=1e-2, progress=False)
    err = float(((protect(h, x).float() - x.float()) / 255).pow(2).mean())
    fresh = float(((protect(create_model("transformation_network", width=8, depth=1), x).float() - x.float()) / 255
                   ).pow(2).mean())
    assert err < 0.02 and err < fresh / 5, (err, fresh)  # MSE on [0, 1]: ~19 dB PSNR or better


# --------------------------------------------------------------------------- the trend (notebook 04's fig_trend)


def test_training_trace_measures_without_changing_training():
    from ppml.metrics import ssim

    x, y = _toy()
    kw = dict(alpha=0.01, regime="joint", num_classes=2, width=4, depth=1, features=_phi(), epochs=2, batch_size=16,
              lr=0.05, progress=False, seed=3)
    torch.manual_seed(0)  # the fresh h and psi
    plain_model, _ = train_transformnet((x, y), **kw)
    tr = TrainingTrace(x[:8], y[:8], every=3)
    torch.manual_seed(0)
    model, res = train_transformnet((x, y), trace=tr, **kw)
    for (k, v), w in zip(model.state_dict().items(), plain_model.state_dict().values()):
        assert torch.equal(v, w), k  # measuring (eval mode, no grad) leaves the optimisation as it was
    assert tr.steps == [0, 3, 4] and tr.step_count == 4  # 2 epochs x 2 steps: before steps 0 and 3, then the end
    assert len(tr.ssim) == len(tr.acc) == 3 and all(0 <= a <= 1 and -1 <= s <= 1 for s, a in zip(tr.ssim, tr.acc))
    model.eval()
    with torch.no_grad():
        logits, xh = model(x[:8].float() / 255, return_images=True)
    assert tr.ssim[-1] == pytest.approx(float(ssim(xh.clamp(0, 1), x[:8].float() / 255).mean()), abs=1e-5)
    assert tr.acc[-1] == pytest.approx(float((logits.argmax(1) == y[:8]).float().mean()))
    assert res.config["loss"].endswith("+trace")
    d = tr.as_dict()
    assert d["step"] == [0, 3, 4] and len(d["ssim"]) == 3
    fig = trend_figure({0.0: d, 0.01: tr}, plain_acc=0.5, steps_per_epoch=2, title="t")
    assert len(fig.axes) == 2 and len(fig.axes[1].lines) == 3  # two alphas and the plain line
    assert fig.axes[0].get_xlabel() == "epoch of h_θ" and fig.axes[0].lines[0].get_xdata()[-1] == 2.0


def test_training_trace_errors():
    with pytest.raises(ValueError):
        TrainingTrace(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), every=0)
    with pytest.raises(Exception):
        TrainingTrace(torch.rand(2, 3, 8, 8), torch.tensor([0, 1, 1]))
    with pytest.raises(TypeError):
        TrainingTrace(torch.rand(2, 3, 8, 8), torch.tensor([0, 1])).measure(nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError):
        trend_figure({})


def test_protection_verdict():
    acc = {"plain": 0.70, 0.0: 0.70, 0.005: 0.69, 0.01: 0.68}
    assert protection_verdict({0.0: 0.85, 0.005: 0.01, 0.01: 0.04}, acc) == (True, "")
    assert not protection_verdict({0.0: 0.85, 0.005: 0.12, 0.01: 0.04}, acc)[0]  # 0.12: stripes over visible garments
    ok, why = protection_verdict({0.0: 0.85, 0.005: 0.70, 0.01: 0.55}, acc)  # today's smoke run
    assert not ok and "0.70 at α = 0.005" in why and "0.55 at α = 0.01" in why and "accuracy" not in why
    ok, why = protection_verdict({0.0: 0.85, 0.005: 0.01, 0.01: 0.01}, {**acc, 0.01: 0.40})
    assert not ok and "40.0 % at α = 0.01" in why and "SSIM" not in why
    ok, why = protection_verdict({0.0: -0.03, 0.005: -0.05, 0.01: -0.04}, acc)  # SSIM blind: α = 0 low too
    assert not ok and "α = 0 (no feature loss) already has SSIM -0.03" in why
    assert protection_verdict({0.0: -0.03, 0.005: 0.01, 0.01: 0.01}, acc, min_reference_ssim=None)[0]
    with pytest.raises(KeyError):
        protection_verdict({0.005: 0.1}, acc)


def test_trace_first_step_at_or_below():
    from ppml.papers.transformation_network import UNRECOGNISABLE_SSIM, TrainingTrace

    t = TrainingTrace(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))
    t.steps, t.ssim = [0, 8, 16], [0.8, UNRECOGNISABLE_SSIM, 0.01]
    assert t.first_step_at_or_below() == 8  # at the threshold counts
    assert t.first_step_at_or_below(0.001) is None
