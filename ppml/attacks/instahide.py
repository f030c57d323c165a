"""The attack of Carlini et al. (2021) on InstaHide, reimplemented in a simplified form.

Carlini, Deng, Garg, Jha, Mahloujifar, Mahmoody, Song, Thakurta & Tramèr, "Is Private
Learning Possible with Instance Encoding?" (IEEE S&P 2021) recover InstaHide's private
images from the encodings alone, in steps that this module follows:

1. **Remove the sign mask**: take absolute values. With values centred on 0, ``|σ ⊙ Σλx̃|
   = |Σλx̃|`` — the random signs are gone.
2. **Similarity** of encodings that share an original: the paper trains a network on
   simulated encodings; here (documented simplification) the Pearson correlation of the
   absolute values after subtracting their per-pixel mean over all encodings.
3. **Grouping** of the encodings that share an original (the paper: clique finding on the
   similarity graph): spectral clustering of a symmetrised k-nearest-neighbour graph into as
   many groups as there are originals (the attacker is assumed to know that number, as in
   the InstaHide challenge).
4. **Reconstruction** by solving the mixing system on absolute values: ``|e_i| ≈ Σ_g W_ig
   |x̃_g|`` with non-negative, row-sparse weights (at most ``k`` per encoding), solved by
   non-negative matrix factorisation started from the group means (``iters=0``: group
   means only, i.e. averaging).
5. **Colour fix**: absolute values lose the sign of every centred value (dark and bright
   look alike); the paper corrects colours with a learned model. Here a small CNN is trained
   on *public* images (never the private ones) to map ``|x̃|`` back to ``x``.

The same steps apply to any encoder's outputs: ``value_range`` says how the encodings are
sent ((−1, 1) for InstaHide, (0, 1) for ScrambleMix views) and ``centre=True`` makes the
attacker centre that range before step 1 — for ScrambleMix this is an *adaptive* variant:
PE's negation ``v → 1 − v`` becomes a sign flip after centring, which step 1 removes.

Reconstructions are scored with :func:`match_reconstructions` (Hungarian matching of
originals to reconstructions by MSE) and :mod:`ppml.metrics`.

**The faithful attack** (second half of this module; entry points :func:`attack_report`,
:func:`instahide_challenge`, :func:`carlini_attack`): steps 1–5 above fit ``|e| ≈ Σλ|x̃|``,
which is not the model (``|Σλx̃| ≠ Σλ|x̃|``); they stay as the simple baseline. The faithful
version follows Carlini et al. on the InstaHide Challenge configuration, scaled down
(:func:`make_challenge`): membership by clique growth on a similarity graph
(:func:`find_membership`; high-pass features instead of their trained network), weights read
off the mixed labels (:func:`weights_from_labels`), signed images fitted to ``|Σλx + O|`` per
pixel (:func:`reconstruct_signed`: alternating sign guesses / one shared least-squares solve,
restarts; in the cross-dataset mode the public share is a known offset plus noise, handled by
expectation-maximisation over the signs), then the one sign per pixel position shared by all
images (:func:`align_pixel_signs`) and the global sign (:func:`global_sign`). Scores: per-image
SSIM and the Challenge's max-/mean-SSIM (:func:`challenge_scores`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ppml._checks import ShapeError, check_finite, check_images, check_positive_int

__all__ = ["abs_features", "encoding_similarity", "group_encodings", "reconstruct_groups", "ColourFix",
           "train_colour_fix", "instahide_attack", "match_reconstructions", "AttackResult",
           # the attack on the true forward model (Carlini et al.'s steps, faithful)
           "highpass_features", "mixing_matrix", "reconstruct_signed", "align_pixel_signs", "global_sign",
           "grow_cliques", "find_membership", "reassign_members", "weights_from_labels", "Challenge",
           "make_challenge", "public_offset", "CarliniResult", "carlini_attack", "sign_accuracy",
           "challenge_scores", "labelled_photo_crops", "instahide_challenge", "scramblemix_challenge",
           "attack_report", "PRIVATE_SOURCES", "PUBLIC_SOURCES"]


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


# =============================================================================================
# The attack after Carlini et al., faithful to the forward model
# =============================================================================================
#
# What an attacker of the InstaHide Challenge holds: the encodings e_t = σ_t ⊙ m_t with
# m_t = Σ_j λ_tj x̃_{p_tj} (+ Σ public λ·public image in the cross-dataset mode), the mixed
# labels y_t = Σ_{private j} λ_tj onehot(class of p_tj), the number of private images and the
# public data set. The reconstruction model is the true one: |e_t| = |m_t| (not Σλ|x̃|).

def _flat_unit(images: torch.Tensor) -> torch.Tensor:
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    return x


def _centred(images: torch.Tensor) -> torch.Tensor:
    """uint8 / [0, 1] images → centred ``2x − 1`` (float64)."""
    return 2 * _flat_unit(images).double() - 1


def highpass_features(a: torch.Tensor, *, radius: int = 1) -> torch.Tensor:
    """Similarity features of absolute-value encodings ``a`` ``(M, C, H, W)``: ``a²`` minus its
    local ``(2r+1)²`` mean (edges of the mixed energy), rows centred over the set and scaled to
    unit norm, ``(M, C·H·W)`` float64. High-pass features are nearly independent from pixel to
    pixel, so unrelated encodings correlate far less than raw ``|e|`` does (the smooth parts
    of natural images dominate raw correlations).

    >>> f = highpass_features(torch.rand(5, 3, 8, 8))
    >>> f.shape, bool(torch.allclose(f.norm(dim=1), torch.ones(5, dtype=torch.float64)))
    (torch.Size([5, 192]), True)
    """
    q = a.double() ** 2
    k = 2 * int(radius) + 1
    q = q - F.avg_pool2d(F.pad(q, (int(radius),) * 4, mode="replicate"), k, 1)
    f = q.flatten(1)
    f = f - f.mean(0, keepdim=True)
    f = f - f.mean(1, keepdim=True)
    return f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)


def mixing_matrix(members: torch.Tensor, weights: torch.Tensor, n_private: int) -> torch.Tensor:
    """``(M, n_private)`` matrix ``W`` with ``W[t, members[t, j]] += weights[t, j]`` (entries
    ``< 0`` in ``members`` mean "unknown" and are skipped), float64.

    >>> mixing_matrix(torch.tensor([[0, 2], [1, -1]]), torch.tensor([[0.5, 0.25], [1.0, 0.0]]), 3).tolist()
    [[0.5, 0.0, 0.25], [0.0, 1.0, 0.0]]
    """
    members = torch.as_tensor(members, dtype=torch.int64)
    weights = torch.as_tensor(weights, dtype=torch.float64)
    if members.shape != weights.shape or members.dim() != 2:
        raise ValueError(f"members and weights must both be (M, k), got {tuple(members.shape)} and {tuple(weights.shape)}")
    if bool((members >= int(n_private)).any()):
        raise ValueError(f"members index a private image >= n_private={n_private}")
    W = torch.zeros(members.shape[0], int(n_private), dtype=torch.float64)
    ok = members >= 0
    W.scatter_add_(1, members.clamp_min(0), torch.where(ok, weights, torch.zeros_like(weights)))
    return W


def reconstruct_signed(abs_enc: torch.Tensor, mix: torch.Tensor, *, offset: torch.Tensor | None = None,
                       noise_var: torch.Tensor | None = None, restarts: int = 16, iters: int = 40,
                       ridge: float = 1e-6, tol: float = 1e-12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit signed private images ``X`` ``(N, C, H, W)`` to ``|e| = |W X + O|``.

    Every pixel position is its own real phase-retrieval problem with the same ``(M, N)``
    mixing matrix ``W`` (:func:`mixing_matrix`): alternate the sign guesses
    ``S = sign(W X + O)`` with one least-squares solve ``X = (WᵀW + ρI)⁻¹ Wᵀ (S ⊙ |e| − O)``
    shared by all pixels, from up to ``restarts`` starts (the first: all signs +, the others
    random, run only for the pixels whose mean squared misfit is still above ``tol``),
    keeping for each pixel the start with the smallest residual. ``offset`` ``O``
    ``(M, C, H, W)`` is the known part of each mixture (cross-dataset: public share × public
    mean), zero if ``None``. Without an offset ``X`` and ``−X`` fit equally at every pixel:
    the result is right up to one sign per pixel position shared by all images (see
    :func:`align_pixel_signs`). Returns ``(X, residual)``, ``residual`` ``(C, H, W)`` the mean
    squared misfit per pixel.

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(6, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    >>> members = torch.stack([torch.randperm(6, generator=g)[:3] for _ in range(60)])
    >>> W = mixing_matrix(members, torch.full((60, 3), 1 / 3), 6)
    >>> e = (W @ x.flatten(1)).view(60, 1, 4, 4) * (torch.randint(0, 2, (60, 1, 4, 4), generator=g) * 2 - 1)
    >>> X, res = reconstruct_signed(e.abs(), W)
    >>> bool(((X.flatten(1) - x.flatten(1) * (X.flatten(1) * x.flatten(1)).sum(0).sign()).abs() < 1e-6).all())
    True
    """
    if abs_enc.dim() != 4:
        raise ValueError(f"reconstruct_signed: expected |encodings| (M, C, H, W), got {tuple(abs_enc.shape)}")
    shape = abs_enc.shape[1:]
    A = abs_enc.double().flatten(1)
    W = torch.as_tensor(mix, dtype=torch.float64)
    if W.dim() != 2 or W.shape[0] != A.shape[0]:
        raise ValueError(f"reconstruct_signed: mixing matrix must be (M={A.shape[0]}, N), got {tuple(W.shape)}")
    if int(restarts) < 1 or int(iters) < 0:
        raise ValueError(f"restarts must be >= 1 and iters >= 0, got {restarts}, {iters}")
    O = torch.zeros_like(A) if offset is None else offset.double().reshape(A.shape)
    V = None if noise_var is None else torch.broadcast_to(noise_var.double().reshape(-1, *shape).flatten(1), A.shape)
    n = W.shape[1]
    solve = torch.linalg.solve(W.T @ W + ridge * torch.eye(n, dtype=torch.float64), W.T)  # (N, M), shared by pixels
    g = torch.Generator().manual_seed(int(seed))
    best_x = torch.zeros(n, A.shape[1], dtype=torch.float64)
    best_loss = torch.full((A.shape[1],), torch.inf, dtype=torch.float64)
    todo = torch.arange(A.shape[1])
    for r in range(int(restarts)):  # later starts only for pixels not yet fitted exactly
        a, o = A[:, todo], O[:, todo]
        v = None if V is None else V[:, todo].clamp_min(1e-8)
        if r == 0:  # the offset's signs (the public mean dominates a mixture), else all +
            S = torch.where(o < 0, -1.0, 1.0).double()
        else:
            S = torch.randint(0, 2, a.shape, generator=g).double() * 2 - 1
        X = solve @ (S * a - o)
        for _ in range(int(iters)):
            mu = W @ X + o
            # hard signs, or with noise inside the |.| (the public part) their posterior mean
            # tanh(a·μ/σ²): expectation-maximisation for phase retrieval with Gaussian noise
            S = torch.where(mu >= 0, 1.0, -1.0).double() if v is None else torch.tanh(a * mu / v)
            X = solve @ (S * a - o)
        loss = ((W @ X + o).abs() - a).pow(2).mean(0)
        better = loss < best_loss[todo]
        best_x[:, todo[better]] = X[:, better]
        best_loss[todo[better]] = loss[better]
        todo = todo[best_loss[todo] > tol]
        if not len(todo):
            break
    return best_x.view(n, *shape), best_loss.view(*shape)


