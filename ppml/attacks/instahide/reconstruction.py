"""Carlini et al.'s reconstruction on the true forward model: high-pass features, the mixing
matrix, signed least-squares reconstruction (:func:`reconstruct_signed`), the shared per-pixel
sign (:func:`align_pixel_signs`) and the global sign (:func:`global_sign`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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
