"""Scores of a jigsaw solution against the truth: direct and neighbour comparison, largest correct
component, colour, aligned reconstruction (:func:`score`), and a smooth test image.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from ppml._checks import ShapeError
from .pieces import _apply_d, _COMP8, _INV8, _LIN8, _colour_tables, Arrangement, _negate, assemble


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------

def _check_pair(solution: Arrangement, truth: Arrangement, who: str) -> None:
    if not isinstance(solution, Arrangement) or not isinstance(truth, Arrangement):
        raise TypeError(f"{who}: solution and truth must be Arrangement objects, got {type(solution).__name__} "
                        f"and {type(truth).__name__}; build them with solve() and true_arrangement()")
    if solution.piece.shape != truth.piece.shape:
        if truth.grid == solution.grid and len(truth) == 1:
            return
        raise ShapeError(f"{who}: solution {solution.piece.shape} and truth {truth.piece.shape} differ in "
                         "shape (N, gh, gw)")


def _truth_for(truth: Arrangement, n: int) -> Arrangement:
    if len(truth) == n:
        return truth
    return Arrangement(*(np.repeat(getattr(truth, f), n, 0) for f in ("piece", "dihedral", "negpos", "channel")))


def _global_direct(solution: Arrangement, truth: Arrangement) -> tuple[np.ndarray, np.ndarray]:
    """Direct comparison per image, maximised over whole-image dihedral transforms that keep
    the grid's shape, and the maximising code (the smallest among ties)."""
    n = len(solution)
    gh, gw = solution.grid
    best = np.full(n, -1.0)
    arg = np.zeros(n, np.int64)
    tp, td = torch.as_tensor(truth.piece), torch.as_tensor(truth.dihedral)
    for code in range(8):
        p = _apply_d(tp, code).numpy()
        if p.shape[1:] != (gh, gw):
            continue
        d = _COMP8[code, _apply_d(td, code).numpy()]
        frac = ((solution.piece == p) & (solution.dihedral == d)).mean((1, 2))
        better = frac > best
        best[better], arg[better] = frac[better], code
    return best, arg


def direct_comparison(solution: Arrangement, truth: Arrangement) -> np.ndarray:
    """Fraction of pieces at the right cell with the right orientation, per image, up to a
    whole-image rotation/flip (see the module docstring).

    >>> t = Arrangement.identity(1, (2, 2))
    >>> s = Arrangement(np.array([[[1, 0], [2, 3]]]), t.dihedral, t.negpos, t.channel)  # one swap
    >>> direct_comparison(s, t).tolist()
    [0.5]
    """
    _check_pair(solution, truth, "direct_comparison")
    return _global_direct(solution, _truth_for(truth, len(solution)))[0]


def _correct_pairs(solution: Arrangement, truth: Arrangement) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For every image: the original's adjacent piece pairs (a, b) and whether each is
    reproduced (same relative cell and relative orientation) in the solution."""
    out = []
    gh, gw = truth.grid
    for s, t in zip(range(len(solution)), range(len(truth))):
        p = gh * gw
        ps, pt = np.zeros((p, 2), np.int64), np.zeros((p, 2), np.int64)
        ds, dt = np.zeros(p, np.int64), np.zeros(p, np.int64)
        rr, cc = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
        sg = solution.piece[s].reshape(-1)
        ps[sg] = np.stack([rr.reshape(-1), cc.reshape(-1)], 1)
        ds[sg] = solution.dihedral[s].reshape(-1)
        tg = truth.piece[t]
        pt[tg.reshape(-1)] = np.stack([rr.reshape(-1), cc.reshape(-1)], 1)
        dt[tg.reshape(-1)] = truth.dihedral[t].reshape(-1)
        a = np.concatenate([tg[:, :-1].reshape(-1), tg[:-1, :].reshape(-1)])
        b = np.concatenate([tg[:, 1:].reshape(-1), tg[1:, :].reshape(-1)])
        delta = np.concatenate([np.tile([0, 1], ((gw - 1) * gh, 1)),
                                np.tile([1, 0], ((gh - 1) * gw, 1))]).reshape(-1, 2)
        frame = _COMP8[ds[a], _INV8[dt[a]]]          # truth -> solution frame implied by piece a
        ok = (ds[b] == _COMP8[frame, dt[b]]) & ((ps[b] - ps[a]) == np.einsum("kij,kj->ki", _LIN8[frame], delta)).all(1)
        out.append((a, b, ok))
    return out


def neighbour_comparison(solution: Arrangement, truth: Arrangement) -> np.ndarray:
    """Fraction of the original image's adjacent pairs that the solution keeps adjacent with the
    same relative position and orientation, per image (invariant to whole-image transforms).

    >>> t = Arrangement.identity(1, (2, 2))
    >>> s = Arrangement(np.array([[[1, 0], [2, 3]]]), t.dihedral, t.negpos, t.channel)
    >>> neighbour_comparison(s, t).tolist()   # of 4 adjacencies only 2—3 survives the swap
    [0.25]
    """
    _check_pair(solution, truth, "neighbour_comparison")
    truth = _truth_for(truth, len(solution))
    return np.array([ok.mean() if len(ok) else 1.0 for _, _, ok in _correct_pairs(solution, truth)])


def largest_component(solution: Arrangement, truth: Arrangement) -> np.ndarray:
    """Size of the largest set of pieces joined by correct adjacencies, over all pieces.

    >>> t = Arrangement.identity(1, (2, 2))
    >>> s = Arrangement(np.array([[[1, 0], [2, 3]]]), t.dihedral, t.negpos, t.channel)
    >>> largest_component(s, t).tolist()
    [0.5]
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    _check_pair(solution, truth, "largest_component")
    truth = _truth_for(truth, len(solution))
    p = truth.grid[0] * truth.grid[1]
    out = []
    for a, b, ok in _correct_pairs(solution, truth):
        m = coo_matrix((np.ones(int(ok.sum())), (a[ok], b[ok])), shape=(p, p))
        _, lab = connected_components(m, directed=False)
        out.append(np.bincount(lab).max() / p)
    return np.array(out)


