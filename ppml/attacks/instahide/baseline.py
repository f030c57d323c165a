"""The simple baseline attack on instance encodings: features of the absolute encodings,
similarity, grouping of encodings of the same image, per-group reconstruction, a learned colour
fix (:func:`instahide_attack`), and Hungarian matching of reconstructions to originals
(:func:`match_reconstructions`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ppml._checks import check_finite, check_images, check_positive_int


def abs_features(enc: torch.Tensor, *, value_range: tuple[float, float] = (-1.0, 1.0),
                 centre: bool = False) -> torch.Tensor:
    """Step 1: ``|e − c| / max(|lo − c|, |hi − c|)`` in [0, 1], with ``c`` the middle of
    ``value_range`` if ``centre`` else 0.

    >>> abs_features(torch.tensor([[-0.5, 0.25]]).view(1, 1, 1, 2)).flatten().tolist()
    [0.5, 0.25]
    >>> abs_features(torch.tensor([0.0, 0.75]).view(1, 1, 1, 2), value_range=(0, 1), centre=True).flatten().tolist()
    [1.0, 0.5]
    """
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range must be (lo, hi) with hi > lo, got {value_range}")
    c = (lo + hi) / 2 if centre else 0.0
    scale = max(abs(lo - c), abs(hi - c))
    return ((enc.float() - c).abs() / scale).clamp(0, 1)


def encoding_similarity(a: torch.Tensor) -> torch.Tensor:
    """Step 2: ``(N, N)`` Pearson correlation of the absolute-value images ``a`` after
    subtracting their per-pixel mean over the set (the diagonal is 1).

    >>> a = torch.rand(5, 3, 4, 4)
    >>> s = encoding_similarity(a)
    >>> s.shape, bool(torch.allclose(s.diagonal(), torch.ones(5), atol=1e-5))
    (torch.Size([5, 5]), True)
    """
    f = a.flatten(1).double()
    f = f - f.mean(0, keepdim=True)
    f = f - f.mean(1, keepdim=True)
    f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (f @ f.T).float()


def group_encodings(sim: torch.Tensor, n_groups: int, *, neighbours: int = 10, seed: int = 0) -> np.ndarray:
    """Step 3: a group label per encoding by spectral clustering of the symmetrised
    ``neighbours``-nearest-neighbour graph weighted by the (positive) similarity."""
    from sklearn.cluster import SpectralClustering

    s = sim.double().clone()
    n = s.shape[0]
    if not 1 <= n_groups <= n:
        raise ValueError(f"n_groups must lie in [1, {n}] (the number of encodings), got {n_groups}")
    s.fill_diagonal_(-np.inf)
    k = min(int(neighbours), n - 1)
    idx = s.topk(k, dim=1).indices
    w = torch.zeros_like(s)
    w.scatter_(1, idx, s.gather(1, idx).clamp_min(0) + 1e-6)
    w = torch.maximum(w, w.T).numpy()
    sc = SpectralClustering(n_clusters=int(n_groups), affinity="precomputed", random_state=int(seed),
                            assign_labels="cluster_qr")
    with warnings.catch_warnings():  # well-separated groups make the graph disconnected: that is fine
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        return sc.fit_predict(w)


def reconstruct_groups(a: torch.Tensor, labels: np.ndarray, n_groups: int, *, k: int = 4, iters: int = 20,
                       ) -> torch.Tensor:
    """Step 4: ``(n_groups, C, H, W)`` estimates of each group's original's absolute values.

    Starts from the group means of ``a`` (averaging) and, for ``iters`` > 0, refines them by
    non-negative matrix factorisation ``A ≈ W H`` (Lee & Seung's multiplicative updates) with
    every row of ``W`` restricted to its ``k`` largest entries (an encoding mixes ``k`` images);
    each row of ``H`` keeps the mean of its initial group mean, which fixes NMF's scale.
    """
    n, shape = a.shape[0], a.shape[1:]
    A = a.flatten(1).double()
    lab = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    onehot = F.one_hot(lab, n_groups).double()
    counts = onehot.sum(0).clamp_min(1)
    H = (onehot.T @ A) / counts[:, None]
    empty = onehot.sum(0) == 0
    if bool(empty.any()):  # a group without members starts from the overall mean
        H[empty] = A.mean(0)
    target_mean = H.mean(1, keepdim=True).clamp_min(1e-6)
    W = onehot + 0.1 / max(n_groups, 1)
    kk = min(int(k), n_groups)
    eps = 1e-9
    for it in range(int(iters)):
        W *= (A @ H.T) / (W @ (H @ H.T) + eps)
        if kk < n_groups:
            thr = W.topk(kk, dim=1).values[:, -1:]
            W = torch.where(W >= thr, W, torch.zeros_like(W))
        H *= (W.T @ A) / ((W.T @ W) @ H + eps)
        c = target_mean / H.mean(1, keepdim=True).clamp_min(1e-12)
        H *= c
        W /= c.T
    return H.clamp(0, 1).float().view(n_groups, *shape)


class ColourFix(nn.Module):
    """Step 5's small CNN: absolute-value image in [0, 1] → image in [0, 1]."""

    def __init__(self, channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=4, dilation=4), nn.ReLU(inplace=True),
            nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(a))


