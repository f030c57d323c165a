"""EtC — encryption-then-compression (Chuman, Sirichotedumrong & Kiya; paper 03, Fig. 2).

The image is split into ``B×B`` blocks (numbered row-major) and, in this order:

1. ``block_perm`` permutes block positions: output block i is input block ``block_perm[i]``;
2. for the block now at output position i, ``rot_flip[i]`` ∈ 0..7 rotates it by
   ``90°·(code mod 4)`` as ``numpy.rot90``/``torch.rot90`` over (H, W) does, then flips it
   left–right if ``code >= 4`` (the 8-element dihedral group);
3. ``negpos[i] = 1`` maps every value v of the block to ``v ^ 255`` (all channels);
4. ``channel_perm[i]`` ∈ 0..5 indexes ``itertools.permutations((0, 1, 2))``; output channel
   j takes input channel ``perm[j]``. Grey images (C = 1) have only code 0: no shuffle.

Block size 16 makes EtC images JPEG-compatible; 4 or 8 are used in the learning papers.

Known deviations of the authors' group code (REFERENCE_FACTS.md), *not* reproduced here —
this module implements the paper's definition only: one re-implementation draws 4 rotation
× 3 flip codes (12 combinations, not the 8 of the dihedral group) and forces exactly half of
the blocks to be inverted; its channel shuffle assigns numpy views in sequence, so 5 of the
6 codes duplicate a channel instead of permuting it (not invertible); another port uses
half-open ranges so "no rotation", "no flip" and channel code 5 never occur. No notebook
needs those variants to reproduce a published number, so there is no ``compat`` option.
"""

from __future__ import annotations

import numpy as np

from ppml.ciphers.blocks import ByteCipher
from ppml.ciphers.grid import block_gather_index, channel_local_index
from ppml.keys import EtCKey

__all__ = ["EtC"]


class EtC(ByteCipher):
    """EtC block cipher; ``forward`` encrypts ``(N, C, H, W)``, ``inverse`` decrypts.

    Args:
        key: an :class:`~ppml.keys.EtCKey`.
        block_size: optional; if given it must equal ``key.block_size``.

    >>> import torch
    >>> from ppml.keys import EtCKey
    >>> key = EtCKey.generate(image_size=32, block_size=16, seed=0)
    >>> etc = EtC(key=key, block_size=16)
    >>> x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    >>> y = etc(x)
    >>> y.dtype, bool((y != x).any()), torch.equal(etc.inverse(y), x)
    (torch.uint8, True, True)
    >>> torch.equal(etc(x / 255), y / 255)  # float in [0, 1]: the uint8 result / 255
    True
    """

    key_type = EtCKey

    def _tables(self, a):
        grid = self.grid
        local = channel_local_index(grid.block_size, grid.channels, a["rot_flip"], a["channel_perm"], grid.n_blocks)
        index = block_gather_index(grid.image_size, grid.block_size, grid.channels, a["block_perm"], local)
        out_block, _ = grid.flat_layout()
        # negpos belongs to the *output* block and covers all its channels
        return index, 255 * np.asarray(a["negpos"], np.int64)[..., out_block]