def _colour_score(solution: Arrangement, truth: Arrangement, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of pieces with the right colour label, maximised over the global colour
    transforms; evaluated per piece (wherever the solution put it)."""
    perms, comp, _, labels = _colour_tables(channels)
    npm = len(perms)
    n = len(solution)
    p = solution.grid[0] * solution.grid[1]
    best, arg = np.full(n, -1.0), np.zeros(n, np.int64)
    for k in range(n):
        ls, lt = np.zeros(p, np.int64), np.zeros(p, np.int64)
        ls[solution.piece[k].reshape(-1)] = (solution.channel[k] + npm * solution.negpos[k]).reshape(-1)
        lt[truth.piece[k].reshape(-1)] = (truth.channel[k] + npm * truth.negpos[k]).reshape(-1)
        for c in labels:
            frac = float((comp[c, lt] == ls).mean())
            if frac > best[k]:
                best[k], arg[k] = frac, c
    return best, arg


def _apply_colour(x: torch.Tensor, label: int) -> torch.Tensor:
    perms = np.array(list(itertools.permutations(range(x.shape[0]))), np.int64)
    npm = len(perms)
    y = _negate(x) if label >= npm else x
    return y[torch.as_tensor(perms[label % npm])]


def aligned_reconstruction(encrypted: torch.Tensor, solution: Arrangement, truth: Arrangement,
                           block_size: int) -> torch.Tensor:
    """The assembled solution brought back by the whole-image geometric and colour transforms
    that best match the truth (a human picks them at a glance among the 8 × 12 variants)."""
    truth = _truth_for(truth, len(solution))
    img = assemble(encrypted, solution, block_size)
    _, g = _global_direct(solution, truth)
    _, col = _colour_score(solution, truth, encrypted.shape[1])
    inv_col = _colour_tables(encrypted.shape[1])[2]
    out = []
    for k in range(img.shape[0]):
        im = _apply_d(img[k], int(_INV8[g[k]]))
        out.append(_apply_colour(im, int(inv_col[col[k]])))
    return torch.stack(out)


def score(solution: Arrangement, truth: Arrangement, *, original: torch.Tensor | None = None,
          encrypted: torch.Tensor | None = None, block_size: int | None = None,
          per_image: bool = False) -> dict[str, Any]:
    """All scores of a solution (means over images, or arrays with ``per_image``): ``direct``,
    ``neighbour``, ``largest_component``, ``colour`` and, given ``original``, ``encrypted``
    and ``block_size``, ``ssim`` of the aligned reconstruction against ``original``.

    >>> t = Arrangement.identity(1, (2, 2))
    >>> {k: round(float(v), 3) for k, v in score(t, t).items()}
    {'direct': 1.0, 'neighbour': 1.0, 'largest_component': 1.0, 'colour': 1.0}
    """
    _check_pair(solution, truth, "score")
    truth = _truth_for(truth, len(solution))
    channels = 3 if encrypted is None else encrypted.shape[1]
    res: dict[str, Any] = {"direct": direct_comparison(solution, truth),
                           "neighbour": neighbour_comparison(solution, truth),
                           "largest_component": largest_component(solution, truth),
                           "colour": _colour_score(solution, truth, channels)[0]}
    if original is not None:
        if encrypted is None or block_size is None:
            raise ValueError("score: SSIM needs encrypted= and block_size= as well as original=")
        from ppml.metrics import ssim
        rec = aligned_reconstruction(encrypted, solution, truth, block_size)
        win = min(7, min(original.shape[-2:]) - (1 - min(original.shape[-2:]) % 2))
        res["ssim"] = ssim(_float01(rec), _float01(original), win_size=win).numpy()
    if per_image:
        return res
    return {k: float(np.mean(v)) for k, v in res.items()}


def _float01(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)


def smooth_test_image(size: int = 32, *, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """A smooth, colourful, asymmetric synthetic image, uint8 ``(C, size, size)``: a sum of a
    few random low-frequency waves per channel (for tests and examples of the solver).

    >>> smooth_test_image(16, seed=0).shape
    torch.Size([3, 16, 16])
    """
    g = torch.Generator().manual_seed(int(seed))
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size, dtype=torch.float64),
                            torch.linspace(0, 1, size, dtype=torch.float64), indexing="ij")
    out = torch.zeros(channels, size, size, dtype=torch.float64)
    for c in range(channels):
        for _ in range(3):
            f = 0.5 + 2.0 * torch.rand(2, generator=g, dtype=torch.float64)
            ph = 6.283 * torch.rand(1, generator=g, dtype=torch.float64)
            out[c] += torch.sin(6.283 * (f[0] * yy + f[1] * xx * (1 + yy)) + ph)
        out[c] += 1.5 * (torch.rand(1, generator=g, dtype=torch.float64) - 0.5) * (yy + 2 * xx)
    lo, hi = out.amin((1, 2), keepdim=True), out.amax((1, 2), keepdim=True)
    return (30 + 195 * (out - lo) / (hi - lo)).round().to(torch.uint8)