def _sign_graph(X: torch.Tensor, *, reach: int = 2, cosine: bool = False, channel_weight: float = 1.0):
    """Sparse symmetric ``(D, D)`` matrix of similarities ``⟨X_d, X_d'⟩`` across the images
    (cosines if ``cosine``) between every pixel position and the positions within ``reach``
    pixels in the same channel (a square neighbourhood), and the other channels there."""
    import scipy.sparse as sp

    n, c, h, w = X.shape
    f = X.double().flatten(1)
    if cosine:
        f = f / f.norm(dim=0, keepdim=True).clamp_min(1e-12)
    idx = torch.arange(c * h * w).view(c, h, w)
    pairs = [(idx[a], idx[b]) for a in range(c) for b in range(a + 1, c)]
    n_ch = sum(p.numel() for p, _ in pairs)
    r = int(reach)
    for dy in range(0, r + 1):
        for dx in range(-r, r + 1):
            if (dy, dx) <= (0, 0):
                continue  # each unordered offset once
            y0, y1 = 0, h - dy
            x0, x1 = max(0, -dx), w - max(0, dx)
            pairs.append((idx[:, y0:y1, x0:x1], idx[:, y0 + dy:y1 + dy, x0 + dx:x1 + dx]))
    src = torch.cat([p.flatten() for p, _ in pairs])
    dst = torch.cat([q.flatten() for _, q in pairs])
    val = (f[:, src] * f[:, dst]).sum(0)
    val[:n_ch] *= float(channel_weight)  # a pixel's channels: the strongest evidence
    val = val.numpy()
    d = c * h * w
    m = sp.coo_matrix((val, (src.numpy(), dst.numpy())), shape=(d, d)).tocsr()
    return m + m.T