def train_colour_fix(public: torch.Tensor, *, value_range: tuple[float, float], centre: bool,
                     steps: int = 200, batch_size: int = 32, crop: int = 16, lr: float = 5e-3, width: int = 16,
                     seed: int = 0) -> ColourFix:
    """Train :class:`ColourFix` on public plain images ``(M, C, H, W)`` (uint8 or [0, 1]):
    input = the attack's step-1 features of each image as the scheme would send it unmixed
    (``2x − 1`` for the (−1, 1) range, ``x`` for (0, 1)), target = the image (MSE). The
    network is local (receptive field 17 px), so it trains on random ``crop``-pixel patches."""
    x = public.float() / 255 if public.dtype == torch.uint8 else public.float()
    lo, hi = value_range
    sent = lo + (hi - lo) * x
    a = abs_features(sent, value_range=value_range, centre=centre)
    torch.manual_seed(int(seed))
    g = torch.Generator().manual_seed(int(seed))
    fix = ColourFix(x.shape[1], width)
    opt = torch.optim.Adam(fix.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=int(steps))
    for _ in range(int(steps)):
        i = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=g)
        h, w = x.shape[-2:]
        c = min(int(crop), h, w)
        r0 = int(torch.randint(0, h - c + 1, (1,), generator=g))
        c0 = int(torch.randint(0, w - c + 1, (1,), generator=g))
        sl = (i, slice(None), slice(r0, r0 + c), slice(c0, c0 + c))
        loss = F.mse_loss(fix(a[sl]), x[sl])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return fix.eval()


@dataclass
class AttackResult:
    """What :func:`instahide_attack` returns."""

    images: torch.Tensor   #: (G, C, H, W) reconstructions in [0, 1] (after the colour fix if any)
    raw: torch.Tensor      #: (G, C, H, W) step-4 absolute-value estimates, before the colour fix
    labels: np.ndarray     #: (N,) group of each encoding


def instahide_attack(*, encodings: torch.Tensor, n_originals: int, value_range: tuple[float, float] = (-1.0, 1.0),
                     centre: bool = False, k: int = 4, neighbours: int = 10, iters: int = 20,
                     colour_fix: nn.Module | None = None, seed: int = 0) -> AttackResult:
    """Run steps 1–5 on ``encodings`` ``(N, C, H, W)`` and return ``n_originals`` reconstructions.

    ``colour_fix``: a model from :func:`train_colour_fix` (trained with the same
    ``value_range``/``centre``), or ``None`` to return the raw estimates as images.

    >>> from ppml.encoders import InstaHide
    >>> x = torch.rand(6, 3, 8, 8)
    >>> enc = torch.cat([InstaHide(k=1).encode(x, torch.Generator().manual_seed(i)).images for i in range(3)])
    >>> r = instahide_attack(encodings=enc, n_originals=6, k=1, neighbours=2)
    >>> r.images.shape
    torch.Size([6, 3, 8, 8])
    """
    check_finite(check_images(encodings, "encodings", "instahide_attack", value_range=None), "encodings",
                 "instahide_attack")
    check_positive_int(n_originals, "n_originals", "instahide_attack")
    a = abs_features(encodings.cpu(), value_range=value_range, centre=centre)
    sim = encoding_similarity(a)
    labels = group_encodings(sim, n_originals, neighbours=neighbours, seed=seed)
    raw = reconstruct_groups(a, labels, n_originals, k=k, iters=iters)
    if colour_fix is None:
        return AttackResult(raw, raw, labels)
    with torch.no_grad():
        img = colour_fix(raw)
    return AttackResult(img, raw, labels)


def match_reconstructions(originals: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """For evaluation: the index of the reconstruction assigned to each original by a
    minimum-MSE one-to-one matching (Hungarian algorithm), ``(len(originals),)``.

    >>> x = torch.rand(4, 3, 4, 4)
    >>> match_reconstructions(x, x[[2, 0, 3, 1]]).tolist()
    [1, 3, 0, 2]
    """
    from scipy.optimize import linear_sum_assignment

    o = (originals.float() / 255 if originals.dtype == torch.uint8 else originals.float()).flatten(1)
    r = recon.float().flatten(1)
    cost = torch.cdist(o.double(), r.double()).pow(2).numpy()
    rows, cols = linear_sum_assignment(cost)
    out = np.empty(len(o), dtype=np.int64)
    out[rows] = cols
    return torch.from_numpy(out)
