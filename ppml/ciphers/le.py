"""LE — learnable image encryption (Tanaka 2018).

The image is split into ``B×B`` blocks and the *same* key is used for every block. A
block's ``B·B·C`` bytes, flattened in (row, col, channel) order, are split into 4-bit
nibbles laid out as ``[all low nibbles | all high nibbles]`` (length ``L = 2·B·B·C``);
then ``out[j] = in[perm[j]] ^ (0xF if invert[j])``; the nibbles are recombined into bytes
in the same layout. Tanaka uses B = 4 on CIFAR (L = 96).

Tanaka's reference code (``BlockScramble.doScramble``) derives its inversion set from the
permutation, ``rev = key > L/2``, and inverts before and after the gather;
:meth:`ppml.keys.LEKey.from_reference` converts such a key to this canonical form, and the
output then equals the reference bit for bit. (The network input in the reference
recombines the nibbles into 2·C channels; that belongs to the adaptation network, not to
the cipher.)
"""

from __future__ import annotations

from ppml.ciphers.blocks import NibbleCipher
from ppml.ciphers.grid import nibble_block_index
from ppml.keys import LEKey

__all__ = ["LE"]


class LE(NibbleCipher):
    """Learnable encryption; ``forward`` encrypts ``(N, C, H, W)``, ``inverse`` decrypts.

    Args:
        key: an :class:`~ppml.keys.LEKey`.
        block_size: optional; if given it must equal ``key.block_size``.

    >>> import numpy as np, torch
    >>> from ppml.keys import LEKey
    >>> ref = np.random.default_rng(0).permutation(96)  # a key of Tanaka's code
    >>> le = LE(key=LEKey.from_reference(ref, image_size=32), block_size=4)
    >>> x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    >>> torch.equal(le.inverse(le(x)), x)
    True
    """

    key_type = LEKey

    def _nibble_tables(self, a):
        return nibble_block_index(self.image_size, self.block_size, self.channels, None,
                                  a["perm"][:, None], a["invert"][:, None], key_by_source=False)