def align_pixel_signs(X: torch.Tensor, *, reach: int = 2, cosine: bool = False, channel_weight: float = 1.0,
                      rounds: int = 20) -> torch.Tensor:
    """The one sign per pixel position shared by all images that :func:`reconstruct_signed`
    leaves open (without an offset), recovered from the images' own smoothness: neighbouring
    pixels and the colour channels of one pixel are positively correlated across natural
    images, so ``⟨X_d, X_d'⟩`` over the images says whether positions ``d`` and ``d'`` carry
    the same flip. The flips ``f`` maximise ``Σ C_dd' f_d f_d'`` over the grid graph of those
    cosine similarities (:math:`\\mathbb{Z}_2` synchronisation): the leading eigenvector's
    signs, then a few rounds of local majority. Returns ``f`` ``(C, H, W)`` in {−1, +1}; apply
    as ``X * f`` (the global sign stays open: :func:`global_sign`).

    >>> x = torch.randn(5, 1, 1, 1, generator=torch.Generator().manual_seed(1)).expand(5, 3, 4, 4)  # flat images
    >>> flips = torch.randint(0, 2, (3, 4, 4), generator=torch.Generator().manual_seed(0)) * 2 - 1
    >>> f = align_pixel_signs(x * flips)
    >>> bool((f * flips == (f * flips)[0, 0, 0]).all())
    True
    """
    from scipy.sparse.linalg import eigsh

    if X.dim() != 4:
        raise ValueError(f"align_pixel_signs: expected images (N, C, H, W), got {tuple(X.shape)}")
    shape = X.shape[1:]
    C = _sign_graph(X, reach=reach, cosine=cosine, channel_weight=channel_weight)
    d = C.shape[0]
    try:
        _, v = eigsh(C, k=1, which="LA", v0=np.ones(d), tol=1e-6, maxiter=5000)
        f = np.where(v[:, 0] >= 0, 1.0, -1.0)
    except Exception:  # noqa: BLE001  (no convergence: start from all +)
        f = np.ones(d)
    best, best_val = f, float(f @ (C @ f))
    for _ in range(int(rounds)):  # local majority, keeping the best assignment seen
        f = np.where(C @ f >= 0, 1.0, -1.0)
        val = float(f @ (C @ f))
        if val > best_val + 1e-12:
            best, best_val = f, val
        else:
            break
    return torch.from_numpy(best).view(*shape)


def global_sign(X: torch.Tensor, public: torch.Tensor, *, mix: torch.Tensor | None = None,
                abs_enc: torch.Tensor | None = None, offset: torch.Tensor | None = None) -> int:
    """The one sign left for the whole set (``X`` or ``−X``): with a known offset (the
    cross-dataset public share × public mean) the one of the two that fits ``|e|`` better,
    else the one whose distribution of values, per channel, is closer to that of the public
    images (``public``, uint8 or [0, 1]; centred as InstaHide does): mean quantile distance,
    i.e. natural photographs' brightness, contrast and skew per colour.

    >>> pub = torch.rand(8, 3, 4, 4) * 0.5           # dark public photos
    >>> global_sign(-(2 * torch.rand(5, 3, 4, 4) * 0.5 - 1), pub)   # a flipped dark set
    -1
    """
    if offset is not None and mix is not None and abs_enc is not None and bool(offset.abs().sum() > 0):
        A = abs_enc.double().flatten(1)
        W = torch.as_tensor(mix, dtype=torch.float64)
        O = offset.double().reshape(A.shape)
        Xf = X.double().flatten(1)
        lp = ((W @ Xf + O).abs() - A).pow(2).sum()
        lm = ((O - W @ Xf).abs() - A).pow(2).sum()
        return 1 if float(lp) <= float(lm) else -1
    # compare value distributions per channel (quantiles: mean, spread and skew of natural
    # photos' brightness), which is steadier than the mean image alone
    pub = _centred(public).transpose(0, 1).flatten(1)  # (C, P·H·W)
    xs = X.double().transpose(0, 1).flatten(1)
    q = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    qp, qx = pub.quantile(q, dim=1), xs.quantile(q, dim=1)
    d_plus = (qx - qp).abs().mean()
    d_minus = (-qx.flip(0) - qp).abs().mean()
    return 1 if float(d_plus) <= float(d_minus) else -1


