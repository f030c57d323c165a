"""Block geometry and the index-table builders shared by the block ciphers.

:class:`BlockGrid` owns the block arithmetic (image size, block size, grid shape, the
block ↔ image reshape, the flat index of a (block, offset) pair, the divisibility and
bounds checks); the table builders below and the batch transforms use it. The cipher core
that turns these tables into one fused gather lives in :mod:`ppml.ciphers.blocks`.

Conventions (all tables below follow them):

* images are ``(N, C, H, W)``; the flat byte index of ``(c, y, x)`` is ``c·H·W + y·W + x``;
* blocks of ``B×B`` pixels are numbered row-major, block ``i`` sits at block row
  ``i // (W/B)`` and block column ``i % (W/B)``; the offset of ``(c, r, s)`` inside a
  block is ``c·B·B + r·B + s``;
* every permutation is a gather, ``out[k] = in[index[k]]``;
* table builders accept key arrays with any leading (key) dimensions and return tables
  with the same leading dimensions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from ppml._checks import ShapeError
from ppml.keys import channel_permutations, normalize_image_size

__all__ = [
    "BlockGrid", "dihedral_table", "block_gather_index", "channel_local_index", "invert_gather",
    "nibble_fast_tables", "nibble_block_index",
]

# ----------------------------------------------------------------------------- geometry
def _positive_int(value: Any, what: str, who: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{who}{what} must be a positive int, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class BlockGrid:
    """Geometry of ``(C, H, W)`` images cut into ``B×B`` blocks, numbered row-major.

    The one home of the block arithmetic: grid shape, the block ↔ image reshape, the flat
    index of a (block, offset) pair, and the checks (positive sizes, H and W multiples of B).
    The offset of ``(c, r, s)`` inside a block is ``c·B·B + r·B + s``.

    >>> g = BlockGrid((16, 32), 8, channels=3)
    >>> g.shape, g.n_blocks, g.block_numel, g.numel
    ((2, 4), 8, 192, 1536)
    >>> BlockGrid(30, 8)
    Traceback (most recent call last):
    ...
    ValueError: image size 30x30 is not divisible by block size 8: expected H and W to be multiples of 8; crop or pad the images, or pick a block size that divides both
    """

    image_size: tuple[int, int]
    block_size: int
    channels: int = 1

    def __post_init__(self) -> None:
        self._validate("")

    def _validate(self, who: str) -> None:
        try:
            h, w = normalize_image_size(self.image_size)
        except ValueError as e:
            raise ValueError(f"{who}{e}") from None
        b = _positive_int(self.block_size, "block_size", who)
        c = _positive_int(self.channels, "channels", who)
        if h % b or w % b:
            raise ValueError(f"{who}image size {h}x{w} is not divisible by block size {b}: expected H and W to "
                             f"be multiples of {b}; crop or pad the images, or pick a block size that divides both")
        object.__setattr__(self, "image_size", (h, w))
        object.__setattr__(self, "block_size", b)
        object.__setattr__(self, "channels", c)

    @classmethod
    def of(cls, x: Any, block_size: int, *, who: str = "BlockGrid") -> "BlockGrid":
        """The grid of a batch ``x`` of shape ``(N, C, H, W)``; errors start with ``who``.

        >>> BlockGrid.of(torch.zeros(2, 3, 8, 12), 4).shape
        (2, 3)
        >>> BlockGrid.of(torch.zeros(2, 3, 8, 12), 8, who="scramble_blocks")
        Traceback (most recent call last):
        ...
        ValueError: scramble_blocks: image size 8x12 is not divisible by block size 8: expected H and W to be multiples of 8; crop or pad the images, or pick a block size that divides both
        """
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) != 4:
            raise ValueError(f"{who}: expected a batch of shape (N, C, H, W), got "
                             f"{'shape ' + str(shape) if hasattr(x, 'shape') else type(x).__name__}; "
                             f"use x.unsqueeze(0) for a single image")
        grid = object.__new__(cls)
        object.__setattr__(grid, "image_size", (shape[2], shape[3]))
        object.__setattr__(grid, "block_size", block_size)
        object.__setattr__(grid, "channels", max(int(shape[1]), 1))
        grid._validate(f"{who}: ")
        return grid

    # -- sizes -----------------------------------------------------------------------
    @property
    def rows(self) -> int:
        """Blocks per column of the grid, ``H / B``."""
        return self.image_size[0] // self.block_size

    @property
    def cols(self) -> int:
        """Blocks per row of the grid, ``W / B``."""
        return self.image_size[1] // self.block_size

    @property
    def shape(self) -> tuple[int, int]:
        """``(H / B, W / B)``."""
        return self.rows, self.cols

    @property
    def n_blocks(self) -> int:
        """Number of blocks."""
        return self.rows * self.cols

    @property
    def block_numel(self) -> int:
        """Values in one block, ``C·B·B``."""
        return self.channels * self.block_size ** 2

    @property
    def numel(self) -> int:
        """Values in one image, ``C·H·W``."""
        return self.channels * self.image_size[0] * self.image_size[1]

    # -- index arithmetic (numpy, broadcasting) ----------------------------------------
    def flat_layout(self) -> tuple[np.ndarray, np.ndarray]:
        """``(block, offset)`` of every flat index ``c·H·W + y·W + x``, two int64 arrays ``(C·H·W,)``.

        >>> [a.tolist() for a in BlockGrid((2, 4), 2).flat_layout()]
        [[0, 0, 1, 1, 0, 0, 1, 1], [0, 1, 0, 1, 2, 3, 2, 3]]
        """
        (h, w), b, c = self.image_size, self.block_size, self.channels
        cc, yy, xx = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
        block = (yy // b) * self.cols + xx // b
        offset = cc * b * b + (yy % b) * b + xx % b
        return block.reshape(-1), offset.reshape(-1)

    def flat_index(self, block: Any, offset: Any) -> np.ndarray:
        """Flat index ``c·H·W + y·W + x`` of offset ``offset`` in block ``block`` (broadcasting).

        >>> BlockGrid((2, 4), 2).flat_index(np.array([1, 1]), np.array([0, 3])).tolist()
        [2, 7]
        """
        # one lookup in the (n_blocks, C·B·B) table, not six array divisions: this runs over
        # (keys, C·H·W) arrays when the tables of thousands of keys are built
        block, offset = np.asarray(block, np.int64), np.asarray(offset, np.int64)
        return self._flat_table()[block * self.block_numel + offset]

    def _flat_table(self) -> np.ndarray:
        table = self.__dict__.get("_table")
        if table is None:
            (h, w), b = self.image_size, self.block_size
            block = np.arange(self.n_blocks)[:, None]
            offset = np.arange(self.block_numel)[None, :]
            c, r, s = offset // (b * b), (offset // b) % b, offset % b
            table = (c * h * w + ((block // self.cols) * b + r) * w + (block % self.cols) * b + s).reshape(-1)
            object.__setattr__(self, "_table", table)
        return table

    # -- block <-> image (torch, any dtype) ----------------------------------------------
    def _check_batch(self, x: torch.Tensor, who: str) -> None:
        (h, w), c = self.image_size, self.channels
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w):
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise (ShapeError if isinstance(x, torch.Tensor) else TypeError)(
                f"{who}: expected a tensor of shape (N, {c}, {h}, {w}) (this grid's), got {got}")

    def to_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` → ``(N, n_blocks, C, B, B)`` (a copy), blocks row-major.

        >>> g = BlockGrid((2, 4), 2)
        >>> g.to_blocks(torch.arange(8).reshape(1, 1, 2, 4))[0, :, 0].tolist()
        [[[0, 1], [4, 5]], [[2, 3], [6, 7]]]
        """
        self._check_batch(x, "BlockGrid.to_blocks")
        n, c, b = x.shape[0], self.channels, self.block_size
        return (x.reshape(n, c, self.rows, b, self.cols, b).permute(0, 2, 4, 1, 3, 5)
                .reshape(n, self.n_blocks, c, b, b))

    def from_blocks(self, blocks: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_blocks`: ``(N, n_blocks, C, B, B)`` → ``(N, C, H, W)``.

        >>> g = BlockGrid((4, 4), 2, channels=3)
        >>> x = torch.rand(2, 3, 4, 4)
        >>> torch.equal(g.from_blocks(g.to_blocks(x)), x)
        True
        """
        c, b = self.channels, self.block_size
        if not isinstance(blocks, torch.Tensor) or blocks.dim() != 5 or \
                tuple(blocks.shape[1:]) != (self.n_blocks, c, b, b):
            got = f"shape {tuple(blocks.shape)}" if isinstance(blocks, torch.Tensor) else type(blocks).__name__
            raise ValueError(f"BlockGrid.from_blocks: expected a tensor of shape (N, {self.n_blocks}, {c}, {b}, {b}), "
                             f"got {got}")
        n, (h, w) = blocks.shape[0], self.image_size
        return (blocks.reshape(n, self.rows, self.cols, c, b, b).permute(0, 3, 1, 4, 2, 5)
                .reshape(n, c, h, w))

    def permute_blocks(self, x: torch.Tensor, perms: torch.Tensor, *,
                       who: str = "BlockGrid.permute_blocks") -> torch.Tensor:
        """Permute the blocks of every image, exactly, for any dtype: output block ``i`` of image
        ``k`` is its input block ``perms[k, i]`` (``perms`` ``(n_blocks,)`` for the whole batch
        or ``(N, n_blocks)``, one permutation per image; integer, on ``x``'s device). One gather.
        Errors start with ``who``.

        >>> g = BlockGrid((2, 4), 2)
        >>> g.permute_blocks(torch.arange(8).reshape(1, 1, 2, 4), torch.tensor([1, 0]))[0, 0].tolist()
        [[2, 3, 0, 1], [6, 7, 4, 5]]
        """
        self._check_batch(x, who)
        n, nb = x.shape[0], self.n_blocks
        if not isinstance(perms, torch.Tensor) or perms.is_floating_point() or perms.is_complex() \
                or perms.dtype == torch.bool:
            got = perms.dtype if isinstance(perms, torch.Tensor) else type(perms).__name__
            raise ValueError(f"{who}: perms must be an integer tensor (integer block indices), got {got}; "
                             f"use torch.as_tensor(perms, dtype=torch.long)")
        if tuple(perms.shape) == (nb,):
            perms = perms.expand(n, -1)
        if tuple(perms.shape) != (n, nb):
            raise ValueError(f"{who}: perms must have shape ({nb},) or ({n}, {nb}) for {n} images "
                             f"of {nb} blocks, got {tuple(perms.shape)}")
        if perms.device != x.device:
            raise ValueError(f"{who}: perms is on {perms.device} but the images are on {x.device}: "
                             f"use perms.to(x.device)")
        if n and nb:
            lo, hi = torch.aminmax(perms)
            if int(lo) < 0 or int(hi) >= nb:
                raise ValueError(f"{who}: block indices must lie in 0..{nb - 1}, got "
                                 f"{int(lo) if int(lo) < 0 else int(hi)}")
        blocks = self.to_blocks(x)
        # whole blocks as rows of one (N·n_blocks, C·B·B) table: one index_select of rows (a
        # copy of each block) beats a gather of every element by ~1.4x on CPU
        rows = (perms.long() + torch.arange(n, device=x.device)[:, None] * nb).reshape(-1)
        out = blocks.reshape(n * nb, self.block_numel).index_select(0, rows)
        return self.from_blocks(out.reshape(blocks.shape))


# ----------------------------------------------------------------------------- tables
def dihedral_table(block_size: int) -> np.ndarray:
    """Gather tables of the 8 rotation/flip codes, shape ``(8, B, B)``.

    ``table[code, r, s]`` is the flat local index ``r'·B + s'`` of the source pixel of
    output pixel ``(r, s)`` when the block is rotated by ``90°·(code mod 4)`` as
    ``numpy.rot90`` does over (H, W), then flipped left–right if ``code >= 4``. Applying a
    spatial permutation to an image of indices yields its gather table, so this is literally
    ``rot90``/``fliplr`` of ``arange(B·B)``.

    >>> dihedral_table(2)[1].tolist()  # rot90 of [[0, 1], [2, 3]]
    [[1, 3], [0, 2]]
    >>> dihedral_table(2)[4].tolist()  # fliplr only
    [[1, 0], [3, 2]]
    """
    base = np.arange(block_size * block_size, dtype=np.int64).reshape(block_size, block_size)
    rots = [np.rot90(base, k) for k in range(4)]
    return np.stack(rots + [np.fliplr(r) for r in rots])


def block_gather_index(image_size: tuple[int, int], block_size: int, channels: int,
                       block_perm: np.ndarray, local: np.ndarray | None = None) -> np.ndarray:
    """Flat gather index of a block-wise permutation, shape ``(..., C·H·W)``.

    Output block ``i`` is built from input block ``block_perm[..., i]``; within it, the
    output value at offset ``o`` (``c·B·B + r·B + s``) is the source block's value at
    offset ``local[..., i, o]``. ``local=None`` moves blocks unchanged. Leading (key)
    dimensions of ``block_perm`` / ``local`` carry through.

    >>> block_gather_index((2, 4), 2, 1, np.array([1, 0])).reshape(2, 4).tolist()
    [[2, 3, 0, 1], [6, 7, 4, 5]]
    >>> block_gather_index((2, 4), 2, 1, np.array([[0, 1], [1, 0]])).shape  # two keys
    (2, 8)
    """
    grid = BlockGrid(image_size, block_size, channels)
    out_block, out_offset = grid.flat_layout()
    src_block = np.asarray(block_perm, dtype=np.int64)[..., out_block]
    src_offset = out_offset if local is None else np.asarray(local, dtype=np.int64)[..., out_block, out_offset]
    return grid.flat_index(src_block, src_offset)


def channel_local_index(block_size: int, channels: int, rot_flip: np.ndarray | None,
                        channel_perm: np.ndarray | None, n_blocks: int) -> np.ndarray:
    """Per-block local gather tables for a rotation/flip then a channel shuffle, ``(..., n, C·B·B)``.

    >>> channel_local_index(1, 3, None, np.array([5]), 1).tolist()  # code 5 = (2, 1, 0)
    [[2, 1, 0]]
    """
    b, c = block_size, channels
    zeros = np.zeros(n_blocks, np.int64)
    spatial = dihedral_table(b)[zeros if rot_flip is None else np.asarray(rot_flip, np.int64)]  # (..., n, B, B)
    chans = channel_permutations(c)[zeros if channel_perm is None else np.asarray(channel_perm, np.int64)]
    local = chans[..., :, :, None, None] * b * b + spatial[..., :, None, :, :]  # (..., n, C, B, B)
    return local.reshape(local.shape[:-3] + (c * b * b,))


def invert_gather(index: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``y = x[index] ^ mask`` (along the last axis): ``(inv_index, inv_mask)``
    with ``x = y[inv_index] ^ inv_mask``. ``index`` must be a permutation along its last axis.

    >>> i, m = invert_gather(np.array([2, 0, 1]), np.array([0, 255, 0]))
    >>> i.tolist(), m.tolist()
    ([1, 2, 0], [255, 0, 0])
    """
    # a scatter, not an argsort: O(D) per key, which matters for thousands of keys (torch's
    # scatter/gather here, several times faster than numpy's put/take_along_axis)
    index = torch.from_numpy(np.ascontiguousarray(index, dtype=np.int64))
    mask = torch.from_numpy(np.require(np.asarray(mask, dtype=np.int64), requirements=["C", "W"])).expand(index.shape)
    inv = torch.empty_like(index).scatter_(-1, index, torch.arange(index.shape[-1]).expand(index.shape))
    return inv.numpy(), torch.gather(mask, -1, inv).numpy()


def nibble_fast_tables(nibble_index: np.ndarray, nibble_mask: np.ndarray) -> dict[str, np.ndarray]:
    """Turn a gather over the ``2·D`` nibbles of an image into per-byte tables (last axis).

    The nibble vector of a flat image ``x`` (``D`` bytes) is ``[x & 15 | x >> 4]``; a
    nibble cipher is ``n_out = n_in[nibble_index] ^ nibble_mask``. Output byte ``p`` gets its
    low nibble from nibble ``g = nibble_index[p]`` — byte ``g mod D``, right-shifted by
    ``4·(g // D)`` — and its high nibble from ``g' = nibble_index[D + p]`` — byte
    ``g' mod D``, left-shifted by 4 if it is a low nibble. Returns ``index_lo, shift_lo,
    index_hi, shift_hi, mask`` (the byte mask ``mask_lo | mask_hi << 4``).

    >>> t = nibble_fast_tables(np.array([3, 2, 1, 0]), np.array([0, 15, 0, 0]))  # D = 2, reverse
    >>> [t[k].tolist() for k in ("index_lo", "shift_lo", "index_hi", "shift_hi", "mask")]
    [[1, 0], [4, 4], [1, 0], [4, 4], [0, 15]]
    """
    d = nibble_index.shape[-1] // 2
    g_lo, g_hi = nibble_index[..., :d], nibble_index[..., d:]
    return {
        "index_lo": g_lo % d,
        "shift_lo": np.where(g_lo >= d, 4, 0),
        "index_hi": g_hi % d,
        "shift_hi": np.where(g_hi < d, 4, 0),
        "mask": nibble_mask[..., :d] | (nibble_mask[..., d:] << 4),
    }


def nibble_block_index(image_size: tuple[int, int], block_size: int, channels: int,
                       block_perm: np.ndarray | None, perm: np.ndarray, invert: np.ndarray,
                       key_by_source: bool) -> tuple[np.ndarray, np.ndarray]:
    """Global nibble gather index and nibble mask (both ``(..., 2·C·H·W)``) of LE / ELE.

    Within a block, bytes are flattened in (row, col, channel) order and nibbles laid out as
    ``[low | high]`` (length ``L = 2·B·B·C``); ``perm``/``invert`` have shape ``(..., R, L)``.
    Output block ``i`` is built from input block ``block_perm[..., i]`` (``i`` if None) with
    key row ``block_perm[..., i]`` if ``key_by_source`` else row 0. Global nibble ``g`` is the
    low (``g < D``) or high nibble of flat byte ``g mod D``. Leading (key) dimensions carry.

    >>> i, m = nibble_block_index((1, 1), 1, 1, None, np.array([[1, 0]]), np.array([[1, 0]]), False)
    >>> i.tolist(), m.tolist()  # swap the two nibbles, invert the new low one
    ([1, 0], [15, 0])
    """
    grid = BlockGrid(image_size, block_size, channels)
    b, c, d = block_size, channels, grid.numel
    bb, bbc = b * b, b * b * channels
    out_block, offset = grid.flat_layout()
    oc, orow, ocol = offset // bb, (offset // b) % b, offset % b
    j = (np.arange(2)[:, None] * bbc + (orow * b + ocol) * c + oc).reshape(-1)  # output nibble in its block
    out_block = np.tile(out_block, 2)
    perm, invert = np.asarray(perm, np.int64), np.asarray(invert, np.int64)
    lead, n_rows, n_nib = perm.shape[:-2], perm.shape[-2], perm.shape[-1]
    src_block = out_block if block_perm is None else np.asarray(block_perm, np.int64)[..., out_block]
    key_row = src_block if key_by_source else np.zeros_like(out_block)
    at = np.broadcast_to(key_row * n_nib + j, lead + (2 * d,))
    k = np.take_along_axis(perm.reshape(lead + (n_rows * n_nib,)), at, axis=-1)
    m = np.take_along_axis(invert.reshape(lead + (n_rows * n_nib,)), at, axis=-1) * 15
    s_half, t = k // bbc, k % bbc
    src = grid.flat_index(src_block, (t % c) * bb + (t // (b * c)) * b + (t // c) % b)
    return s_half * d + src, m
