"""Piece compatibility: Gallagher's Mahalanobis gradient compatibility (MGC) as a matrix product."""

from __future__ import annotations

import torch


# --------------------------------------------------------------------------------------------
# Compatibility: Gallagher's MGC as a matrix product
# --------------------------------------------------------------------------------------------

def _edge_features(x: torch.Tensor, reg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-role and right-role feature vectors of pieces ``x`` ``(K, C, B, B)`` (float64) with
    ``left[i] · right[j]`` = MGC dissimilarity of the seam "i left of j" (both halves)."""
    k, c, b, _ = x.shape
    v = x[..., :, b - 1].transpose(1, 2)           # (K, B, C): i's last column, row p
    w = x[..., :, 0].transpose(1, 2)               # j's first column
    g_l = v - x[..., :, b - 2].transpose(1, 2)     # gradients into the seam from the left
    g_r = w - x[..., :, 1].transpose(1, 2)         # ... and from the right (pointing left)
    eye = torch.eye(c, dtype=x.dtype)

    def stats(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = g.mean(1)
        d = g - mu[:, None]
        cov = d.transpose(1, 2) @ d / max(b - 1, 1) + reg * eye
        return mu, torch.linalg.inv(cov)

    mu_l, m_l = stats(g_l)
    mu_r, m_r = stats(g_r)
    cl = v + mu_l[:, None]                          # predicted j column: v + mean gradient
    mcl = cl @ m_l
    cr = w + mu_r[:, None]
    mcr = cr @ m_r
    ones = torch.ones(k, 1, dtype=x.dtype)
    left = torch.cat([m_l.reshape(k, -1), -2 * mcl.reshape(k, -1), (mcl * cl).sum((1, 2))[:, None],
                      (v.transpose(1, 2) @ v).reshape(k, -1), v.reshape(k, -1), ones], 1)
    right = torch.cat([(w.transpose(1, 2) @ w).reshape(k, -1), w.reshape(k, -1), ones,
                       m_r.reshape(k, -1), -2 * mcr.reshape(k, -1), (mcr * cr).sum((1, 2))[:, None]], 1)
    return left, right


def mgc_dissimilarity(left: torch.Tensor, right: torch.Tensor, *, reg: float = 1.0) -> torch.Tensor:
    """MGC dissimilarity ``D[i, j]`` of every left piece ``i`` placed directly left of every
    right piece ``j`` (Gallagher 2012, symmetric form ``D_LR(i, j) + D_RL(j, i)``), in pixel
    units of [0, 255]; pieces ``(K, C, B, B)`` (uint8, or float in [0, 1]), ``B ≥ 2``.

    >>> from ppml.attacks.jigsaw import smooth_test_image, to_pieces
    >>> x = smooth_test_image(16, seed=0)[None]
    >>> p = to_pieces(x, 8)[0]            # 2x2 pieces: 0 1 / 2 3
    >>> d = mgc_dissimilarity(p, p)
    >>> int(d[0].argmin()), int(d[2].argmin())   # true right neighbours are the most compatible
    (1, 3)
    """
    for name, t in (("left", left), ("right", right)):
        if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[-1] != t.shape[-2] or t.shape[-1] < 2:
            raise ValueError(f"mgc_dissimilarity: {name} must be pieces (K, C, B, B) with B >= 2")
    if left.shape[1:] != right.shape[1:]:
        raise ValueError(f"mgc_dissimilarity: left pieces {tuple(left.shape[1:])} and right pieces "
                         f"{tuple(right.shape[1:])} differ in shape")
    lf, _ = _edge_features(_to_work(left), reg)
    _, rf = _edge_features(_to_work(right), reg)
    return lf @ rf.T


def _to_work(x: torch.Tensor) -> torch.Tensor:
    """Centred float64 in pixel units, ``v − 127.5`` (so a negative–positive transform negates);
    uint8 images, or floats in [0, 1]."""
    x = x.to(torch.float64) if x.dtype == torch.uint8 else x.to(torch.float64) * 255.0
    return x - 127.5


def _invariant(x: torch.Tensor) -> torch.Tensor:
    """Channel-order-invariant features of centred pieces ``(K, C, B, B)``: the channel mean
    ``Y`` (negated by a negative–positive transform) and the chroma ``‖c − Y‖`` (unchanged)."""
    y = x.mean(1, keepdim=True)
    if x.shape[1] == 1:
        return y
    chroma = (x - y).pow(2).sum(1, keepdim=True).sqrt()
    return torch.cat([y, chroma], 1)
