"""Jigsaw-puzzle solver attack on block-scrambled and EtC images (ciphertext only).

Papers 02 and 03 argue that block scrambling and EtC resist jigsaw-puzzle solvers when the
blocks are small relative to the image (Chuman, Kurihara & Kiya, ICME 2017, whose "extended
jigsaw puzzle solver" also handles rotated, flipped, negative–positive transformed and
colour-shuffled pieces). This module measures that claim with a solver of that kind:

**Compatibility** — Gallagher's Mahalanobis gradient compatibility (MGC, CVPR 2012): for a
seam between a left piece ``i`` and a right piece ``j``, the gradients across the seam are
scored by the Mahalanobis distance to the distribution of gradients just inside ``i``'s right
edge (mean and covariance over the edge's ``B`` rows, covariance + ``reg·I`` because ``B`` is
small), plus the same from ``j``'s side. The sum over the seam expands into a dot product of
per-edge feature vectors, so the dissimilarity of *all* pairs is one matrix product
(:func:`mgc_dissimilarity`): no loop over pixels or pairs.

**Unknown piece transforms (EtC)** — every piece may be rotated/flipped (8 dihedral codes,
:mod:`ppml.ciphers.etc` convention), negative–positive transformed (``v ↦ 255 − v``) and
colour-shuffled (6 channel orders). As in the extended solver, these are found by
compatibility, every state being a candidate: with ``features="full"`` a seam is scored in
RGB against all 8 × 12 transforms of the right piece (geometry, negative–positive state and
channel order are placed together); with ``features="sorted"`` (6× cheaper; the default
beyond 256 pieces) on each pixel's channel values sorted, which no channel order changes and
which a negative–positive transform negates and reverses (8 × 2 transforms), the channel
order (and a last check of the negative–positive state) then being resolved per piece in full
colour against its placed neighbours: a confidence-ordered propagation from the most
colourful piece (a Prim-like spanning tree over the 12 colour labels), then iterated
conditional modes.

**Placement** — a Kruskal-like merge of piece groups (as in Gallagher's tree-based
reassembly): candidate seams — for every piece edge, the ``k`` most compatible other pieces,
each in its best transform — are taken in order of confidence (dissimilarity over the
smaller second-best dissimilarity of the two edges involved, Gallagher's normalisation); a
merge joins two groups, each in its own frame (cells and piece transforms), if no two
pieces overlap and the merged bounding box still fits the known grid ``H/B × W/B`` (in either
orientation when pieces can rotate). When no merge is left, the same seams are replayed
between the largest group and the others, placing the part of the other group that lands on
free cells inside the grid (trimming the rest into single pieces); last, the largest group
is grown greedily (the empty cell with most placed neighbours gets the piece and transform of
least total dissimilarity) until the grid is full. Loops run over merge and placement steps
only; all dissimilarities are batched matrix products.

**Scores** (:func:`score`) — *direct comparison* (fraction of pieces at the right cell with
the right orientation), *neighbour comparison* (fraction of the original image's adjacent
pairs that are adjacent in the solution with the same relative position and orientation),
*largest correct component* (the largest set of pieces connected by correct adjacencies,
over all pieces), *colour* (EtC: pieces with the right negative–positive state and channel
order), and SSIM (:func:`ppml.metrics.ssim`) of the assembled image.

**Global symmetry** — with unknown orientations, a rotation or flip of the whole solution (and,
for EtC, a global negative–positive transform or channel order) is as compatible as the
solution itself: no ciphertext-only solver can tell them apart. Following the jigsaw
literature, the solution is scored up to that symmetry: direct comparison is the maximum
over the whole-image transforms that keep the grid's shape (8 for a square grid, 4
otherwise; only the identity can match a block-scrambled solution, whose pieces are never
rotated), colour the maximum over the 12 global colour transforms, and SSIM is computed on
the solution brought back by the transforms that maximise those two. Neighbour comparison
and the largest component are invariant to it by construction.

>>> import torch
>>> from ppml.ciphers import EtC
>>> from ppml.keys import EtCKey
>>> x = smooth_test_image(32, seed=0)[None]
>>> key = EtCKey.generate(image_size=32, block_size=8, seed=1)
>>> y = EtC(key=key)(x)
>>> sol = solve(y, 8, scheme="EtC")
>>> s = score(sol, true_arrangement(key), original=x, encrypted=y, block_size=8)
>>> s["direct"], s["neighbour"], s["colour"]
(1.0, 1.0, 1.0)
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ppml._checks import ShapeError, check_images, check_positive_int
from ppml.ciphers.blocks import BlockGrid

__all__ = ["Arrangement", "SCHEMES", "to_pieces", "assemble", "true_arrangement", "mgc_dissimilarity",
           "solve", "score", "direct_comparison", "neighbour_comparison", "largest_component",
           "aligned_reconstruction", "jigsaw_attack", "JigsawResults", "jigsaw_sweep",
           "smooth_test_image"]

#: scheme names accepted by :func:`solve` (case-insensitive; "block" and "block_scramble" alias BlockScramble)
SCHEMES = ("EtC", "BlockScramble")


# --------------------------------------------------------------------------------------------
# The group of piece transforms: 8 dihedral codes (EtC convention) × negative–positive bit
# --------------------------------------------------------------------------------------------

def _apply_d(x: torch.Tensor, code: int) -> torch.Tensor:
    """Dihedral code ``code`` on the last two dims: ``rot90`` by ``code mod 4``, then a
    left–right flip if ``code >= 4`` (the EtC ``rot_flip`` convention)."""
    y = torch.rot90(x, int(code) % 4, dims=(-2, -1))
    return y.flip(-1) if code >= 4 else y


def _dihedral_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``comp[a, b]`` (code of "b then a"), ``inv[a]`` and ``lin[a]`` (2×2 integer matrix: how
    code ``a`` applied to a whole grid moves a displacement ``(dr, dc)`` between cells)."""
    base = torch.arange(25).reshape(5, 5)
    imgs = [_apply_d(base, k) for k in range(8)]
    comp = np.zeros((8, 8), np.int64)
    for a in range(8):
        for b in range(8):
            y = _apply_d(imgs[b], a)
            comp[a, b] = next(k for k in range(8) if torch.equal(imgs[k], y))
    inv = np.array([int(np.nonzero(comp[a] == 0)[0][0]) for a in range(8)])
    lin = np.zeros((8, 2, 2), np.int64)
    for a in range(8):
        where = {int(v): np.argwhere(imgs[a].numpy() == v)[0] for v in (12, 13, 17)}  # (2,2), (2,3), (3,2)
        lin[a, :, 0] = where[17] - where[12]
        lin[a, :, 1] = where[13] - where[12]
    return comp, inv, lin


