"""LE-statistics attack: ciphertext-only key recovery for LE (this project's own attack).

**Not from the papers.** Paper 03 and Tanaka (2018) only attack LE with FR-, GAN- and
ITN-Attack; this attack was designed for this project (issue 12) to show what LE's *one key
for every block* gives away. The threat model is the one of :mod:`ppml.attacks.suite`: the
attacker holds the victim's encrypted images and their own **unpaired** plain images of a
similar distribution (no plain/cipher pairs, no key of the scheme).

LE (:mod:`ppml.ciphers.le`) maps a block's nibble vector ``p`` (length ``L = 2·B·B·C``,
``[low | high]``, (row, col, channel) order) to ``c[j] = p[perm[j]] ^ (15 if invert[j])``
with the same ``(perm, invert)`` in every block. So cipher position ``j`` of every block
carries plain position ``perm[j]``, possibly as ``15 − v``. What is implemented, exactly:

1. **Statistics** over all blocks of all images, for the victim's ciphertexts and the
   attacker's plain images: per position ``|μ − 7.5|``, ``σ``, ``|skew|`` and kurtosis (all
   unchanged by ``v → 15 − v``), and three ``L×L`` correlation matrices — within a block, with
   the block to the right and with the block below (the cross-block ones break the block's
   rotation / flip symmetry). Inversion only flips signs of correlations.
2. **Graph matching** of the ``|corr|`` matrices plus a unary cost on the per-position
   statistics (a quadratic assignment problem): Frank–Wolfe on doubly-stochastic matrices
   (FAQ-style indefinite relaxation) with a Hungarian step per iteration
   (:func:`scipy.optimize.linear_sum_assignment`), several restarts, then a 2-swap local
   search with vectorised swap gains. Done first on all ``L`` positions (which cipher
   positions are high nibbles), then again on the ``L/2`` high-nibble positions only.
3. **High-nibble inversions** from the signed correlations (leading eigenvector of the
   sign-agreement matrix, then single-flip local search); the one global sign left (a
   negative image is as smooth as the positive one) from the means and skewnesses against
   the attacker's images.
4. **Smoothness refinement of the high nibbles** on the victim's own images: a 2-swap local
   search minimising the squared differences of neighbouring decrypted high nibbles (same
   channel, within and across blocks) — a second QAP whose data come from the ciphertexts
   only, so distribution mismatch between attacker and victim cannot bias it.
5. **Low nibbles**, which carry little correlation signal: each low cipher position and its
   inversion bit are assigned to a pixel/channel by the smoothness of the decrypted 8-bit
   images — squared differences to the same-channel 4-neighbours, counted only where the
   two high nibbles differ by at most ``edge_step`` (across edges the squared jumps would
   dominate and reward low nibbles that blur the edge). Hungarian assignments against the
   previous round's neighbours from two starts (the attacker's mean low nibble given the
   high nibble, and a flat 7.5), each polished by a greedy local search (one inversion flip
   or one swap at a time, checked on the exact objective); the better start wins.
6. **Channel order**, which no smoothness sees: of the ``C!`` orders of the decrypted
   channels, the one whose channel means (scaled by the attacker's pixel variance) and
   3×3 channel correlations are closest to the attacker's images. Then decrypt with the
   recovered key. An *equivalent* key counts as a success: with identical channels (grey
   images stored as RGB) any channel order decrypts identically.

What the ciphertexts cannot tell, the attacker's images decide: the global sign (step 3)
and the channel order (step 6). Where the victims' brightness or colour statistics differ
from the attacker's (e.g. a bright or blue-sky set against darker, warmer photos), the images
come out negated or with channels swapped: every structure is recovered, but the images are
not bit-exact.

All statistics are batched numpy over images and blocks; only the FW iterations, restarts
and local-search moves loop (each move is one vectorised gain matrix over all pairs).
Applied blindly to ELE / EtC / PE it returns a "decryption" under the LE model, to be scored
like any other attack (:func:`le_stats_curve` gives SSIM against the number of victims).

>>> import torch
>>> from ppml.ciphers import cipher_for
>>> from ppml.datasets import photo_crops
>>> from ppml.keys import LEKey
>>> victims, attacker = photo_crops(60, seed=1), photo_crops(150, seed=2)
>>> le = cipher_for(LEKey.generate(image_size=32, block_size=4, seed=3))
>>> res = le_statistics_attack(train_plain=attacker, test_protected=le(victims), block_size=4, seed=0)
>>> bool((res.images == victims).flatten(1).all(1).float().mean() > 0.9)
True
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ppml._checks import ShapeError, check_images, check_int, check_positive_int
from ppml.ciphers import cipher_for
from ppml.keys import LEKey

__all__ = ["LEStatsResult", "le_statistics_attack", "le_stats_curve", "le_nibbles"]


@dataclass
class LEStatsResult:
    """What :func:`le_statistics_attack` recovers.

    ``key``: the recovered :class:`~ppml.keys.LEKey` (``perm``/``invert`` in the cipher's
    canonical form; it may differ from the victim's key where another key decrypts the same);
    ``images``: the victim's images decrypted with it (uint8, like the input);
    ``high``: the cipher positions judged to carry high nibbles; ``cpu_seconds``: process CPU
    time of the attack; ``diagnostics``: objective values and iteration counts.
    """

    key: LEKey
    images: torch.Tensor
    high: np.ndarray
    cpu_seconds: float
    diagnostics: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- input checks
def _check_inputs(test_protected: Any, train_plain: Any, block_size: Any, who: str) -> int:
    check_images(test_protected, "test_protected", who, dtype="uint8")
    check_images(train_plain, "train_plain", who, dtype="uint8")
    if test_protected.shape[1:] != train_plain.shape[1:]:
        raise ShapeError(f"{who}: test_protected {tuple(test_protected.shape)} and train_plain "
                         f"{tuple(train_plain.shape)} must share (C, H, W)")
    b = check_positive_int(block_size, "block_size", who)
    h, w = test_protected.shape[-2:]
    if h % b or w % b:
        raise ShapeError(f"{who}: image size {h}x{w} is not divisible by block size {b}: "
                         f"expected H and W to be multiples of {b}")
    if train_plain.shape[0] < 2:
        raise ShapeError(f"{who}: train_plain needs at least 2 images to estimate statistics, "
                         f"got {train_plain.shape[0]}")
    return b


# ----------------------------------------------------------------------------- nibbles
def le_nibbles(x: torch.Tensor, block_size: int) -> np.ndarray:
    """Nibble vectors of every block in LE's layout: uint8 ``(N, H/B, W/B, 2·B·B·C)``.

    Entry ``[..., j]`` is the low (``j < B·B·C``) or high nibble of the block's byte
    ``j mod B·B·C`` in (row, col, channel) order — the vector LE permutes.

    >>> x = torch.tensor([[[[0x1F, 0x2E], [0x3D, 0x4C]]]], dtype=torch.uint8)  # (1, 1, 2, 2)
    >>> le_nibbles(x, 2)[0, 0, 0].tolist()
    [15, 14, 13, 12, 1, 2, 3, 4]
    """
    n, c, h, w = x.shape
    b = block_size
    a = x.detach().cpu().numpy().reshape(n, c, h // b, b, w // b, b).transpose(0, 2, 4, 3, 5, 1)
    a = a.reshape(n, h // b, w // b, b * b * c)
    return np.concatenate([a & 15, a >> 4], axis=-1)


def _from_nibbles(nib: np.ndarray, c: int, b: int) -> np.ndarray:
    """Inverse of :func:`le_nibbles` for plain nibble vectors: uint8 ``(N, C, H, W)``."""
    n, gh, gw, length = nib.shape
    half = length // 2
    byte = (nib[..., :half] | (nib[..., half:] << 4)).astype(np.uint8)
    return byte.reshape(n, gh, gw, b, b, c).transpose(0, 5, 1, 3, 2, 4).reshape(n, c, gh * b, gw * b)


class _Stats:
    """Per-position statistics and the within / right / down correlation matrices."""

    def __init__(self, nib: np.ndarray) -> None:
        length = nib.shape[-1]
        # moments from the 16-bin histogram of every position (values are 0..15)
        flat = nib.reshape(-1, length).astype(np.int64)
        hist = np.bincount((flat + 16 * np.arange(length)).ravel(), minlength=16 * length)
        p = hist.reshape(length, 16) / len(flat)
        v = np.arange(16.0)
        self.mean = p @ v
        cen = v[None, :] - self.mean[:, None]
        var = (p * cen ** 2).sum(1)
        self.std = np.sqrt(var)
        ok = self.std > 1e-9
        safe = np.where(ok, self.std, np.inf)
        self.skew = (p * cen ** 3).sum(1) / safe ** 3
        kurt = np.where(ok, (p * cen ** 4).sum(1) / safe ** 4, 0.0)
        # invariant to v -> 15 - v: |mean - 7.5|, std, |skew|, kurtosis
        self.features = np.stack([np.abs(self.mean - 7.5), self.std, np.abs(self.skew), kurt], axis=1)
        # float32 products: correlations need ~1e-4, not float64's precision
        z = ((nib.astype(np.float32) - self.mean.astype(np.float32)) / safe.astype(np.float32))
        zf = z.reshape(-1, length)
        self.within = (zf.T @ zf).astype(np.float64) / len(zf)
        gh, gw = nib.shape[1], nib.shape[2]
        self.right = self._cross(z[:, :, :-1], z[:, :, 1:]) if gw > 1 else np.zeros((length, length))
        self.down = self._cross(z[:, :-1], z[:, 1:]) if gh > 1 else np.zeros((length, length))

    @staticmethod
    def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        return (a.T @ b).astype(np.float64) / len(a)

    def matrices(self, idx: np.ndarray, absolute: bool = True) -> list[np.ndarray]:
        out = []
        for m in (self.within, self.right, self.down):
            m = m[np.ix_(idx, idx)]
            out.append(np.abs(m) if absolute else m.copy())
        return out


# ----------------------------------------------------------------------------- QAP
def _standardise(ms: Sequence[np.ndarray], diag_zero: Sequence[bool]) -> list[np.ndarray]:
    out = []
    for m, dz in zip(ms, diag_zero):
        m = m.copy()
        if dz:
            np.fill_diagonal(m, 0.0)
        mask = ~np.eye(len(m), dtype=bool) if dz else np.ones_like(m, dtype=bool)
        mu, sd = m[mask].mean(), m[mask].std()
        m = (m - mu) / (sd if sd > 1e-12 else 1.0)
        if dz:
            np.fill_diagonal(m, 0.0)
        out.append(m)
    return out


def _objective(a: Sequence[np.ndarray], b: Sequence[np.ndarray], unary: np.ndarray, perm: np.ndarray) -> float:
    """``Σ_m Σ_jk A_m[j,k]·B_m[π j, π k] − Σ_j U[j, π j]`` (to be maximised)."""
    f = sum(float((am * bm[np.ix_(perm, perm)]).sum()) for am, bm in zip(a, b))
    return f - float(unary[np.arange(len(perm)), perm].sum())


def _frank_wolfe(a, b, unary, d: np.ndarray, iters: int) -> np.ndarray:
    """Maximise the relaxed objective over doubly-stochastic ``D`` (``D[j, a]``: cipher j ↔ plain a)."""
    for _ in range(iters):
        grad = sum(am @ d @ bm.T + am.T @ d @ bm for am, bm in zip(a, b)) - unary
        rows, cols = linear_sum_assignment(grad, maximize=True)
        q = np.zeros_like(d)
        q[rows, cols] = 1.0
        r = q - d
        lin = float((grad * r).sum())
        quad = sum(float((am * (r @ bm @ r.T)).sum()) for am, bm in zip(a, b))
        if quad < 0:
            t = min(max(-lin / (2 * quad), 0.0), 1.0)
        else:
            t = 1.0 if quad + lin > 0 else 0.0
        if t < 1e-6:
            break
        d = d + t * r
    return d


def _swap_gains(a, b, unary, perm: np.ndarray) -> np.ndarray:
    """Gain of the objective for swapping the plain positions of every cipher pair ``(r, s)``."""
    n = len(perm)
    gain = np.zeros((n, n))
    for am, bm in zip(a, b):
        bp = bm[np.ix_(perm, perm)]
        q, r = am @ bp.T, am.T @ bp
        qd, rd = np.diag(q), np.diag(r)
        full = q + q.T - qd[:, None] - qd[None, :] + r + r.T - rd[:, None] - rd[None, :]
        ad, bd = np.diag(am), np.diag(bp)
        a_rr, a_ss = ad[:, None], ad[None, :]
        b_rr, b_ss = bd[:, None], bd[None, :]
        a_rs, a_sr, b_rs, b_sr = am, am.T, bp, bp.T
        # terms counted wrongly by `full` (l or i in {r, s}), and the true 2x2 block change
        e = (a_rr - a_sr) * (b_sr - b_rr) + (a_rs - a_ss) * (b_ss - b_rs)
        f = (a_rr - a_rs) * (b_rs - b_rr) + (a_sr - a_ss) * (b_ss - b_sr)
        g = (a_rr - a_ss) * (b_ss - b_rr) + (a_rs - a_sr) * (b_sr - b_rs)
        gain += full - e - f + g
    up = unary[np.arange(n), perm]
    cross = unary[:, perm]  # cross[r, s] = U[r, π s]
    gain -= cross + cross.T - up[:, None] - up[None, :]
    np.fill_diagonal(gain, 0.0)
    return gain


def _local_search(a, b, unary, perm: np.ndarray, max_moves: int = 2000) -> tuple[np.ndarray, int]:
    perm = perm.copy()
    for move in range(max_moves):
        gain = _swap_gains(a, b, unary, perm)
        k = int(np.argmax(gain))
        r, s = divmod(k, len(perm))
        if gain[r, s] <= 1e-9 * (1 + abs(gain).max()):
            return perm, move
        perm[[r, s]] = perm[[s, r]]
    return perm, max_moves


def _match(a, b, unary, rng: np.random.Generator, restarts: int, iters: int) -> tuple[np.ndarray, float]:
    """Best permutation (cipher j → plain π j) over FW restarts, each polished by 2-swaps."""
    n = len(unary)
    best, best_f = None, -np.inf
    for k in range(restarts):
        d = np.full((n, n), 1.0 / n)
        if k:
            noise = rng.random((n, n))
            for _ in range(20):  # Sinkhorn: a random doubly-stochastic start
                noise /= noise.sum(1, keepdims=True)
                noise /= noise.sum(0, keepdims=True)
            d = 0.5 * d + 0.5 * noise
        d = _frank_wolfe(a, b, unary, d, iters)
        _, perm = linear_sum_assignment(d, maximize=True)
        perm, _ = _local_search(a, b, unary, perm)
        f = _objective(a, b, unary, perm)
        if f > best_f:
            best, best_f = perm, f
    return best, best_f


def _unary(fc: np.ndarray, fp: np.ndarray) -> np.ndarray:
    scale = fp.std(0) + 1e-6
    diff = (fc[:, None, :] - fp[None, :, :]) / scale
    return (diff ** 2).sum(-1)


# ----------------------------------------------------------------------------- smoothness
class _Geometry:
    """Where each within-block plain position sits: row, col, channel, and its neighbours."""

    def __init__(self, b: int, c: int) -> None:
        t = np.arange(b * b * c)
        self.row, self.col, self.ch = t // (b * c), (t // c) % b, t % c
        same_c = self.ch[:, None] == self.ch[None, :]
        dr, dc = self.row[None, :] - self.row[:, None], self.col[None, :] - self.col[:, None]
        self.within = (same_c & (np.abs(dr) + np.abs(dc) == 1)).astype(np.float64)
        # a in column B-1 next to b in column 0 of the block to the right (same row, channel)
        self.right = (same_c & (dr == 0) & (self.col[:, None] == b - 1) & (self.col[None, :] == 0)).astype(np.float64)
        self.down = (same_c & (dc == 0) & (self.row[:, None] == b - 1) & (self.row[None, :] == 0)).astype(np.float64)


def _sq_diff_matrices(v: np.ndarray) -> list[np.ndarray]:
    """Mean squared differences of positions within a block and with the right / lower block."""
    length = v.shape[-1]
    flat = v.reshape(-1, length)
    m2 = (flat ** 2).mean(0)
    within = m2[:, None] + m2[None, :] - 2 * flat.T @ flat / len(flat)
    out = [within]
    for a, b in ((v[:, :, :-1], v[:, :, 1:]), (v[:, :-1], v[:, 1:])):
        if a.size == 0:
            out.append(np.zeros((length, length)))
            continue
        a, b = a.reshape(-1, length), b.reshape(-1, length)
        out.append((a ** 2).mean(0)[:, None] + (b ** 2).mean(0)[None, :] - 2 * a.T @ b / len(a))
    return out


def _neighbour_sums(img: np.ndarray, hi: np.ndarray, max_step: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum of the 4-neighbours' values and their count, per pixel (float ``(N, C, H, W)``),
    counting only neighbours whose high nibble differs by at most ``max_step`` (no edges)."""
    s = np.zeros_like(img)
    k = np.zeros_like(img)
    for dst, src in (((..., slice(1, None), slice(None)), (..., slice(None, -1), slice(None))),
                     ((..., slice(None, -1), slice(None)), (..., slice(1, None), slice(None))),
                     ((..., slice(None), slice(1, None)), (..., slice(None), slice(None, -1))),
                     ((..., slice(None), slice(None, -1)), (..., slice(None), slice(1, None)))):
        w = np.abs(hi[dst] - hi[src]) <= max_step
        s[dst] += np.where(w, img[src], 0.0)
        k[dst] += w
    return s, k


def _to_blocks(img: np.ndarray, b: int) -> np.ndarray:
    n, c, h, w = img.shape
    return img.reshape(n, c, h // b, b, w // b, b).transpose(0, 2, 4, 3, 5, 1).reshape(n, h // b, w // b, b * b * c)


def _from_blocks(blk: np.ndarray, c: int, b: int) -> np.ndarray:
    n, gh, gw, _ = blk.shape
    return blk.reshape(n, gh, gw, b, b, c).transpose(0, 5, 1, 3, 2, 4).reshape(n, c, gh * b, gw * b)


class _LowStage:
    """Low nibbles given the decrypted high nibbles, by edge-aware smoothness of the 8-bit images.

    Objective (minimised): ``Σ w·(v_a − v_b)²`` over 4-neighbour pixel pairs of one channel,
    ``v = 16·high + low``, with ``w = 1`` where the two high nibbles differ by at most
    ``edge_step`` (squared jumps across edges would otherwise dominate and reward low nibbles
    that blur the edge). The weights depend on the high nibbles only, so each candidate low
    value's cost at a pixel, given the neighbours, is a quadratic read off a few matrix
    products.
    """

    def __init__(self, hi: np.ndarray, lc: np.ndarray, c: int, b: int, edge_step: int) -> None:
        self.hi, self.lc, self.c, self.b, self.step = hi, lc, c, b, edge_step
        self.nlow = lc.shape[-1]
        self.hb_img = _from_blocks(hi, c, b)
        cand = np.concatenate([lc, 15.0 - lc], axis=-1).reshape(-1, 2 * self.nlow)
        self.cand, self.cand_sq = cand, cand ** 2
        hv = self.hb_img
        self.w_v = np.abs(hv[..., 1:, :] - hv[..., :-1, :]) <= edge_step
        self.w_h = np.abs(hv[..., :, 1:] - hv[..., :, :-1]) <= edge_step

    def values(self, tgt: np.ndarray, sgn: np.ndarray) -> np.ndarray:
        lo = np.empty_like(self.hi)
        lo[..., tgt] = np.where(sgn.astype(bool), 15.0 - self.lc, self.lc)
        return lo

    def objective(self, lo: np.ndarray) -> float:
        v = _from_blocks(16.0 * self.hi + lo, self.c, self.b)
        dv, dh = v[..., 1:, :] - v[..., :-1, :], v[..., :, 1:] - v[..., :, :-1]
        return float((dv[self.w_v] ** 2).sum() + (dh[self.w_h] ** 2).sum())

    def costs(self, lo: np.ndarray) -> np.ndarray:
        """``cost[a, s, j]``: cost (up to a constant per ``a``) of cipher low ``j`` with
        inversion ``s`` at target ``a``, given the current neighbours."""
        val = _from_blocks(16.0 * self.hi + lo, self.c, self.b)
        nsum, cnt = _neighbour_sums(val, self.hb_img, self.step)
        dsum = _to_blocks(cnt * 16.0 * self.hb_img - nsum, self.b).reshape(-1, self.hi.shape[-1])
        kk = _to_blocks(cnt, self.b).reshape(-1, self.hi.shape[-1])
        cost = 2 * dsum.T @ self.cand + kk.T @ self.cand_sq
        return cost.reshape(-1, 2, self.nlow)

    def solve(self, lo0: np.ndarray, hungarian_rounds: int = 8,
              max_moves: int = 300) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        # a) Hungarian assignments against the previous round's neighbours; keep the best round
        lo, best = lo0, None
        for _ in range(hungarian_rounds):
            cost = self.costs(lo)
            sign = cost.argmin(1)
            cols = linear_sum_assignment(cost.min(1).T)[1]  # cipher low j -> target cols[j]
            tgt, sgn = cols, sign[cols, np.arange(self.nlow)]
            lo = self.values(tgt, sgn)
            f = self.objective(lo)
            if best is not None and np.array_equal(tgt, best[1]) and np.array_equal(sgn, best[2]):
                break
            if best is None or f < best[0]:
                best = (f, tgt, sgn)
        f, tgt, sgn = best
        tgt, sgn = tgt.copy(), sgn.copy()
        # b) greedy local search (one inversion flip or one swap at a time, the best by the
        # cost matrices first), each move checked on the exact objective
        n, idx, moves = self.nlow, np.arange(self.nlow), 0
        lo = self.values(tgt, sgn)
        while moves < max_moves:
            cost = self.costs(lo)
            cur = cost[tgt, sgn, idx]
            flip = cur - cost[tgt, 1 - sgn, idx]
            bmin = cost.min(1)  # (targets, n)
            m = bmin[tgt]  # m[k, j]: j placed where k is now
            swap = cur[:, None] + cur[None, :] - m.T - m
            np.fill_diagonal(swap, -np.inf)
            gains = np.concatenate([flip, swap.ravel()])
            order = np.argsort(-gains)[:8]
            accepted = False
            for g in order:
                if gains[g] <= 1e-9:
                    break
                t2, s2 = tgt.copy(), sgn.copy()
                if g < n:
                    s2[g] = 1 - s2[g]
                else:
                    j, k = divmod(int(g) - n, n)
                    t2[j], t2[k] = tgt[k], tgt[j]
                    s2[j] = cost[tgt[k], :, j].argmin()
                    s2[k] = cost[tgt[j], :, k].argmin()
                lo2 = self.values(t2, s2)
                f2 = self.objective(lo2)
                if f2 < f - 1e-9:
                    tgt, sgn, lo, f, accepted = t2, s2, lo2, f2, True
                    moves += 1
                    break
            if not accepted:
                break
        return tgt, sgn, {"low_objective": f, "low_moves": moves}


def _channel_stats(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    f = x.permute(1, 0, 2, 3).reshape(x.shape[1], -1).to(torch.float64)
    mean = f.mean(1)
    cen = f - mean[:, None]
    sd = cen.square().mean(1).sqrt().clamp_min(1e-9)
    corr = (cen @ cen.T) / f.shape[1] / (sd[:, None] * sd[None, :])
    return mean.numpy(), corr.numpy()


def _channel_order(images: torch.Tensor, attacker_plain: torch.Tensor) -> np.ndarray:
    """``q`` such that ``images[:, q]`` best matches the attacker's channel statistics."""
    import itertools

    mv, cv = _channel_stats(images)
    ma, ca = _channel_stats(attacker_plain)
    scale = float(attacker_plain.to(torch.float64).var(dim=(0, 2, 3)).mean()) + 1e-9
    best, best_s = None, np.inf
    for q in itertools.permutations(range(images.shape[1])):
        q = np.array(q)
        sc = float(((mv[q] - ma) ** 2).sum()) / scale + float(((cv[np.ix_(q, q)] - ca) ** 2).sum())
        if sc < best_s - 1e-12:
            best, best_s = q, sc
    return best


# ----------------------------------------------------------------------------- the attack
def le_statistics_attack(*, train_plain: torch.Tensor, test_protected: torch.Tensor, block_size: int = 4,
                         restarts: int = 6, fw_iters: int = 40, unary_weight: float = 0.2, edge_step: int = 1,
                         seed: int = 0) -> LEStatsResult:
    """Recover an LE key from the victim's ciphertexts and unpaired plain images; decrypt.

    Args:
        train_plain: uint8 ``(M, C, H, W)``, the attacker's own plain images of a similar
            distribution (not the victim's; no pairs needed).
        test_protected: uint8 ``(N, C, H, W)``, the victim's images encrypted with one LE key.
        block_size: LE's block size ``B`` (Tanaka: 4).
        restarts: Frank–Wolfe restarts of each graph matching (the first starts at the
            barycentre, the others at random doubly-stochastic matrices drawn from ``seed``).
        fw_iters: Frank–Wolfe iterations per restart.
        unary_weight: weight of the per-position statistics against the correlation terms
            of the matching (small: they differ most between attacker's and victim's data).
        edge_step: neighbours whose high nibbles differ by more than this are left out of the
            low-nibble smoothness (edges).
        seed: the random restarts (the attack is deterministic given it).

    Returns an :class:`LEStatsResult` (key, decrypted images, diagnostics, CPU seconds).
    """
    who = "le_statistics_attack"
    b = _check_inputs(test_protected, train_plain, block_size, who)
    check_positive_int(restarts, "restarts", who)
    victim_enc, attacker_plain = test_protected, train_plain
    t0 = time.process_time()
    rng = np.random.default_rng(seed)
    n, c, h, w = victim_enc.shape
    bbc = b * b * c
    length = 2 * bbc
    geo = _Geometry(b, c)
    cip = le_nibbles(victim_enc, b)
    pla = le_nibbles(attacker_plain, b)
    sc, sp = _Stats(cip), _Stats(pla)
    diag: dict[str, Any] = {}

    # 1) all positions: which cipher positions are high nibbles
    idx = np.arange(length)
    dz = (True, False, False)
    a_all = _standardise(sc.matrices(idx), dz)
    b_all = _standardise(sp.matrices(idx), dz)
    u_all = unary_weight * _unary(sc.features, sp.features)
    perm_all, f_all = _match(a_all, b_all, u_all, rng, restarts, fw_iters)
    high = np.sort(np.flatnonzero(perm_all >= bbc))
    low = np.sort(np.flatnonzero(perm_all < bbc))
    diag["objective_all"] = f_all

    # 2) high nibbles only
    hidx = np.arange(bbc, length)
    a_h = _standardise(sc.matrices(high), dz)
    b_h = _standardise(sp.matrices(hidx), dz)
    u_h = unary_weight * _unary(sc.features[high], sp.features[hidx])
    perm_h, f_h = _match(a_h, b_h, u_h, rng, restarts, fw_iters)
    diag["objective_high"] = f_h

    # 3) inversion bits of the high nibbles from signed correlations, global sign from moments
    signed_c = sc.matrices(high, absolute=False)
    signed_p = [m[np.ix_(perm_h + bbc, perm_h + bbc)] for m in sp.matrices(np.arange(length), absolute=False)]
    agree = sum(x * y for x, y in zip(signed_c, signed_p))
    agree = agree + agree.T
    np.fill_diagonal(agree, 0.0)
    _, vecs = np.linalg.eigh(agree)
    s = np.where(vecs[:, -1] >= 0, 1.0, -1.0)
    for _ in range(4 * len(s)):  # single flips while they help
        gains = -4 * s * (agree @ s) / 2
        k = int(np.argmax(gains))
        if gains[k] <= 1e-12:
            break
        s[k] = -s[k]
    mp = sp.mean[perm_h + bbc] - 7.5
    mc = sc.mean[high] - 7.5
    vote = float((s * mc * mp).sum() / (sp.std[perm_h + bbc] ** 2 + 1e-6).sum()) \
        + float((s * sc.skew[high] * sp.skew[perm_h + bbc]).sum()) / len(s)
    if vote < 0:
        s = -s
    inv_h = (s < 0).astype(np.int64)
    diag["global_sign_margin"] = abs(vote)

    # 4) smoothness refinement of the high nibbles on the victim's own images
    hv = cip[..., high].astype(np.float64)
    hv = np.where(inv_h.astype(bool), 15.0 - hv, hv)
    sq = _sq_diff_matrices(hv)
    tmpl = [0.5 * geo.within, geo.right, geo.down]  # every neighbouring pair once
    neg = [-m for m in sq]
    zero_u = np.zeros((len(high), len(high)))
    perm_h2, moves = _local_search(neg, tmpl, zero_u, perm_h)
    diag["smooth_moves_high"] = moves
    # (a swap moves plain positions between cipher positions; each inversion bit stays with its cipher position)
    perm = np.empty(length, dtype=np.int64)
    inv = np.zeros(length, dtype=np.int64)
    perm[high] = perm_h2 + bbc
    inv[high] = inv_h

    # 5) low nibbles by smoothness of the decrypted 8-bit images
    hi_plain = np.empty(cip.shape[:-1] + (bbc,), dtype=np.float64)
    hi_plain[..., perm_h2] = hv
    # the attacker's mean low nibble given the high nibble (7.5 where never seen): breaks the
    # symmetry of "all low nibbles inverted", a fixed point on flat backgrounds
    hp, lp = pla[..., bbc:].ravel().astype(np.int64), pla[..., :bbc].ravel().astype(np.float64)
    cnt_h = np.bincount(hp, minlength=16)
    lbar = np.where(cnt_h > 0, np.bincount(hp, weights=lp, minlength=16) / np.maximum(cnt_h, 1), 7.5)
    stage = _LowStage(hi_plain, cip[..., low].astype(np.float64), c, b, edge_step)
    # two starts, the better by the objective: the attacker's prior, and "no prior" (7.5)
    runs = [stage.solve(lo0) for lo0 in (lbar[hi_plain.astype(np.int64)], np.full_like(hi_plain, 7.5))]
    tgt, sgn, low_diag = min(runs, key=lambda r: r[2]["low_objective"])
    diag.update(low_diag)
    perm[low] = tgt
    inv[low] = sgn

    key = LEKey(perm, inv, image_size=(h, w), block_size=b, channels=c)
    images = cipher_for(key).inverse(victim_enc)
    # 6) the global channel order, which no smoothness sees: the order whose decrypted channel
    # means and channel correlations are closest to the attacker's (identical channels: a tie,
    # the matching's order stays)
    q = _channel_order(images, attacker_plain) if 1 < c <= 4 else np.arange(c)
    diag["channel_order"] = q.tolist()
    if not np.array_equal(q, np.arange(c)):
        qinv = np.argsort(q)
        half, t = np.divmod(perm, bbc)
        pix, ch = np.divmod(t, c)
        perm = half * bbc + pix * c + qinv[ch]
        key = LEKey(perm, inv, image_size=(h, w), block_size=b, channels=c)
        images = images[:, torch.as_tensor(q)].contiguous()
    return LEStatsResult(key=key, images=images, high=high, cpu_seconds=time.process_time() - t0,
                         diagnostics=diag)


def le_stats_curve(*, train_plain: torch.Tensor, test_protected: torch.Tensor, test_plain: torch.Tensor,
                   counts: Sequence[int] = (5, 20, 50, 200), block_size: int = 4, seed: int = 0,
                   **kwargs: Any) -> dict[int, dict[str, float]]:
    """SSIM and bit-exact rate of :func:`le_statistics_attack` against the number of victim images.

    For each ``n`` in ``counts`` the attack sees only the first ``n`` encrypted victims
    (``test_protected``) and is scored on those ``n`` against their plain images
    (``test_plain``): ``{n: {"ssim": mean SSIM, "exact": fraction decrypted bit-exactly,
    "cpu_seconds": ...}}``.
    """
    from ppml.metrics import ssim

    who = "le_stats_curve"
    check_images(test_plain, "test_plain", who, dtype="uint8")
    check_images(test_protected, "test_protected", who, dtype="uint8")
    if test_plain.shape != test_protected.shape:
        raise ShapeError(f"{who}: test_plain {tuple(test_plain.shape)} must have the shape of test_protected "
                         f"{tuple(test_protected.shape)} (the same images, plain)")
    victim_enc, victim_plain = test_protected, test_plain
    out = {}
    for k in counts:
        check_int(k, "every count", who, minimum=1, maximum=len(victim_enc))
        r = le_statistics_attack(train_plain=train_plain, test_protected=victim_enc[:k], block_size=block_size,
                                 seed=seed, **kwargs)
        out[int(k)] = {"ssim": float(ssim(r.images, victim_plain[:k]).mean()),
                       "exact": float((r.images == victim_plain[:k]).flatten(1).all(1).float().mean()),
                       "cpu_seconds": round(r.cpu_seconds, 2)}
    return out
