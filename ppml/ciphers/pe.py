"""PE — pixel-based encryption (Sirichotedumrong, Kinoshita & Kiya 2019).

Per pixel, with no blocks (block size 1):

1. ``negpos`` of shape (C, H, W): the value at ``(c, y, x)`` becomes ``v ^ 255`` where 1;
2. ``channel_perm`` of shape (H, W) then shuffles the channels of each pixel as in EtC
   step 4: output channel j takes channel ``perm[j]`` of the negated pixel, where ``perm``
   is entry ``channel_perm[y, x]`` of ``itertools.permutations(range(C))``.

So ``out[j, y, x] = in[perm[j], y, x] ^ 255·negpos[perm[j], y, x]``. The keys are fixed
for a data set ("without key management": the same key for training and test).

Known deviations of the reference code (REFERENCE_FACTS.md), not reproduced: ScrambleMix's
code stores the inversion bits with the opposite meaning (1 = keep), its channel shuffle
duplicates channels for 5 of the 6 codes (not invertible), and it fed the network values
in [0, 255]. Convert such a key with ``negpos = 1 - bits``; the duplicating shuffle has
no canonical equivalent.
"""

from __future__ import annotations

import numpy as np

from ppml.ciphers.blocks import ByteCipher
from ppml.keys import PEKey, channel_permutations

__all__ = ["PE"]


class PE(ByteCipher):
    """Pixel-based encryption; ``forward`` encrypts ``(N, C, H, W)``, ``inverse`` decrypts.

    Args:
        key: a :class:`~ppml.keys.PEKey`.
        block_size: optional; PE has no blocks, so if given it must be 1.

    >>> import torch
    >>> from ppml.keys import PEKey
    >>> key = PEKey(negpos=np.array([[[1]], [[0]], [[0]]]), channel_perm=np.array([[3]]))
    >>> x = torch.tensor([10, 20, 30], dtype=torch.uint8).reshape(1, 3, 1, 1)
    >>> PE(key=key)(x).flatten().tolist()  # negate channel 0 -> (245, 20, 30); code 3 = (1, 2, 0)
    [20, 30, 245]
    """

    key_type = PEKey
    has_blocks = False

    def _tables(self, a):
        (h, w), c = self.image_size, self.channels
        perms = channel_permutations(c)[a["channel_perm"]]  # (K, H, W, C): source channel of channel j
        src_c = np.moveaxis(perms, -1, -3)  # (K, C, H, W)
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        index = (src_c * h * w + yy * w + xx).reshape(src_c.shape[0], -1)
        # the negation travels with its source value
        mask = np.take_along_axis((255 * np.asarray(a["negpos"], np.int64)).reshape(index.shape), index, axis=-1)
        return index, mask
