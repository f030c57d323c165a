"""Jigsaw pieces: the group of piece transforms (8 dihedral codes × negative–positive bit, channel
orders), :class:`Arrangement`, cutting and assembling pieces, and the true arrangement of a key.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ppml._checks import ShapeError, check_images, check_positive_int
from ppml.ciphers.blocks import BlockGrid


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
