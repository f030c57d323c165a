"""ppml.metrics: pixel metrics against scikit-image, LPIPS/VGG features on the real trunks,
no-reference metrics on real photo crops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ppml import metrics
from ppml.data import photo_crops


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


@pytest.mark.parametrize("bad, match", [
    (lambda x: x[0], r"batch \(N, C, H, W\).*x\[None\]"),
    (lambda x: x[:, :, :4], "same shape"),
    (lambda x: x.long(), "uint8 .* or float"),
    (lambda x: x.numpy(), "must be a torch.Tensor"),
])
def test_bad_inputs_raise_clear_errors(pairs, bad, match):
    x, y = pairs
    with pytest.raises((ValueError, TypeError), match=match):
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
