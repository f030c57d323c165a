"""ELE — extended learnable encryption (Madono, Tanaka, Onishi & Ogawa 2020).

LE (see :mod:`ppml.ciphers.le`) with a *different* key for every block, indexed by the
source block, followed by a shuffle of block locations: output block i is input block
``block_perm[i]`` encrypted with the LE key ``(perm[block_perm[i]], invert[block_perm[i]])``.
The reference uses 4×4 blocks on 32×32 images (64 blocks).
"""

from __future__ import annotations

from ppml.ciphers.blocks import NibbleCipher
from ppml.ciphers.grid import nibble_block_index
from ppml.keys import ELEKey

__all__ = ["ELE"]


class ELE(NibbleCipher):
    """Extended learnable encryption; ``forward`` encrypts, ``inverse`` decrypts.

    Args:
        key: an :class:`~ppml.keys.ELEKey`.
        block_size: optional; if given it must equal ``key.block_size``.

    >>> import torch
    >>> from ppml.keys import ELEKey
    >>> ele = ELE(key=ELEKey.generate(image_size=32, block_size=4, seed=0))
    >>> x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    >>> y = ele(x)
    >>> bool((y != x).any()), torch.equal(ele.inverse(y), x)
    (True, True)
    """

    key_type = ELEKey

    def _nibble_tables(self, a):
        return nibble_block_index(self.image_size, self.block_size, self.channels, a["block_perm"],
                                  a["perm"], a["invert"], key_by_source=True)
