"""Secret keys for the block ciphers in :mod:`ppml.ciphers`.

A key is a small immutable object holding read-only integer numpy arrays plus the geometry
it was made for (image size, block size, channels). Every key class offers

* ``generate(image_size=..., block_size=..., channels=3, seed=None)`` — fresh OS entropy
  when ``seed`` is None (``numpy.random.default_rng()`` seeds PCG64 with 128 bits from the
  OS via :mod:`secrets`), reproducible when a seed is given (an ``int``, a
  ``numpy.random.SeedSequence`` or a ``numpy.random.Generator``). A seed is for
  reproducibility only: anyone who knows it knows the key. The draws made for each
  scheme are listed in its ``generate`` docstring and are part of the key-file format.
* ``save(path)`` and the module-level :func:`load` (versioned JSON, written atomically,
  validated on reading),
* ``key_space_bits()`` — log2 of the number of distinct keys of that scheme and geometry.
  This counts keys, not generator entropy: a generated key never carries more than the
  128 bits of OS entropy that seeded it.

Canonical encodings (shared with :mod:`ppml.ciphers`, which documents them in full):
blocks are numbered row-major; every permutation is a *gather*, ``out[i] = in[perm[i]]``;
channel codes index ``itertools.permutations(range(C))`` in order (the six permutations
of ``(0, 1, 2)`` for colour images; a grey image has the single code 0, so its channel
shuffle is the identity and adds nothing to the key space).

Keys are secrets: ``repr`` shows the scheme, the geometry and a short salted fingerprint
(see :attr:`Key.fingerprint`), never the arrays.

>>> key = EtCKey.generate(image_size=32, block_size=16, seed=0)
>>> key  # doctest: +ELLIPSIS
EtCKey(scheme='etc', image_size=(32, 32), block_size=16, channels=3, fingerprint='...')
>>> round(key.key_space_bits(), 1)
30.9
"""

from ppml.keys._base import (KEY_FORMAT, KEY_FORMAT_VERSION, Key, _rebuild, channel_permutations,  # noqa: F401
                             check_geometry, normalize_image_size)
from ppml.keys._schemes import BlockScrambleKey, ELEKey, EtCKey, LEKey, PEKey
from ppml.keys._io import SCHEMES, load

__all__ = [
    "Key", "EtCKey", "BlockScrambleKey", "PEKey", "LEKey", "ELEKey",
    "load", "KEY_FORMAT", "KEY_FORMAT_VERSION", "SCHEMES", "channel_permutations",
]
