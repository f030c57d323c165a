"""Invertible, batched block ciphers for privacy-preserving image classification.

Each cipher is a ``torch.nn.Module`` built from a key of :mod:`ppml.keys` (keyword-only:
``EtC(key=..., block_size=...)``); ``forward(x)`` encrypts a batch ``(N, C, H, W)`` and
``inverse(y)`` decrypts it exactly. uint8 in → uint8 out, bit-exact; float in [0, 1] in →
the uint8 result / 255 out (see :mod:`ppml.ciphers.blocks`). With its key fixed, each
cipher is one precomputed gather plus an XOR mask, held as buffers (so ``state_dict()``
contains the key's tables — treat it as a secret) that move with ``.to(device)``.

* :class:`EtC` (:class:`~ppml.keys.EtCKey`): block shuffle, rotate/flip, negate, channel shuffle;
* :class:`BlockScramble` (:class:`~ppml.keys.BlockScrambleKey`): block shuffle only;
* :class:`PE` (:class:`~ppml.keys.PEKey`): per-pixel negate and channel shuffle;
* :class:`LE` (:class:`~ppml.keys.LEKey`): one nibble permutation + inversion for every block;
* :class:`ELE` (:class:`~ppml.keys.ELEKey`): per-block LE keys, then a block shuffle.

A key *set* — ``EtC.from_keys(keys)`` or ``cipher_for(keys)`` — stacks K keys' tables once;
``cipher(x, key_ids)`` / ``cipher.inverse(y, key_ids)`` then use key ``key_ids[n]`` for image
``n`` in the same single gather (see :mod:`ppml.ciphers.blocks`); :func:`stack_ciphers` makes
that set from single-key ciphers already built. :class:`BlockGrid` is the
block geometry every block-based transform shares.

Randomised encoders that have no inverse (ScrambleMix, InstaHide, DataMix) live in
:mod:`ppml.encoders`.

>>> import torch
>>> from ppml.keys import EtCKey
>>> cipher = cipher_for(EtCKey.generate(image_size=32, block_size=8, seed=0))
>>> type(cipher).__name__, cipher.block_size, cipher.image_size
('EtC', 8, (32, 32))
>>> x = torch.rand(4, 3, 32, 32)
>>> torch.allclose(cipher.inverse(cipher(x)), x, atol=0.5 / 255)  # float input is quantised to 8 bits
True
"""

from __future__ import annotations

from typing import Any, Iterable

from ppml.ciphers.block_scramble import BlockScramble
from ppml.ciphers.blocks import ByteCipher, Cipher, NibbleCipher, stack_ciphers
from ppml.ciphers.ele import ELE
from ppml.ciphers.grid import BlockGrid
from ppml.ciphers.etc import EtC
from ppml.ciphers.le import LE
from ppml.ciphers.pe import PE
from ppml.keys import BlockScrambleKey, EtCKey, ELEKey, Key, LEKey, PEKey

__all__ = ["BlockGrid", "Cipher", "ByteCipher", "NibbleCipher", "EtC", "BlockScramble", "PE", "LE", "ELE",
           "cipher_for", "stack_ciphers", "CIPHERS"]

#: key class → cipher class
CIPHERS: dict[type[Key], type[Cipher]] = {
    EtCKey: EtC, BlockScrambleKey: BlockScramble, PEKey: PE, LEKey: LE, ELEKey: ELE,
}


def cipher_for(key: Key | Iterable[Key], **kw: Any) -> Cipher:
    """Build the cipher of ``key``'s scheme; ``kw`` (e.g. ``block_size``) go to its constructor.

    Given a sequence of keys (one scheme, one geometry), build the key-set cipher
    (:meth:`Cipher.from_keys`): ``forward(x, key_ids)`` encrypts image n with key ``key_ids[n]``.

    >>> from ppml.keys import LEKey
    >>> cipher_for(LEKey.generate(image_size=32, block_size=4, seed=0))  # doctest: +ELLIPSIS
    LE(image_size=(32, 32), block_size=4, channels=3, key='...')
    >>> cipher_for([LEKey.generate(image_size=32, block_size=4, seed=s) for s in range(3)])
    LE(image_size=(32, 32), block_size=4, channels=3, num_keys=3)
    """
    if isinstance(key, Key):
        return _cipher_class(key)(key=key, **kw)
    if isinstance(key, (str, bytes)) or not isinstance(key, Iterable):
        _cipher_class(key)  # raises: not a key
    keys = list(key)
    if not keys:
        raise ValueError("cipher_for: the key set is empty: expected at least one key")
    return _cipher_class(keys[0]).from_keys(keys, **kw)


def _cipher_class(key: Any) -> type[Cipher]:
    for cls in type(key).__mro__:
        if cls in CIPHERS:
            return CIPHERS[cls]
    raise ValueError(f"no cipher for {type(key).__name__}: expected one of "
                     f"{', '.join(k.__name__ for k in CIPHERS)} (or a sequence of keys of one scheme)")