_COMP8, _INV8, _LIN8 = _dihedral_tables()
# the pure rotation that takes a unit displacement to (0, 1) (the "right" seam): by direction
_TO_RIGHT = {}
for _r in range(4):
    _d = tuple(int(v) for v in _LIN8[_INV8[_r]] @ np.array([0, 1]))
    _TO_RIGHT[_d] = _r  # rotation r maps _d to (0, 1)


def _colour_tables(channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Colour labels ``l = p + P·n`` (channel order p of ``permutations(range(C))``, output
    channel k takes input channel ``perm[k]``; negative–positive bit n): ``perms``,
    ``comp[a, b]`` ("b then a"), ``inv``, ``perms`` index arrays."""
    perms = np.array(list(itertools.permutations(range(channels))), np.int64)
    npm = len(perms)
    lookup = {tuple(p): i for i, p in enumerate(perms)}
    pc = np.zeros((npm, npm), np.int64)
    for a in range(npm):
        for b in range(npm):
            # out2[k] = out1[pa[k]] = in[pb[pa[k]]]
            pc[a, b] = lookup[tuple(perms[b][perms[a]])]
    lab = np.arange(2 * npm)
    comp = pc[(lab % npm)[:, None], (lab % npm)[None, :]] + npm * ((lab // npm)[:, None] ^ (lab // npm)[None, :])
    inv = np.array([int(np.nonzero(comp[a] == 0)[0][0]) for a in lab])
    return perms, comp, inv, lab


# --------------------------------------------------------------------------------------------
# Arrangements: where every cipher piece goes and how it is shown
# --------------------------------------------------------------------------------------------

@dataclass
class Arrangement:
    """A solved (or true) puzzle for ``N`` images on a ``gh × gw`` grid of ``B×B`` cells.

    Cell ``(r, c)`` of image ``k`` shows cipher piece ``piece[k, r, c]`` (row-major index into
    the encrypted image's blocks) transformed by ``dihedral`` (0..7: ``rot90`` by ``code mod
    4`` then a left–right flip if ``code >= 4``), then ``negpos`` (1: ``v ↦ 255 − v``), then
    ``channel`` (index into ``itertools.permutations(range(C))``; output channel j takes input
    channel ``perm[j]``). All arrays are int64 ``(N, gh, gw)``.
    """

    piece: np.ndarray
    dihedral: np.ndarray
    negpos: np.ndarray
    channel: np.ndarray

    def __post_init__(self) -> None:
        arrs = [np.asarray(a, dtype=np.int64) for a in (self.piece, self.dihedral, self.negpos, self.channel)]
        if arrs[0].ndim == 2:
            arrs = [a[None] for a in arrs]
        if arrs[0].ndim != 3 or any(a.shape != arrs[0].shape for a in arrs):
            raise ValueError("Arrangement arrays must all have shape (N, gh, gw) (or (gh, gw) for one image), got "
                             + ", ".join(str(a.shape) for a in arrs))
        n, gh, gw = arrs[0].shape
        flat = np.sort(arrs[0].reshape(n, -1), axis=1)
        if not (flat == np.arange(gh * gw)).all():
            raise ValueError("Arrangement.piece must hold every piece index 0..gh·gw−1 exactly once per image")
        if arrs[1].min(initial=0) < 0 or arrs[1].max(initial=0) > 7:
            raise ValueError("Arrangement.dihedral codes must lie in 0..7")
        if arrs[2].min(initial=0) < 0 or arrs[2].max(initial=0) > 1:
            raise ValueError("Arrangement.negpos must be 0 or 1")
        self.piece, self.dihedral, self.negpos, self.channel = arrs

    @property
    def grid(self) -> tuple[int, int]:
        """``(gh, gw)``: blocks per column and per row."""
        return int(self.piece.shape[1]), int(self.piece.shape[2])

    def __len__(self) -> int:
        return int(self.piece.shape[0])

    @classmethod
    def identity(cls, n: int, grid: tuple[int, int]) -> "Arrangement":
        """Every piece at its own cell, untransformed (the arrangement of a plain image)."""
        gh, gw = grid
        p = np.broadcast_to(np.arange(gh * gw).reshape(1, gh, gw), (n, gh, gw)).copy()
        z = np.zeros_like(p)
        return cls(p, z, z.copy(), z.copy())

    def __getitem__(self, k: Any) -> "Arrangement":
        sl = slice(k, k + 1) if isinstance(k, (int, np.integer)) else k
        return Arrangement(self.piece[sl], self.dihedral[sl], self.negpos[sl], self.channel[sl])

    @classmethod
    def concat(cls, items: Sequence["Arrangement"]) -> "Arrangement":
        """One arrangement of all images of ``items``, in order."""
        fields = ("piece", "dihedral", "negpos", "channel")
        return cls(*(np.concatenate([getattr(a, f) for a in items]) for f in fields))


def _grid(y: Any, block_size: Any, who: str, name: str = "y",
          value_range: tuple[float, float] | None = None) -> tuple[int, int]:
    """The block grid ``(H/B, W/B)`` of a valid image batch ``y`` (see :func:`ppml._checks.check_images`)."""
    check_images(y, name, who, value_range=value_range)
    b = check_positive_int(block_size, "block_size", who)
    h, w = y.shape[-2:]
    if h % b or w % b:
        raise ShapeError(f"{who}: image size {h}x{w} is not divisible by block size {b}; crop or pad "
                         f"the images to multiples of {b}")
    return h // b, w // b


def to_pieces(y: torch.Tensor, block_size: int) -> torch.Tensor:
    """Blocks of every image, row-major: ``(N, C, H, W) → (N, gh·gw, C, B, B)``.

    >>> to_pieces(torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4), 2)[0, 1, 0].tolist()
    [[2, 3], [6, 7]]
    """
    _grid(y, block_size, "to_pieces")
    return BlockGrid.of(y, int(block_size), who="to_pieces").to_blocks(y)


def _from_pieces(p: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    _, _, c, b, _ = p.shape
    return BlockGrid((grid[0] * b, grid[1] * b), b, channels=c).from_blocks(p)


def _negate(x: torch.Tensor) -> torch.Tensor:
    return 255 - x if x.dtype == torch.uint8 else 1 - x


def assemble(y: torch.Tensor, arrangement: Arrangement, block_size: int) -> torch.Tensor:
    """The image an arrangement shows: cell by cell, the chosen cipher piece transformed as
    the arrangement says (dtype preserved; float images are taken to lie in [0, 1]).

    >>> y = torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4)
    >>> torch.equal(assemble(y, Arrangement.identity(1, (2, 2)), 2), y)
    True
    """
    grid = _grid(y, block_size, "assemble")
    if arrangement.grid != grid or len(arrangement) != y.shape[0]:
        raise ValueError(f"assemble: arrangement is for {len(arrangement)} images on a {arrangement.grid} grid, "
                         f"the images are {y.shape[0]} on a {grid} grid")
    n, c = y.shape[:2]
    b = int(block_size)
    pcs = to_pieces(y, b)
    idx = torch.arange(n)[:, None]
    sel = pcs[idx, torch.as_tensor(arrangement.piece.reshape(n, -1))]  # (n, P, C, B, B)
    from ppml.ciphers.blocks import dihedral_table
    table = torch.as_tensor(dihedral_table(b)[arrangement.dihedral.reshape(n, -1)])  # (n, P, B, B) flat source
    flat = sel.reshape(n, sel.shape[1], c, b * b)
    out = torch.gather(flat, 3, table.reshape(n, -1, 1, b * b).expand(-1, -1, c, -1)).reshape(sel.shape)
    neg = torch.as_tensor(arrangement.negpos.reshape(n, -1, 1, 1, 1) == 1)
    out = torch.where(neg, _negate(out), out)
    if c > 1:
        perms = torch.as_tensor(np.array(list(itertools.permutations(range(c))), np.int64))
        ch = perms[torch.as_tensor(arrangement.channel.reshape(n, -1))]  # (n, P, C)
        out = torch.gather(out, 2, ch[..., None, None].expand(-1, -1, -1, b, b))
    elif (arrangement.channel != 0).any():
        raise ValueError("assemble: one-channel images have only channel code 0")
    return _from_pieces(out, grid)


def true_arrangement(key: Any, grid: tuple[int, int] | None = None) -> Arrangement:
    """The arrangement that decrypts: from an :class:`~ppml.keys.EtCKey`, a
    :class:`~ppml.keys.BlockScrambleKey`, or block permutations ``perms`` ``(n_blocks,)`` or
    ``(N, n_blocks)`` (one permutation per image, ``out[i] = in[perm[i]]``) (then ``grid`` is needed).

    Cipher piece i holds original block ``block_perm[i]`` transformed by ``rot_flip[i]``,
    ``negpos[i]`` and ``channel_perm[i]``; so the truth puts it at cell ``block_perm[i]``
    with the inverse transforms.

    >>> a = true_arrangement(np.array([[1, 0, 2, 3]]), grid=(2, 2))
    >>> a.piece[0].tolist()
    [[1, 0], [2, 3]]
    """
    from ppml.keys import BlockScrambleKey, EtCKey

    if isinstance(key, (EtCKey, BlockScrambleKey)):
        h, w = key.image_size
        grid = (h // key.block_size, w // key.block_size)
        perm = np.asarray(key.block_perm, np.int64)[None]
        n_img = 1
        if isinstance(key, EtCKey):
            rf = np.asarray(key.rot_flip, np.int64)[None]
            negpos = np.asarray(key.negpos, np.int64)[None]
            perms = np.array(list(itertools.permutations(range(key.channels))), np.int64)
            lookup = {tuple(p): i for i, p in enumerate(perms)}
            undo = np.array([lookup[tuple(np.argsort(perms[c]))] for c in range(len(perms))])
            chan = undo[np.asarray(key.channel_perm, np.int64)][None]
        else:
            rf = negpos = chan = np.zeros_like(perm)
    else:
        perm = np.asarray(torch.as_tensor(key).cpu().numpy() if isinstance(key, torch.Tensor) else key)
        if perm.dtype.kind not in "iu":
            raise ValueError(f"true_arrangement: expected an EtCKey, a BlockScrambleKey or integer block "
                             f"permutations, got {type(key).__name__} of dtype {perm.dtype}")
        perm = perm.astype(np.int64)
        if perm.ndim == 1:
            perm = perm[None]
        if grid is None or perm.ndim != 2 or perm.shape[1] != grid[0] * grid[1]:
            raise ValueError("true_arrangement: permutations need grid=(gh, gw) with gh·gw == their length")
        n_img = perm.shape[0]
        rf = negpos = chan = np.zeros_like(perm)
    gh, gw = grid
    n_img = perm.shape[0]
    piece = np.zeros_like(perm)
    rows = np.arange(n_img)[:, None]
    piece[rows, perm] = np.arange(perm.shape[1])[None]
    out = []
    for arr in (_INV8[rf], negpos, chan):
        cell = np.zeros_like(perm)
        cell[rows, perm] = arr
        out.append(cell.reshape(n_img, gh, gw))
    return Arrangement(piece.reshape(n_img, gh, gw), *out)


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


# --------------------------------------------------------------------------------------------
# The solver
# --------------------------------------------------------------------------------------------

def _norm_scheme(scheme: str) -> str:
    s = str(scheme).lower().replace("-", "").replace("_", "")
    if s == "etc":
        return "EtC"
    if s in ("blockscramble", "block", "blockscrambling", "scramble"):
        return "BlockScramble"
    raise ValueError(f"unknown scheme {scheme!r}; valid: {', '.join(SCHEMES)}")


class _Puzzle:
    """One image's pieces with the edge features of every display of every piece.

    A display is ``g = d + 8·l``: dihedral code d, then colour label l. The colour labels are
    ``features``-dependent: BlockScramble has one (identity); EtC with ``"sorted"`` or
    ``"invariant"`` features (channel-order-free) has two (negative–positive bit); EtC with
    ``"full"`` features has ``2·C!`` (channel order p and negative–positive bit n, ``l = p + C!·n``).
    """

    def __init__(self, pcs: torch.Tensor, grid: tuple[int, int], scheme: str, reg: float,
                 features: str = "sorted") -> None:
        self.grid = grid
        self.n = pcs.shape[0]
        self.free = scheme == "EtC"
        self.features = features if self.free else "rgb"
        work = _to_work(pcs)
        if self.features == "sorted":       # per-pixel channel values, sorted: no channel order
            feats = work.sort(1, descending=True).values
            col_ops = [lambda f: f, lambda f: -f.flip(1)]
            col_comp = np.array([[0, 1], [1, 0]])
        elif self.features == "invariant":  # channel mean and chroma magnitude
            feats = _invariant(work)
            col_ops = [lambda f: f, lambda f: torch.cat([-f[:, :1], f[:, 1:]], 1)]
            col_comp = np.array([[0, 1], [1, 0]])
        elif self.features == "full":       # RGB under every channel order and sign
            feats = work
            perms, col_comp, _, labels = _colour_tables(work.shape[1])
            npm = len(perms)
            col_ops = [(lambda f, p=perms[l % npm], s=(-1.0 if l >= npm else 1.0): s * f[:, torch.as_tensor(p)])
                       for l in labels]
        elif self.features == "rgb":
            feats = work
            col_ops = [lambda f: f]
            col_comp = np.zeros((1, 1), np.int64)
        else:
            raise ValueError(f"unknown features {features!r}; valid: sorted, invariant, full")
        self.ncol = len(col_ops)
        ng = 8 * self.ncol
        gid = np.arange(ng)
        d, c = gid % 8, gid // 8
        self.comp = _COMP8[d[:, None], d[None, :]] + 8 * col_comp[c[:, None], c[None, :]]
        self.inv = np.array([int(np.nonzero(self.comp[x] == 0)[0][0]) for x in gid])
        self.lin = _LIN8[gid % 8]
        disp = [col_ops[g // 8](_apply_d(feats, g % 8)) for g in range(ng)]
        d = torch.stack(disp, 1)  # (P, ng, Cf, B, B)
        lf, rf = _edge_features(d.reshape(-1, *d.shape[2:]), reg)
        self.lf = lf.reshape(self.n, ng, -1)
        self.rf = rf.reshape(self.n, ng, -1)
        self.allowed = gid if self.free else np.array([0])

    def row_specs(self) -> list[tuple[int, np.ndarray]]:
        """For each left display r ∈ 0..3 (a pure rotation: which edge of the left piece is in
        the seam), the right displays to try: all transforms (EtC) or the same rotation
        (BlockScramble: the seam frame is then just the image turned by r)."""
        if self.free:
            return [(r, self.allowed) for r in range(4)]
        return [(r, np.array([r])) for r in range(4)]

    def reverse_row(self, t: np.ndarray) -> np.ndarray:
        """For a seam "i shown as r, j shown as t right of it": the rotation r' with which the
        same seam appears in j's row (j shown as a pure rotation with i to its right)."""
        out = np.full(len(self.comp), -1, np.int64)
        for tt in range(len(self.comp)):
            for r2 in range(4):
                h = self.comp[r2, self.inv[tt]]
                if (self.lin[h] @ np.array([0, -1]) == np.array([0, 1])).all():
                    out[tt] = r2
        return out[t]

    def candidates(self, k: int, chunk_entries: int = 4_000_000) -> tuple[np.ndarray, ...]:
        """The ``k`` most compatible other pieces (each with its best transform) for every piece
        edge, sorted by confidence: dissimilarity over the smaller of the two edges'
        second-best dissimilarities (Gallagher's normalisation, taken from both sides)."""
        ii, rr, jj, tt, dd = [], [], [], [], []
        p = self.n
        second = torch.zeros(p, 4, dtype=torch.float64)
        for r, cols in self.row_specs():
            nt = len(cols)
            rf = self.rf[:, cols].reshape(p * nt, -1)                  # column m = (j, t) = (m // T, m % T)
            kk = min(k + 1, p - 1)
            step = max(1, chunk_entries // max(1, rf.shape[0]))
            for s in range(0, p, step):
                rows = torch.arange(s, min(p, s + step))
                dmat = (self.lf[rows, r] @ rf.T).view(len(rows), p, nt)
                best_t, arg_t = dmat.min(2)                              # best transform per piece pair
                best_t[torch.arange(len(rows)), rows] = math.inf        # no self-seams
                val, idx = torch.topk(best_t, kk, dim=1, largest=False)
                second[rows, r] = val[:, min(1, kk - 1)]
                keep = min(k, kk)
                ii.append(rows[:, None].expand(-1, keep).reshape(-1))
                rr.append(torch.full((len(rows) * keep,), r))
                jj.append(idx[:, :keep].reshape(-1))
                tt.append(torch.as_tensor(cols)[arg_t.gather(1, idx[:, :keep])].reshape(-1))
                dd.append(val[:, :keep].reshape(-1))
        i, r, j, t, d = (torch.cat(a).numpy() for a in (ii, rr, jj, tt, dd))
        sec = second.numpy()
        norm = np.minimum(sec[i, r], sec[j, self.reverse_row(t)])
        eps = 1e-6  # keeps the ratio finite for perfectly flat edges
        ratio = (d + eps) / (norm + eps)
        order = np.lexsort((d, ratio))
        return i[order], r[order], j[order], t[order], d[order]

    def fits(self, h: int, w: int) -> bool:
        gh, gw = self.grid
        return (h <= gh and w <= gw) or (self.free and h <= gw and w <= gh)


def _solve_one(pcs: torch.Tensor, grid: tuple[int, int], scheme: str, *, reg: float, k: int,
               features: str = "sorted") -> tuple[np.ndarray, np.ndarray, dict[str, int], int]:
    """Place the pieces of one image; returns the ``piece`` and display-code grids (code
    ``d + 8·l``: dihedral d, colour label l), solver statistics and the number of colour labels."""
    pz = _Puzzle(pcs, grid, scheme, reg, features)
    comp, inv, lin = pz.comp, pz.inv, pz.lin
    p = pz.n
    pos = np.zeros((p, 2), np.int64)       # cell of every piece in its group's frame
    tr = np.zeros(p, np.int64)             # display of every piece in its group's frame
    group = np.arange(p)
    members = {i: np.array([i]) for i in range(p)}
    off = max(grid) + 1                    # group frames stay within ±max(grid) of their first piece
    width = 2 * off + 1

    def code(rc: np.ndarray) -> np.ndarray:
        return (rc[..., 0] + off) * width + rc[..., 1] + off

    occ: dict[int, np.ndarray] = {}                      # dense occupancy per group, made on demand
    box = {i: [0, 0, 0, 0] for i in range(p)}           # rmin, rmax, cmin, cmax per group

    def occupancy(g: int) -> np.ndarray:
        if g not in occ:
            occ[g] = np.zeros(width * width, bool)
            occ[g][code(pos[members[g]])] = True
        return occ[g]

    def frame_map(i: int, r: int, j: int, t: int, ga: int, gb: int, to_a: bool):
        """The seam "i shown as r, j shown as t right of it" as a map of one group into the
        other's frame: (element m, source cell, destination cell) with cell ↦ dst + lin[m]·(cell − src)."""
        phi = comp[tr[i], inv[r]]                        # seam frame -> a's frame
        pj = pos[i] + lin[phi] @ np.array([0, 1])         # j's cell in a's frame
        psi = comp[comp[phi, t], inv[tr[j]]]             # b's frame -> a's frame
        return (psi, pos[j].copy(), pj) if to_a else (inv[psi], pj, pos[j].copy())

    def move(mover: int, keeper: int, m: int, src: np.ndarray, dst: np.ndarray, keep: np.ndarray | None = None) -> None:
        mem = members.pop(mover)
        newpos = dst + (pos[mem] - src) @ lin[m].T
        tr[mem] = comp[m, tr[mem]]
        if keep is None:
            keep = np.ones(len(mem), bool)
        kept, dropped = mem[keep], mem[~keep]
        pos[kept] = newpos[keep]
        group[kept] = keeper
        members[keeper] = np.concatenate([members[keeper], kept])
        occupancy(keeper)[code(newpos[keep])] = True
        b, nk = box[keeper], newpos[keep]
        box[keeper] = [min(b[0], int(nk[:, 0].min())), max(b[1], int(nk[:, 0].max())),
                       min(b[2], int(nk[:, 1].min())), max(b[3], int(nk[:, 1].max()))]
        occ.pop(mover, None)
        del box[mover]
        for q in dropped.tolist():  # each dropped piece becomes a group of its own
            group[q], pos[q] = q, 0
            members[q], box[q] = np.array([q]), [0, 0, 0, 0]

    def occupied(keeper: int, cells: np.ndarray) -> np.ndarray:
        """Whether each cell (in keeper's frame) is taken; cells beyond the frame are free."""
        inside = (np.abs(cells) < off).all(1)
        out = np.zeros(len(cells), bool)
        out[inside] = occupancy(keeper)[code(cells[inside])]
        return out

    ci = cr = cj = ct = np.zeros(0, np.int64)
    if p > 1:
        ci, cr, cj, ct, _ = pz.candidates(k)
        ci, cr, cj, ct = ci.tolist(), cr.tolist(), cj.tolist(), ct.tolist()
        for i, r, j, t in zip(ci, cr, cj, ct):
            ga, gb = group[i], group[j]
            if ga == gb:
                continue
            to_a = len(members[gb]) <= len(members[ga])  # move the smaller group
            mover, keeper = (gb, ga) if to_a else (ga, gb)
            m, src, dst = frame_map(i, r, j, t, ga, gb, to_a)
            mb = box[mover]  # the bound first, from two opposite corners of the mover's box
            corners = dst + (np.array([[mb[0], mb[2]], [mb[1], mb[3]]]) - src) @ lin[m].T
            bx = box[keeper]
            rmin, rmax = min(bx[0], int(corners[:, 0].min())), max(bx[1], int(corners[:, 0].max()))
            cmin, cmax = min(bx[2], int(corners[:, 1].min())), max(bx[3], int(corners[:, 1].max()))
            if not pz.fits(rmax - rmin + 1, cmax - cmin + 1):
                continue
            newpos = dst + (pos[members[mover]] - src) @ lin[m].T
            if occupied(keeper, newpos).any():
                continue
            move(mover, keeper, m, src, dst)
            if len(members) == 1:
                break
    n_groups = len(members)
    main = max(members, key=lambda g: len(members[g]))
    largest = len(members[main])
    trimmed = 0
    if n_groups > 1:
        # trim-merge: a confident seam between the main group and another group places the part
        # of that group that lands on free cells inside the best grid window around the main
        # group (it must keep the seam's own piece); the rest of it falls apart into single pieces
        windows = [tuple(grid)] + ([tuple(grid[::-1])] if pz.free and grid[0] != grid[1] else [])
        for i, r, j, t in zip(ci, cr, cj, ct):
            ga, gb = group[i], group[j]
            if ga == gb or main not in (ga, gb):
                continue
            to_a = ga == main
            mover, anchor = (gb, j) if to_a else (ga, i)
            m, src, dst = frame_map(i, r, j, t, ga, gb, to_a)
            if occupied(main, dst + (pos[anchor:anchor + 1] - src) @ lin[m].T)[0]:
                continue  # the seam's own piece would land on an occupied cell
            mem = members[mover]
            newpos = dst + (pos[mem] - src) @ lin[m].T
            free = ~occupied(main, newpos)
            a = int(np.nonzero(mem == anchor)[0][0])
            bx = box[main]
            best, keep = 0, None
            for wh, ww in windows:
                r0 = np.arange(bx[1] - wh + 1, bx[0] + 1)
                c0 = np.arange(bx[3] - ww + 1, bx[2] + 1)
                if len(r0) == 0 or len(c0) == 0:
                    continue
                inr = (newpos[None, :, 0] >= r0[:, None]) & (newpos[None, :, 0] < r0[:, None] + wh)  # (R, n)
                inc = (newpos[None, :, 1] >= c0[:, None]) & (newpos[None, :, 1] < c0[:, None] + ww)  # (C, n)
                inside = inr[:, None, :] & inc[None, :, :] & free                               # (R, C, n)
                counts = np.where(inside[:, :, a], inside.sum(2), 0)
                if counts.max() > best:
                    best = int(counts.max())
                    ri, cj_ = np.unravel_index(int(np.argmax(counts)), counts.shape)
                    keep = inside[ri, cj_]
            if keep is None:
                continue
            trimmed += int((~keep).sum())
            move(mover, main, m, src, dst, keep)
            if len(members[main]) == p:
                break
    cells = {tuple(c): int(q) for q, c in zip(members[main].tolist(), pos[members[main]].tolist())}
    filled = _fill(pz, cells, list(box[main]), pos, tr)
    rc = np.array(list(cells.keys()), np.int64)
    rc -= rc.min(0)
    h, w = (rc.max(0) + 1).tolist()
    piece = np.zeros((h, w), np.int64)
    g = np.zeros((h, w), np.int64)
    ids = np.fromiter(cells.values(), np.int64)
    piece[rc[:, 0], rc[:, 1]] = ids
    g[rc[:, 0], rc[:, 1]] = tr[ids]
    if (h, w) != tuple(grid):  # it fits transposed: turn the whole solution by 90°
        piece = _apply_d(torch.as_tensor(piece), 1).numpy()
        g = comp[1, _apply_d(torch.as_tensor(g), 1).numpy()]
    return piece, g, {"groups_after_merge": int(n_groups), "largest_merged_group": int(largest),
                      "trimmed": int(trimmed), "filled": int(filled)}, pz.ncol


def _fill(pz: _Puzzle, cells: dict[tuple[int, int], int], bx: list[int], pos: np.ndarray, tr: np.ndarray) -> int:
    """Grow group ``cells`` (in place) until every piece is placed: each step takes the empty
    cells with the most placed neighbours (inside the grid bound) and puts there the unplaced
    piece and transform of least mean dissimilarity to those neighbours. Returns how many
    pieces it placed. Each empty cell keeps its summed seam costs against every piece and
    transform, updated when a neighbour arrives (one matrix-vector product)."""
    placed = np.zeros(pz.n, bool)
    placed[list(cells.values())] = True
    n_filled = int((~placed).sum())
    if n_filled == 0:
        return 0
    allowed = pz.allowed
    dirs = ((0, 1), (0, -1), (1, 0), (-1, 0))
    rf_dir = {}
    for d in dirs:  # right-role features of every piece under every allowed transform, per direction
        r = _TO_RIGHT[d]
        rf_dir[d] = pz.rf[:, torch.as_tensor(pz.comp[r, allowed])]  # (P, A, F)
    cost: dict[tuple[int, int], torch.Tensor] = {}
    count: dict[tuple[int, int], int] = {}

    def add(c: tuple[int, int], i: int) -> None:
        for d in dirs:
            e = (c[0] + d[0], c[1] + d[1])
            if e in cells:
                continue
            left = pz.lf[i, int(pz.comp[_TO_RIGHT[d], tr[i]])]      # i shown so that e is on its right
            inc = rf_dir[d] @ left
            if e in cost:
                cost[e] += inc
                count[e] += 1
            else:
                cost[e], count[e] = inc, 1

    for c, i in list(cells.items()):
        add(c, i)
    for _ in range(n_filled):
        rmin, rmax, cmin, cmax = bx
        ok = [c for c in cost if pz.fits(max(rmax, c[0]) - min(rmin, c[0]) + 1, max(cmax, c[1]) - min(cmin, c[1]) + 1)]
        most = max(count[c] for c in ok)
        front = [c for c in ok if count[c] == most]
        total = torch.stack([cost[c] for c in front]) / most            # (M, P, A)
        total[:, torch.as_tensor(placed)] = math.inf
        f, rest = divmod(int(torch.argmin(total.reshape(-1))), pz.n * len(allowed))
        piece, a = divmod(rest, len(allowed))
        c = front[f]
        cells[c] = piece
        placed[piece] = True
        pos[piece] = c
        tr[piece] = int(allowed[a])
        del cost[c], count[c]
        bx[:] = [min(bx[0], c[0]), max(bx[1], c[0]), min(bx[2], c[1]), max(bx[3], c[1])]
        add(c, piece)
    return n_filled


def _resolve_colour(pcs: torch.Tensor, piece: np.ndarray, d: np.ndarray, negpos: np.ndarray, reg: float,
                    sweeps: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Colour label of every cell (channel order, and the negative–positive bit relative to the
    placement's) by full-colour MGC with its neighbours; returns the (negpos, channel) grids."""
    gh, gw = piece.shape
    perms, _, _, labels = _colour_tables(pcs.shape[1])
    npm, nl = len(perms), len(labels)
    work = _to_work(pcs)
    shown = torch.stack([_apply_d(work[int(piece.flat[q])], int(d.flat[q])) for q in range(gh * gw)])
    shown = torch.where(torch.as_tensor(negpos.reshape(-1) == 1)[:, None, None, None], -shown, shown)
    var = torch.stack([(-1.0 if lab >= npm else 1.0) * shown[:, torch.as_tensor(perms[lab % npm])]
                       for lab in labels], 1).reshape(gh, gw, nl, *shown.shape[1:])

    def seam_costs(grid: torch.Tensor) -> np.ndarray:  # (rows, cols-1, L, L): [left label, right label]
        rows, cols = grid.shape[:2]
        lf, rf = _edge_features(grid.reshape(-1, *grid.shape[3:]), reg)
        lf, rf = lf.reshape(rows, cols, nl, -1), rf.reshape(rows, cols, nl, -1)
        return torch.einsum("rcaf,rcbf->rcab", lf[:, :-1], rf[:, 1:]).numpy()

    cost_h = seam_costs(var) if gw > 1 else None
    cost_v = seam_costs(var.transpose(-1, -2).transpose(0, 1)).transpose(1, 0, 2, 3) if gh > 1 else None
    nb: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(gh * gw)]  # (neighbour, cost[mine, theirs])
    for a in range(gh):
        for b in range(gw):
            q = a * gw + b
            if b + 1 < gw:
                nb[q].append((q + 1, cost_h[a, b]))
                nb[q + 1].append((q, cost_h[a, b].T))
            if a + 1 < gh:
                nb[q].append((q + gw, cost_v[a, b]))
                nb[q + gw].append((q, cost_v[a, b].T))
    # confidence-ordered propagation (Prim-like) from the most colourful piece
    chroma = (shown - shown.mean(1, keepdim=True)).abs().mean((1, 2, 3)).numpy()
    label = np.full(gh * gw, -1, np.int64)
    unary = np.zeros((gh * gw, nl))
    margin = np.full(gh * gw, -np.inf)
    start = int(np.argmax(chroma))
    margin[start] = np.inf
    for _ in range(gh * gw):
        q = int(np.argmax(margin))
        label[q] = 0 if q == start else int(np.argmin(unary[q]))
        margin[q] = -np.inf
        for nq, cost in nb[q]:
            if label[nq] < 0:
                unary[nq] += cost[label[q]]          # cost[mine = label[q], theirs = each label of nq]
                s = np.partition(unary[nq], 1)[:2]
                margin[nq] = s[1] - s[0]
    for _ in range(sweeps):  # iterated conditional modes, one checkerboard colour at a time
        for parity in (0, 1):
            new = label.copy()
            for q in range(gh * gw):
                if (q // gw + q % gw) % 2 == parity:
                    new[q] = int(np.argmin(sum(cost[:, label[nq]] for nq, cost in nb[q]))) if nb[q] else label[q]
            label = new
    lab = label.reshape(gh, gw)
    return negpos ^ (lab // npm), lab % npm


def solve(y: torch.Tensor, block_size: int, *, scheme: str = "EtC", features: str = "auto", reg: float = 1.0,
          k: int = 8, colour: bool = True, return_stats: bool = False) -> Arrangement | tuple[Arrangement, list[dict]]:
    """Reassemble encrypted images ``(N, C, H, W)`` (uint8, or float in [0, 1]) from their
    ``B×B`` blocks alone, one image at a time.

    ``scheme="BlockScramble"``: pieces are only moved (orientation and colour known).
    ``scheme="EtC"``: pieces may also be rotated/flipped, negative–positive transformed and
    colour-shuffled; the solution is then defined up to a whole-image transform (see the
    module docstring). ``features`` (EtC): ``"full"`` scores seams in RGB over all 8 × 12
    transforms of the right piece; ``"sorted"`` on the per-pixel sorted channel values (blind
    to the channel order; a negative–positive transform negates and reverses them) over 8 × 2,
    the channel order then being resolved from neighbours; ``"invariant"`` likewise on channel
    mean and chroma; ``"auto"``: full up to 256 pieces, sorted beyond (6× cheaper).
    ``reg``: the MGC covariance regulariser (pixel units²); ``k``: candidate seams kept per
    piece edge; ``colour=False`` skips the channel-order stage. With ``return_stats``, also how
    many groups the merge left and how many pieces the final greedy fill placed, per image.

    >>> from ppml.ciphers import BlockScramble
    >>> from ppml.keys import BlockScrambleKey
    >>> x = smooth_test_image(32, seed=2)[None]
    >>> perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    >>> y = BlockScramble(key=BlockScrambleKey(perm.numpy(), image_size=32, block_size=8))(x)
    >>> sol = solve(y, 8, scheme="BlockScramble")
    >>> bool((sol.piece[0].reshape(-1) == torch.argsort(perm).numpy()).all())
    True
    """
    grid = _grid(y, block_size, "solve", value_range=(0.0, 1.0))
    scheme = _norm_scheme(scheme)
    if block_size < 2:
        raise ValueError("solve: block_size must be >= 2 (the compatibility needs a gradient inside each piece)")
    if grid[0] * grid[1] < 2:
        raise ValueError(f"solve: a {grid[0]}x{grid[1]} grid has a single piece; nothing to solve")
    check_positive_int(k, "k", "solve")
    if features not in ("auto", "full", "sorted", "invariant"):
        raise ValueError(f"solve: features must be 'auto', 'full', 'sorted' or 'invariant', got {features!r}")
    if features == "auto":
        features = "full" if grid[0] * grid[1] <= 256 else "sorted"
    pcs = to_pieces(y.detach().cpu(), int(block_size))
    parts, stats = [], []
    for n in range(pcs.shape[0]):
        piece, g, st, ncol = _solve_one(pcs[n], grid, scheme, reg=float(reg), k=int(k), features=features)
        d, lab = g % 8, g // 8
        if ncol == 1:
            negpos, chan = np.zeros_like(piece), np.zeros_like(piece)
        elif ncol == 2:
            negpos, chan = lab, np.zeros_like(piece)
            if colour:
                negpos, chan = _resolve_colour(pcs[n], piece, d, negpos, float(reg))
        else:
            npm = ncol // 2
            negpos, chan = lab // npm, lab % npm
        parts.append(Arrangement(piece, d, negpos, chan))
        stats.append(st)
    out = Arrangement.concat(parts)
    return (out, stats) if return_stats else out


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


# --------------------------------------------------------------------------------------------
# The attack on a batch, the sweep of notebook 03 and the augmentation study of notebook 02
# --------------------------------------------------------------------------------------------

SCORE_KEYS = ("direct", "neighbour", "largest_component", "colour", "ssim")


def jigsaw_attack(*, test_protected: torch.Tensor, block_size: int, scheme: str = "EtC",
                  truth: Arrangement | None = None, test_plain: torch.Tensor | None = None,
                  **solve_kwargs: Any) -> dict[str, Any]:
    """Solve the blocks of ``test_protected`` (ciphertext only), assemble and (given ``truth``
    and ``test_plain``, the plain images behind it) score: returns ``arrangement``,
    ``reconstruction`` (aligned to the truth when it is given), ``cpu_s`` and, with the truth,
    the mean scores of :func:`score`.

    >>> from ppml.ciphers import BlockScramble
    >>> from ppml.keys import BlockScrambleKey
    >>> x = smooth_test_image(32, seed=2)[None]
    >>> p = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    >>> y = BlockScramble(key=BlockScrambleKey(p.numpy(), image_size=32, block_size=8))(x)
    >>> r = jigsaw_attack(test_protected=y, block_size=8, scheme="BlockScramble",
    ...                   truth=true_arrangement(p, grid=(4, 4)), test_plain=x)
    >>> r["direct"], r["ssim"]
    (1.0, 1.0)
    """
    t0 = time.process_time()
    _grid(test_protected, block_size, "jigsaw_attack", name="test_protected", value_range=(0.0, 1.0))
    encrypted, original = test_protected, test_plain
    sol = solve(encrypted, block_size, scheme=scheme, **solve_kwargs)
    out: dict[str, Any] = {"arrangement": sol}
    if truth is not None:
        out.update(score(sol, truth, original=original, encrypted=encrypted if original is not None else None,
                         block_size=block_size))
        out["reconstruction"] = aligned_reconstruction(encrypted, sol, truth, block_size)
    else:
        out["reconstruction"] = assemble(encrypted, sol, block_size)
    out["cpu_s"] = time.process_time() - t0
    return out


@dataclass
class JigsawResults:
    """``record[name]`` — mean scores of a configuration (``direct``, ``neighbour``,
    ``largest_component``, ``colour``, ``ssim``) with ``pieces``, ``n_images`` and ``cpu_s``;
    ``examples[name]`` — the first image of it: ``original``, ``encrypted``, ``reconstruction``
    (uint8 ``(C, H, W)``)."""

    record: dict[str, dict[str, float]]
    examples: dict[str, dict[str, torch.Tensor]]

    def rows(self) -> list[dict[str, Any]]:
        """One table row per configuration (scores rounded to 3 decimals)."""
        return [{"configuration": k, **{m: (round(v, 3) if isinstance(v, float) else v) for m, v in r.items()}}
                for k, r in self.record.items()]


def _summ(res: dict[str, Any], pieces: int, n: int, cpu: float, scheme: str) -> dict[str, float]:
    d = {m: float(res[m]) for m in SCORE_KEYS if m in res and not (m == "colour" and scheme != "EtC")}
    d.update(pieces=int(pieces), n_images=int(n), cpu_s=round(float(cpu), 2))
    return d


def jigsaw_sweep(images_by_size: Mapping[int, torch.Tensor], schemes: Sequence[str] = SCHEMES,
                 blocks: Sequence[int] = (4, 8, 16), *, seed: int = 0, max_pieces: int | None = None,
                 **solve_kwargs: Any) -> JigsawResults:
    """The solver against every scheme × block size × image size (Chuman, Kurihara & Kiya's
    experiment): every image is encrypted under its own key (derived from ``seed``), solved
    from its ciphertext alone and scored against the truth. ``images_by_size``: size → uint8
    images ``(N, 3, size, size)`` (e.g. :func:`ppml.datasets.photo_crops`); configurations whose
    size is not a multiple of the block, or with more than ``max_pieces`` pieces, are skipped.
    Record keys are ``f"{scheme}-B{block}-{size}px"``.

    >>> x = {32: torch.stack([smooth_test_image(32, seed=s) for s in range(2)])}
    >>> res = jigsaw_sweep(x, blocks=(8,))
    >>> sorted(res.record), res.record["EtC-B8-32px"]["direct"]
    (['BlockScramble-B8-32px', 'EtC-B8-32px'], 1.0)
    """
    from ppml.ciphers import cipher_for
    from ppml.keys import BlockScrambleKey, EtCKey

    if not isinstance(images_by_size, Mapping) or not images_by_size:
        raise ValueError("jigsaw_sweep: images_by_size must be a non-empty mapping size -> images (N, C, size, size)")
    names = [_norm_scheme(s) for s in schemes]
    record: dict[str, dict[str, float]] = {}
    examples: dict[str, dict[str, torch.Tensor]] = {}
    for size, x in images_by_size.items():
        _grid(x, 1, "jigsaw_sweep", name=f"images_by_size[{size}]")
        if x.shape[-1] != int(size) or x.shape[-2] != int(size):
            raise ValueError(f"jigsaw_sweep: images given for size {size} are {tuple(x.shape[-2:])}")
        for si, scheme in enumerate(names):
            for b in blocks:
                if size % b or (size // b) ** 2 < 2 or (max_pieces is not None and (size // b) ** 2 > max_pieces):
                    continue
                t0 = time.process_time()
                sols, truths, encs = [], [], []
                for i in range(x.shape[0]):
                    ss = np.random.SeedSequence([int(seed), int(size), int(b), si, i])
                    kc = EtCKey if scheme == "EtC" else BlockScrambleKey
                    key = kc.generate(image_size=int(size), block_size=int(b), channels=x.shape[1], seed=ss)
                    y = cipher_for(key)(x[i:i + 1])
                    sols.append(solve(y, int(b), scheme=scheme, **solve_kwargs))
                    truths.append(true_arrangement(key))
                    encs.append(y)
                sol, tru, enc = Arrangement.concat(sols), Arrangement.concat(truths), torch.cat(encs)
                res = score(sol, tru, original=x, encrypted=enc, block_size=int(b))
                cpu = time.process_time() - t0
                name = f"{scheme}-B{b}-{size}px"
                record[name] = _summ(res, (size // b) ** 2, x.shape[0], cpu, scheme)
                examples[name] = {"original": x[0], "encrypted": enc[0],
                                  "reconstruction": aligned_reconstruction(enc[:1], sol[0], tru[0], int(b))[0]}
    return JigsawResults(record, examples)