# ----------------------------------------------------------------------------- membership
def grow_cliques(sim: torch.Tensor, size: int, *, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Carlini et al.'s step 2, vectorised over seeds: from every encoding (row of ``sim``,
    ``(M, M)``) grow a set by repeatedly adding the encoding with the largest summed similarity
    to the set, ``size`` members in all. ``allowed`` ``(S, M)`` (optional) restricts what seed
    row ``s`` may add (e.g. encodings whose label shares the seed's class); then ``S`` seeds are
    given by the first column of the returned index matrix being ``seeds``. Returns ``(S, size)``
    member indices in order of addition.

    >>> s = torch.eye(4) + torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0.]])
    >>> grow_cliques(s, 2).tolist()
    [[0, 1], [1, 0], [2, 3], [3, 2]]
    """
    m = sim.shape[0]
    if allowed is None:
        seeds = torch.arange(m)
        allowed = torch.ones(m, m, dtype=torch.bool)
    else:
        seeds = allowed.float().argmax(1) if allowed.shape[0] != m else torch.arange(m)
    return _grow(sim, seeds, allowed, size)


def _grow(sim: torch.Tensor, seeds: torch.Tensor, allowed: torch.Tensor, size: int) -> torch.Tensor:
    s_n = len(seeds)
    size = int(min(size, sim.shape[0]))
    out = torch.empty(s_n, size, dtype=torch.int64)
    out[:, 0] = seeds
    taken = torch.zeros(s_n, sim.shape[0], dtype=torch.bool)
    rows = torch.arange(s_n)
    taken[rows, seeds] = True
    score = sim[seeds].clone()
    for j in range(1, size):  # growth steps (all seeds at once)
        masked = torch.where(taken | ~allowed, torch.full_like(score, -torch.inf), score)
        nxt = masked.argmax(1)
        out[:, j] = nxt
        taken[rows, nxt] = True
        score += sim[nxt]
    return out


def find_membership(abs_enc: torch.Tensor, targets: torch.Tensor, n_private: int, k_private: int, *,
                    refine: int = 3, radius: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Which private images each encoding mixes (the attack's steps 1–4), from ``|e|`` and the
    mixed labels ``targets`` ``(M, K)`` only.

    1. Similarity: correlation of :func:`highpass_features` (the paper trains a network to
       say whether two encodings share an image; this is its untrained stand-in).
    2. Cliques: for every encoding and every class in its label, grow a set of the
       ``size = M·k_private/n_private`` most similar encodings whose label has that class
       (:func:`grow_cliques`); keep ``n_private`` dense ones, densest core (first quarter)
       first, skipping those whose core's mean feature correlates with a kept one's above
       0.5 (relaxed step by step if too few remain) — each is one private image, its class
       the clique's class.
    3. Matching: prototype = mean feature of a clique; each encoding is assigned to its
       ``k_private`` most correlated prototypes among those whose class its label holds;
       prototypes are re-estimated from the assigned encodings ``refine`` times (the
       paper's second graph and bipartite matching, steps 3–4).

    Returns ``(members (M, k_private), classes (n_private,))``.
    """
    f = highpass_features(abs_enc, radius=radius)
    M = f.shape[0]
    t = torch.as_tensor(targets, dtype=torch.float64)
    if t.dim() != 2 or t.shape[0] != M:
        raise ValueError(f"targets must be (M={M}, K) mixed labels, got {tuple(t.shape)}")
    if not 1 <= int(n_private) <= M or not 1 <= int(k_private) <= n_private:
        raise ValueError(f"need 1 <= k_private <= n_private <= M, got k_private={k_private}, n_private={n_private}, M={M}")
    sim = f @ f.T
    sim.fill_diagonal_(0)
    has = t > 1e-9  # (M, K) classes present in each label
    size = max(2, int(round(M * k_private / n_private)))
    seed_enc, seed_cls = has.nonzero(as_tuple=True)
    allowed = has[:, seed_cls].T  # (S, M): may add encodings whose label holds the seed's class
    cliques = _grow(sim, seed_enc, allowed, size)
    core = cliques[:, : max(2, size // 4)]  # the first members added are the most reliable
    dens = sim[core.unsqueeze(2), core.unsqueeze(1)].mean((1, 2))
    cp = f[core].mean(1)
    cp = cp - cp.mean(1, keepdim=True)
    cp = cp / cp.norm(dim=1, keepdim=True).clamp_min(1e-12)
    chosen: list[int] = []
    for thr in (0.5, 0.6, 0.7, 0.8, 0.9, 2.0):  # distinct images first, then relax
        alive = torch.ones(len(cliques), dtype=torch.bool)
        for c in chosen:
            alive &= (cp @ cp[c]) < thr
        while len(chosen) < int(n_private) and bool(alive.any()):
            i = int(torch.where(alive, dens, torch.full_like(dens, -torch.inf)).argmax())
            chosen.append(i)
            alive &= (cp @ cp[i]) < thr
        if len(chosen) == int(n_private):
            break
    chosen = torch.tensor(chosen)
    classes = seed_cls[chosen]
    ok = has[:, classes]  # (M, N) label-compatible assignments
    proto = f[core[chosen]].mean(1)  # (N, D)
    members = None
    for _ in range(int(refine) + 1):
        score = f @ proto.T
        score = torch.where(ok, score, torch.full_like(score, -torch.inf))
        members = score.topk(int(k_private), dim=1).indices
        assign = torch.zeros(M, int(n_private), dtype=torch.float64)
        assign[torch.arange(M).unsqueeze(1), members] = 1.0
        cnt = assign.sum(0, keepdim=True).T.clamp_min(1)
        proto = (assign.T @ f) / cnt
    return members, classes


def reassign_members(abs_enc: torch.Tensor, targets: torch.Tensor, X: torch.Tensor, members: torch.Tensor,
                     classes: torch.Tensor, *, offset: torch.Tensor | None = None, sweeps: int = 2,
                     chunk: int = 64) -> torch.Tensor:
    """Refine the membership under the true forward model: slot by slot, replace each
    encoding's member by the label-compatible private image (reconstructions ``X``, signed)
    whose mixture ``|Σ λ x + O|`` (weights from the labels) fits ``|e|`` best. ``(M, k)``."""
    A = abs_enc.double().flatten(1)
    M, k = members.shape
    Xf = X.double().flatten(1)
    n = Xf.shape[0]
    O = torch.zeros_like(A) if offset is None else offset.double().reshape(A.shape)
    t = torch.as_tensor(targets, dtype=torch.float64)
    cls = torch.as_tensor(classes)
    members = members.clone()
    ok_cls = t[:, cls] > 1e-9  # (M, N) images whose class the label holds
    for _ in range(int(sweeps)):
        for j in range(k):  # one slot at a time, all encodings (in chunks) and candidates at once
            for lo in range(0, M, int(chunk)):
                sl = slice(lo, min(M, lo + int(chunk)))
                mem = members[sl]
                c = cls[mem]  # (m, k)
                others = [l for l in range(k) if l != j]
                pred = O[sl].unsqueeze(1).expand(-1, n, -1).clone()  # (m, N, D)
                for l in others:
                    cnt = sum((c[:, l] == c[:, q]).double() for q in others)  # (m,) same class among others
                    cnt = cnt.unsqueeze(1) + (cls.unsqueeze(0) == c[:, l:l + 1]).double()  # (m, N) + candidate
                    wl = t[sl].gather(1, c[:, l:l + 1]) / cnt  # (m, N)
                    pred += wl.unsqueeze(2) * Xf[mem[:, l]].unsqueeze(1)
                same = sum((cls.unsqueeze(0) == c[:, q:q + 1]).double() for q in others)  # (m, N)
                wj = t[sl][:, cls] / (1 + same)  # (m, N)
                pred += wj.unsqueeze(2) * Xf.unsqueeze(0)
                err = (pred.abs() - A[sl].unsqueeze(1)).pow(2).mean(2)  # (m, N)
                bad = ~ok_cls[sl] | (mem[:, others].unsqueeze(2) == torch.arange(n).view(1, 1, n)).any(1)
                err = torch.where(bad, torch.full_like(err, torch.inf), err)
                members[sl, j] = err.argmin(1)
    return members


def weights_from_labels(targets: torch.Tensor, members: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Each member's mixing weight read off the mixed label: ``y_t[c] / (members of class c
    in t)`` — exact when the classes differ, an even split when they coincide (the paper's
    step 4 does the same). ``(M, k)`` float64.

    >>> weights_from_labels(torch.tensor([[0.5, 0.25, 0.0]]), torch.tensor([[0, 1, 2]]), torch.tensor([0, 0, 1])).tolist()
    [[0.25, 0.25, 0.25]]
    """
    t = torch.as_tensor(targets, dtype=torch.float64)
    cls = torch.as_tensor(classes)[members]  # (M, k) class of each member
    same = (cls.unsqueeze(2) == cls.unsqueeze(1)).sum(2).double()
    return t.gather(1, cls) / same


# ----------------------------------------------------------------------------- the whole attack
@dataclass
class Challenge:
    """An InstaHide Challenge data set (:func:`make_challenge`) with its ground truth."""

    encodings: torch.Tensor  #: (M, C, H, W) encodings in [−1, 1] (what the attacker sees)
    targets: torch.Tensor    #: (M, K) mixed labels (what the attacker sees)
    members: torch.Tensor    #: (M, k_private) private images in each encoding (ground truth)
    weights: torch.Tensor    #: (M, k) mixing weights, private slots first (ground truth)
    partners: torch.Tensor   #: (M, k) all partners (−1 − i: public image i), as InstaHideBatch.partners
    private: torch.Tensor    #: (N, C, H, W) the private images in [0, 1]
    labels: torch.Tensor     #: (N,) their classes
    public: torch.Tensor     #: (P, C, H, W) the public pool in [0, 1] (known to the attacker)
    k: int
    k_private: int


def make_challenge(private: torch.Tensor, labels: torch.Tensor, num_classes: int, *, k: int = 4,
                   k_private: int | None = None, public: torch.Tensor | None = None,
                   encodings_per_image: int = 40, seed: int = 0) -> Challenge:
    """Encode ``private`` images the InstaHide Challenge's way, scaled down: one InstaHide epoch
    after another (every image once as the protected image, partners re-drawn) until each image
    lies in about ``encodings_per_image`` encodings (``⌈T / k_private⌉`` epochs). Inside-dataset
    ``k=4``; cross-dataset ``k=6, k_private=2`` with a ``public`` pool (as the Challenge and the
    authors' ``train_cross.py``). Labels are mixed as the authors do (not renormalised)."""
    from ppml.encoders.instahide import InstaHide

    x = _flat_unit(private)
    y = torch.as_tensor(labels, dtype=torch.int64)
    if x.dim() != 4 or y.shape != (len(x),):
        raise ValueError(f"make_challenge: expected private (N, C, H, W) and labels (N,), got {tuple(x.shape)}, {tuple(y.shape)}")
    if int(encodings_per_image) < 1:
        raise ValueError(f"encodings_per_image must be >= 1, got {encodings_per_image}")
    ih = InstaHide(k=k, k_private=k_private, public=public)
    g = torch.Generator().manual_seed(int(seed))
    epochs = -(-int(encodings_per_image) // ih.k_private)
    bs = [ih.encode(x, g, y=y, num_classes=int(num_classes)) for _ in range(epochs)]
    pub = ih.public if len(ih.public) else torch.empty(0, *x.shape[1:])
    return Challenge(torch.cat([b.images for b in bs]), torch.cat([b.targets for b in bs]),
                     torch.cat([b.partners[:, :ih.k_private] for b in bs]), torch.cat([b.weights for b in bs]),
                     torch.cat([b.partners for b in bs]), x, y, pub, ih.k, ih.k_private)


def public_offset(targets: torch.Tensor, public: torch.Tensor, shape: tuple[int, ...], *, k: int = 6,
                  k_private: int = 2, noise_scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The public part of each mixture in the cross-dataset mode, as the attacker models it:
    its known mean, the public share ``s_t = 1 − Σ y_t`` (mixed labels are not renormalised, so
    they reveal it) times the mean centred public image, and its variance
    ``noise_scale · s_t² · E[Σλ_pub²/s²] · Var(public pixel)`` (the expectation over the
    scheme's own weight rule, for the ``k − k_private`` public slots). Returns
    ``(offset (M, *shape), variance (M, *shape))`` float64, or zeros and ``None`` in the
    inside-dataset mode (labels summing to 1)."""
    from ppml.encoders.instahide import InstaHide

    share = (1 - torch.as_tensor(targets, dtype=torch.float64).sum(1)).clamp_min(0)
    if len(public) == 0 or float(share.max()) < 1e-6 or k_private >= k:
        return torch.zeros(len(share), *shape, dtype=torch.float64), None
    pub = _centred(public)
    view = (-1, *([1] * len(shape)))
    w = InstaHide(k=k, k_private=k_private, public=public[:1]).sample_weights(4096, torch.Generator().manual_seed(0))
    wp = w[:, k_private:].double()
    c = float(((wp ** 2).sum(1) / wp.sum(1).clamp_min(1e-12) ** 2).mean())
    var = float(noise_scale) * c * share.pow(2).view(view) * pub.var(0, unbiased=False)
    return share.view(view) * pub.mean(0), var


@dataclass
class CarliniResult:
    """What :func:`carlini_attack` returns."""

    images: torch.Tensor   #: (N, C, H, W) reconstructions in [0, 1]
    signed: torch.Tensor   #: (N, C, H, W) centred estimates after the sign fixes
    members: torch.Tensor  #: (M, k_private) private images assigned to each encoding
    weights: torch.Tensor  #: (M, k_private) their weights
    classes: torch.Tensor  #: (N,) class of each reconstruction
    flips: torch.Tensor    #: (C, H, W) per-position signs applied (× the global sign)
    residual: torch.Tensor  #: (C, H, W) misfit per pixel of the phase retrieval


def carlini_attack(*, encodings: torch.Tensor, targets: torch.Tensor, n_private: int, k_private: int,
                   public: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0), centre: bool = False,
                   members: torch.Tensor | None = None, weights: torch.Tensor | None = None,
                   classes: torch.Tensor | None = None, k: int | None = None, restarts: int = 16,
                   iters: int = 40, robust: int = 0, rounds: int = 0, seed: int = 0) -> CarliniResult:
    """The attack on InstaHide after Carlini et al. (2021), on the true forward model.

    From the encodings ``(M, C, H, W)`` (sent in ``value_range``; ``centre`` as in
    :func:`abs_features`), the mixed labels ``targets`` ``(M, K)``, the number of private
    images and the public pool: absolute values → membership (:func:`find_membership`, or the
    given ``members``/``classes``: the oracle) → weights from the labels
    (:func:`weights_from_labels`, or the given ``weights``) → signed phase retrieval with the
    public share as a known offset (:func:`reconstruct_signed`, :func:`public_offset`) → one
    sign per pixel position (:func:`align_pixel_signs`) → the global sign (:func:`global_sign`).
    """
    check_finite(check_images(encodings, "encodings", "carlini_attack", value_range=None), "encodings",
                 "carlini_attack")
    t = torch.as_tensor(targets, dtype=torch.float64)
    if t.dim() != 2 or t.shape[0] != encodings.shape[0]:
        raise ShapeError(f"carlini_attack: targets must be (M={encodings.shape[0]}, K), got {tuple(t.shape)}")
    a = abs_features(encodings.cpu(), value_range=value_range, centre=centre).double()
    k = int(k_private if k is None else k)
    oracle = members is not None
    if members is None:
        members, classes = find_membership(a, t, n_private, k_private)
    elif classes is None and weights is None:
        raise ValueError("carlini_attack: with members= give classes= (to read weights off labels) or weights=")
    members = torch.as_tensor(members, dtype=torch.int64)
    if weights is None:
        weights = weights_from_labels(t, members, classes)
    weights = torch.as_tensor(weights, dtype=torch.float64)[:, : members.shape[1]]
    if classes is None:
        classes = torch.full((int(n_private),), -1, dtype=torch.int64)
    off, var = public_offset(t, public, tuple(a.shape[1:]), k=k, k_private=k_private)
    W = mixing_matrix(members, weights, n_private)
    X, res = reconstruct_signed(a, W, offset=off, noise_var=var, restarts=restarts, iters=iters, seed=seed)
    for _ in range(int(robust) if not oracle else 0):
        # down-weight encodings the fit explains badly (mostly wrong memberships): scaling row t
        # of W, |e| and O by √ω_t keeps the model |W X + O| = |e| and weights its misfit by ω_t
        fit = ((W @ X.flatten(1) + off.flatten(1)).abs() - a.flatten(1)).pow(2).mean(1)
        om = (fit.median() / fit.clamp_min(1e-12)).clamp(max=1.0).sqrt()
        view = (-1, *([1] * (a.dim() - 1)))
        X, res = reconstruct_signed(a * om.view(view), W * om[:, None], offset=off * om.view(view),
                                    noise_var=None if var is None else var * om.view(view) ** 2,
                                    restarts=restarts, iters=iters, seed=seed)
    for _ in range(int(rounds) if oracle is False else 0):  # membership ↔ reconstruction
        members = reassign_members(a, t, X, members, classes, offset=off)
        weights = weights_from_labels(t, members, classes)
        W = mixing_matrix(members, weights, n_private)
        X, res = reconstruct_signed(a, W, offset=off, noise_var=var, restarts=restarts, iters=iters, seed=seed)
    f = align_pixel_signs(X)
    X = X * f
    s = global_sign(X, public, mix=W, abs_enc=a, offset=off)
    X = X * s
    img = ((X + 1) / 2).clamp(0, 1).float()
    return CarliniResult(img, X.float(), members, weights, torch.as_tensor(classes), (f * s).float(), res.float())


def sign_accuracy(signed: torch.Tensor, private: torch.Tensor) -> float:
    """Share of pixel positions whose recovered sign is right: ``⟨X̂_d, x̃_d⟩ > 0`` over the
    images, ``x̃ = 2x − 1`` the centred originals (``private`` uint8 or [0, 1])."""
    return float(((signed.double() * _centred(private)).sum(0) > 0).double().mean())


def challenge_scores(challenge: Challenge, result: CarliniResult) -> dict:
    """Scores of a reconstruction, per image and the InstaHide Challenge's way.

    - ``per_image_ssim`` ``(N,)``: SSIM of each original with the reconstruction matched to it
      one-to-one (Hungarian, maximal total SSIM: the evaluation, not the attacker, knows the
      originals); ``mean_ssim`` its mean, ``frac_above_0.5``.
    - ``max_ssim`` / ``challenge_mean_ssim``: the Challenge's metrics. Each encoding is
      "decrypted" to the reconstruction of the private image the attack gave the largest
      weight in it; score = max (resp. mean) SSIM of that decryption with the encoding's true
      private images, averaged over the encodings.
    - ``sign_accuracy`` (with the matching), ``floor``: SSIM of each original with the mean
      public image (what an attacker gets without the encodings).
    """
    from scipy.optimize import linear_sum_assignment

    from ppml import metrics

    x = challenge.private
    n = len(x)
    rec = result.images
    # SSIM of every original with every reconstruction: (N, N)
    ii, jj = torch.meshgrid(torch.arange(n), torch.arange(len(rec)), indexing="ij")
    S = metrics.ssim(x[ii.flatten()], rec[jj.flatten()]).double().view(n, len(rec))
    rows, cols = linear_sum_assignment(-S.numpy())
    match = torch.as_tensor(cols)[torch.as_tensor(rows).argsort()]
    per = S[torch.arange(n), match]
    best = result.weights.argmax(1)
    dec = result.members.gather(1, best[:, None]).squeeze(1)  # reconstruction index per encoding
    sc = S.T[dec]  # (M, N): SSIM of each decryption with every original
    true = sc.gather(1, challenge.members)
    pubmean = challenge.public.mean(0, keepdim=True).expand_as(x) if len(challenge.public) else None
    floor = float(metrics.ssim(x, pubmean).mean()) if pubmean is not None else float("nan")
    return {"per_image_ssim": per.float(), "mean_ssim": float(per.mean()), "frac_above_0.5": float((per > 0.5).double().mean()),
            "max_ssim": float(true.max(1).values.mean()), "challenge_mean_ssim": float(true.mean(1).mean()),
            "sign_accuracy": sign_accuracy(result.signed[match], x), "floor": floor, "match": match}


#: Default data of :func:`attack_report`: private photos labelled by their source photograph,
#: public photos of other scenes (ppml.datasets.PHOTO_SOURCES).
PRIVATE_SOURCES = ("astronaut", "chelsea", "coffee", "rocket")
PUBLIC_SOURCES = ("china", "flower", "stereo_motorcycle")


def labelled_photo_crops(n: int, size: int = 32, seed: int = 0, *,
                         sources: tuple[str, ...] = PRIVATE_SOURCES) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` real photo crops labelled by their source photograph (``n // len(sources)`` or
    one more per source), uint8 ``(n, 3, size, size)`` and labels ``(n,)``."""
    from ppml.datasets import photo_crops

    per = [n // len(sources) + (i < n % len(sources)) for i in range(len(sources))]
    x = torch.cat([photo_crops(m, size, seed=int(seed) * 1000 + 10 + i, sources=[s])
                   for i, (m, s) in enumerate(zip(per, sources))])
    return x, torch.arange(len(sources)).repeat_interleave(torch.tensor(per))


def instahide_challenge(private: torch.Tensor, labels: torch.Tensor, public: torch.Tensor, *, mode: str = "inside",
                        num_classes: int | None = None, encodings_per_image: int = 40, restarts: int | None = None,
                        seed: int = 0) -> dict:
    """Build a scaled-down InstaHide Challenge from ``private`` images (classes ``labels``) and
    attack it twice: with the true membership and weights (the oracle) and for real
    (membership found, weights from the mixed labels). ``mode``: ``"inside"`` (k = 4, private
    partners) or ``"cross"`` (the Challenge's k = 6: 2 private + 4 from ``public``).

    Returns a dict: ``mean_ssim``, ``max_ssim`` (the Challenge's way), ``challenge_mean_ssim``,
    ``frac_above_0.5``, ``sign_accuracy``, ``per_image_ssim`` (the full attack);
    ``oracle_mean_ssim``, ``oracle_frac_above_0.5``, ``oracle_sign_accuracy``,
    ``oracle_per_image_ssim``; ``floor`` (SSIM of the mean public image); ``images`` (the full
    attack's reconstructions matched to ``originals``), ``oracle_images``, ``originals``
    (float [0, 1]); ``cpu_seconds``; ``n_encodings``.
    """
    import time

    if mode not in ("inside", "cross"):
        raise ValueError(f"mode must be 'inside' or 'cross', got {mode!r}")
    t0 = time.process_time()
    nc = int(torch.as_tensor(labels).max()) + 1 if num_classes is None else int(num_classes)
    kw = dict(k=4) if mode == "inside" else dict(k=6, k_private=2, public=public)
    ch = make_challenge(private, labels, nc, encodings_per_image=encodings_per_image, seed=seed, **kw)
    ch.public = _flat_unit(public)
    n = len(ch.private)
    r_ = (16 if mode == "inside" else 2) if restarts is None else int(restarts)
    common = dict(public=public, k=ch.k, restarts=r_, seed=seed)
    oracle = carlini_attack(encodings=ch.encodings, targets=ch.targets, n_private=n, k_private=ch.k_private,
                            members=ch.members,
                            weights=ch.weights[:, :ch.k_private], classes=ch.labels, **common)
    full = carlini_attack(encodings=ch.encodings, targets=ch.targets, n_private=n, k_private=ch.k_private, **common)
    so, sf = challenge_scores(ch, oracle), challenge_scores(ch, full)
    out = {k: v for k, v in sf.items() if k != "match"}
    out.update({"oracle_mean_ssim": so["mean_ssim"], "oracle_frac_above_0.5": so["frac_above_0.5"],
                "oracle_sign_accuracy": so["sign_accuracy"], "oracle_per_image_ssim": so["per_image_ssim"],
                "images": full.images[sf["match"]], "oracle_images": oracle.images[so["match"]],
                "originals": ch.private, "n_encodings": len(ch.encodings), "mode": mode,
                "cpu_seconds": time.process_time() - t0})
    return out


def scramblemix_challenge(private: torch.Tensor, labels: torch.Tensor, public: torch.Tensor, scramblemix: nn.Module, *,
                          encodings_per_image: int = 40, adaptive: bool = False, seed: int = 0) -> dict:
    """The same pipeline on ScrambleMix views (``encodings_per_image`` views per image, labels
    not mixed, so one member of weight 1 per view): as sent (values in [0, 1]) or
    ``adaptive`` (centred first: PE's negation becomes a sign flip the attack removes).
    Returns ``mean_ssim`` (per image, matched), ``max_ssim``, ``per_image_ssim``, ``images``
    (matched to the originals), ``floor``, ``cpu_seconds``."""
    import time

    t0 = time.process_time()
    x = _flat_unit(private)
    y = torch.as_tensor(labels, dtype=torch.int64)
    n, T = len(x), int(encodings_per_image)
    g = torch.Generator().manual_seed(int(seed))
    enc = scramblemix.views(x, g, num_views=T).transpose(0, 1).reshape(n * T, *x.shape[1:])
    nc = int(y.max()) + 1
    members = torch.arange(n).repeat(T).unsqueeze(1)
    targets = F.one_hot(y[members[:, 0]], nc).double()
    ch = Challenge(enc, targets, members, torch.ones(n * T, 1), members, x, y, _flat_unit(public), 1, 1)
    r = carlini_attack(encodings=enc, targets=targets, n_private=n, k_private=1, public=public,
                       value_range=(0.0, 1.0), centre=bool(adaptive), restarts=2, seed=seed)
    sc = challenge_scores(ch, r)
    return {"mean_ssim": sc["mean_ssim"], "max_ssim": sc["max_ssim"], "frac_above_0.5": sc["frac_above_0.5"],
            "per_image_ssim": sc["per_image_ssim"], "images": r.images[sc["match"]], "floor": sc["floor"],
            "cpu_seconds": time.process_time() - t0}


def attack_report(scramblemix: nn.Module | None = None, *, n_private: int = 32, encodings_per_image: int = 40,
                  size: int = 32, n_public: int = 256, modes: tuple[str, ...] = ("inside", "cross"),
                  primary: str = "inside", private: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                  public: torch.Tensor | None = None, seed: int = 0) -> dict:
    """Notebook 01's security experiment in one call: the attack on InstaHide (each of
    ``modes``, :func:`instahide_challenge`) and on ``scramblemix`` views as sent and adaptive
    (:func:`scramblemix_challenge`), on real photo crops labelled by source photograph
    (private: :data:`PRIVATE_SOURCES`; public: other photographs, :data:`PUBLIC_SOURCES`) or
    the given ``private``/``labels``/``public``.

    Returns ``{"instahide": {mean_ssim, max_ssim, oracle_mean_ssim, sign_accuracy, floor, …}
    of the ``primary`` mode, "modes": {mode: …}, "scramblemix": {mean_ssim, …} (as sent),
    "scramblemix_adaptive": {…}, "floor": …}``; every entry also holds its images for a figure
    (:func:`ppml.plots.attack_figure`).
    """
    if private is None:
        private, labels = labelled_photo_crops(int(n_private), int(size), seed=seed)
    elif labels is None:
        raise ValueError("attack_report: private= needs labels= (the attack reads weights off mixed labels)")
    if public is None:
        from ppml.datasets import photo_crops
        public = photo_crops(int(n_public), int(size), seed=int(seed) * 1000 + 1, sources=list(PUBLIC_SOURCES))
    if primary not in modes:
        raise ValueError(f"primary={primary!r} must be one of modes={modes}")
    res = {m: instahide_challenge(private, labels, public, mode=m, encodings_per_image=encodings_per_image, seed=seed)
           for m in modes}
    out = {"instahide": res[primary], "modes": res, "floor": res[primary]["floor"]}
    if scramblemix is not None:
        out["scramblemix"] = scramblemix_challenge(private, labels, public, scramblemix,
                                                   encodings_per_image=encodings_per_image, seed=seed)
        out["scramblemix_adaptive"] = scramblemix_challenge(private, labels, public, scramblemix, adaptive=True,
                                                            encodings_per_image=encodings_per_image, seed=seed)
    return out
