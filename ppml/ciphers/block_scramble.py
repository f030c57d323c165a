"""Block scrambling (Chuman & Kiya; paper 02): a secret permutation of block positions.

``block_perm`` is a gather over blocks numbered row-major: output block i is input block
``block_perm[i]``; the content of each block is unchanged. There is no public reference
code for this scheme; the paper's 8×8 blocks on 32×32 images give a 16! key space.
"""

from __future__ import annotations

import numpy as np

from ppml.ciphers.blocks import ByteCipher
from ppml.ciphers.grid import block_gather_index
from ppml.keys import BlockScrambleKey

__all__ = ["BlockScramble"]


class BlockScramble(ByteCipher):
    """Block-position scrambling; ``forward`` encrypts ``(N, C, H, W)``, ``inverse`` decrypts.

    Args:
        key: a :class:`~ppml.keys.BlockScrambleKey`.
        block_size: optional; if given it must equal ``key.block_size``.

    >>> import torch
    >>> from ppml.keys import BlockScrambleKey
    >>> key = BlockScrambleKey(np.array([1, 0]), image_size=(2, 4), block_size=2, channels=1)
    >>> x = torch.arange(8, dtype=torch.uint8).reshape(1, 1, 2, 4)
    >>> BlockScramble(key=key)(x)[0, 0].tolist()  # the two 2x2 blocks swap places
    [[2, 3, 0, 1], [6, 7, 4, 5]]
    """

    key_type = BlockScrambleKey

    def _tables(self, a):
        index = block_gather_index(self.image_size, self.block_size, self.channels, a["block_perm"])
        return index, np.zeros(index.shape[-1:], np.int64)
