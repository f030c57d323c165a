"""Pixel metrics on batches: MSE, PSNR, SSIM (= scikit-image's), and the input checks every
metric of :mod:`ppml.metrics` shares.

Every full-reference metric takes two batches ``(N, C, H, W)`` — uint8 (0–255) or float in
[0, 1] — and returns a per-image tensor of shape ``(N,)`` (float32, on the inputs' device).
Pixel metrics are computed on the [0, 1] scale (a uint8 image is divided by 255 first), so
``mse`` is in units of (full range)²: multiply by 255² for 8-bit units. They are vectorised
over the batch and differentiable where the math is.

>>> import torch
>>> x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8); y = x.clone(); y[1] = 255
>>> mse(x, y)
tensor([0., 1.])
>>> psnr(x, y)
tensor([inf, 0.])
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ppml._checks import RangeError, ShapeError, check_images

__all__ = ["mse", "psnr", "ssim"]


# --------------------------------------------------------------------------- input handling
def _check_batch(x: torch.Tensor, name: str, who: str) -> None:
    # the range is checked by _to_unit against the declared value_range; per-image metrics of
    # an empty batch are an empty result (tests/test_reliability.py), not an error
    check_images(x, name, who, value_range=None, allow_empty=True)


def _to_unit(x: torch.Tensor, name: str, who: str, value_range: Sequence[float] = (0.0, 1.0),
             check: bool = True) -> torch.Tensor:
    """uint8 → float32 / 255; float → mapped from ``value_range`` to [0, 1] (range checked)."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32) / 255.0
    lo, hi = float(value_range[0]), float(value_range[1])
    if not (hi > lo and math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{who}: value_range must be finite (low, high) with low < high, got {tuple(value_range)}")
    if check and x.numel():
        # A small tolerance: float reconstructions often overshoot by a rounding error.
        tol = 1e-3 * (hi - lo)
        mn, mx = float(x.detach().min()), float(x.detach().max())  # NaN propagates into both
        if not (math.isfinite(mn) and math.isfinite(mx)):
            bad = int((~torch.isfinite(x.detach())).sum())
            raise RangeError(
                f"{who}: {name} must be finite, got {bad} non-finite value(s) (NaN or ±inf); every metric would be NaN. "
                "Check the model or cipher that produced it (e.g. a diverged reconstruction), or replace them "
                "with torch.nan_to_num(x).clamp(0, 1)")
        if mn < lo - tol or mx > hi + tol:
            raise RangeError(
                f"{who}: {name} has values outside value_range=({lo:g}, {hi:g}): got [{mn:.4g}, {mx:.4g}]; "
                "pass uint8 images, float images in [0, 1], or say the range with value_range=(-1, 1) "
                "(clamp reconstructions that overshoot)")
    if (lo, hi) == (0.0, 1.0):
        return x
    return (x - lo) / (hi - lo)


def _pair(x: torch.Tensor, y: torch.Tensor, who: str, value_range: Sequence[float] = (0.0, 1.0),
          min_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    _check_batch(x, "x", who)
    _check_batch(y, "y", who)
    if x.shape != y.shape:
        raise ShapeError(f"{who}: x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < min_size:
        raise ShapeError(f"{who}: images must be at least {min_size}×{min_size}, got {tuple(x.shape[-2:])}")
    xf, yf = _to_unit(x, "x", who, value_range), _to_unit(y, "y", who, value_range)
    if xf.dtype != yf.dtype:
        dt = torch.promote_types(xf.dtype, yf.dtype)
        xf, yf = xf.to(dt), yf.to(dt)
    if xf.device != yf.device:
        raise ValueError(f"{who}: x is on {xf.device} and y on {yf.device}; move both to one device")
    return xf, yf


def _gauss1d(size: int, sigma: float, dtype, device) -> torch.Tensor:
    t = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(t ** 2) / (2 * sigma ** 2))
    return g / g.sum()


# --------------------------------------------------------------------------- pixel metrics
def mse(x: torch.Tensor, y: torch.Tensor, *, value_range: Sequence[float] = (0.0, 1.0)) -> torch.Tensor:
    """Mean squared error per image, on the [0, 1] scale: ``(N, C, H, W) × 2 → (N,)``.

    ``value_range`` says what a float input spans (default (0, 1); e.g. (-1, 1)); uint8 inputs
    are always 0–255. Differentiable.

    >>> x = torch.zeros(1, 3, 4, 4); mse(x, x + 0.5)
    tensor([0.2500])
    """
    xf, yf = _pair(x, y, "mse", value_range)
    return (xf - yf).square().flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor, *, value_range: Sequence[float] = (0.0, 1.0)) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB, peak = the full range: ``10·log10(1 / MSE)``.

    Equals scikit-image's ``peak_signal_noise_ratio(x, y, data_range=255)`` on uint8 images.
    Identical images give ``inf``.

    >>> x = torch.zeros(1, 3, 4, 4); psnr(x, x + 0.1).round(decimals=4)
    tensor([20.])
    """
    xf, yf = _pair(x, y, "psnr", value_range)  # errors name psnr, not mse
    return 10.0 * torch.log10(1.0 / (xf - yf).square().flatten(1).mean(1))


def ssim(x: torch.Tensor, y: torch.Tensor, *, win_size: int = 7, gaussian_weights: bool = False,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
         value_range: Sequence[float] = (0.0, 1.0)) -> torch.Tensor:
    """Mean structural similarity (Wang et al. 2004) per image: ``(N, C, H, W) × 2 → (N,)``.

    Matches scikit-image's ``structural_similarity(x, y, channel_axis=0, data_range=...)``
    with its defaults: a 7×7 **uniform** window (``gaussian_weights=False``), K1 = 0.01,
    K2 = 0.03, sample covariances (normalised by n − 1), the SSIM map averaged over the
    positions where the whole window fits (skimage crops ``(win_size − 1) / 2`` pixels on each
    side), then over channels. ``gaussian_weights=True`` gives skimage's Gaussian option
    (σ = 1.5, window ``2·round(3.5σ) + 1 = 11``, as Wang et al.). Computed in float64 and
    returned in the inputs' float dtype (float32 for uint8). Differentiable.

    >>> x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> ssim(x, x)
    tensor([1., 1.])
    """
    _check_batch(x, "x", "ssim")
    _check_batch(y, "y", "ssim")
    if x.shape != y.shape:
        raise ShapeError(f"ssim: x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if gaussian_weights:
        win_size = 2 * int(3.5 * sigma + 0.5) + 1
    if win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"ssim: win_size must be an odd integer ≥ 3, got {win_size}")
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"ssim: images {tuple(x.shape[-2:])} are smaller than the {win_size}×{win_size} "
                         "window; pass a smaller win_size (odd) or larger images")
    n, c, h, w = x.shape
    # Chunks of whole images: the float64 work arrays (about 15 copies of a chunk) stay the same
    # size however many images there are, and every image is computed exactly as in one batch.
    step = max(1, _SSIM_CHUNK_VALUES // max(1, c * h * w))
    out = [_ssim_chunk(*_pair(x[i:i + step], y[i:i + step], "ssim", value_range), win_size, gaussian_weights,
                       sigma, k1, k2) for i in range(0, n, step)]
    if not out:  # an empty batch: the (0,) result in the dtype a non-empty one would have
        xf, _ = _pair(x[:0], y[:0], "ssim", value_range)
        return xf.new_zeros(0)
    return torch.cat(out)


#: values (images × C × H × W) per chunk of :func:`ssim`
_SSIM_CHUNK_VALUES = 1 << 20


def _ssim_chunk(xf: torch.Tensor, yf: torch.Tensor, win_size: int, gaussian_weights: bool, sigma: float,
                k1: float, k2: float) -> torch.Tensor:
    out_dtype = xf.dtype
    work = torch.float32 if xf.device.type == "mps" else torch.float64
    n, c, h, w = xf.shape
    a, b = xf.to(work).reshape(n * c, 1, h, w), yf.to(work).reshape(n * c, 1, h, w)
    # 'valid' filtering == skimage's filtered map cropped by (win_size-1)/2 on each side
    stack = torch.cat([a, b, a * a, b * b, a * b], 0)
    if gaussian_weights:  # separable
        g = _gauss1d(win_size, sigma, work, a.device)
        m = F.conv2d(F.conv2d(stack, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1)).split(n * c)
    else:
        m = F.avg_pool2d(stack, win_size, stride=1).split(n * c)
    ux, uy, uxx, uyy, uxy = m
    npix = win_size ** 2
    cov_norm = npix / (npix - 1)  # skimage's use_sample_covariance=True
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1, c2 = (k1 * 1.0) ** 2, (k2 * 1.0) ** 2  # data range is 1 on the unit scale
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.reshape(n, c, -1).mean((1, 2)).to(out_dtype)


