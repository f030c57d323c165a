"""The five key classes (EtC, block scrambling, PE, LE, ELE; see :mod:`ppml.keys`)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np


from ppml.keys._base import (_MAX_CHANNELS, Key, _as_int, _check_bounds, _keys_from_stack, _log2_factorial, _rng,
                             _seed_many,
                             check_geometry, normalize_image_size)

# ----------------------------------------------------------------------------- EtC
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class EtCKey(Key):
    """Key of the EtC cipher (Chuman, Sirichotedumrong & Kiya; paper 03, Fig. 2).

    Arrays (``n`` = number of blocks, row-major):

    * ``block_perm`` (n,): permutation of block positions, ``out[i] = in[block_perm[i]]``;
    * ``rot_flip`` (n,) in 0..7: for the block now at output position i, rotate by
      ``90° · (code mod 4)`` as ``numpy.rot90`` over (H, W), then flip left–right if
      ``code >= 4`` (the 8-element dihedral group);
    * ``negpos`` (n,) in {0, 1}: 1 maps every value v of the block to ``v ^ 255``;
    * ``channel_perm`` (n,) in 0..C!-1: indexes ``itertools.permutations(range(C))``; output
      channel j takes input channel ``perm[j]``. For grey images (C = 1) the only code is 0.

    >>> key = EtCKey.generate(image_size=32, block_size=16, seed=0)
    >>> key.block_perm.shape, bool(key.rot_flip.max() < 8), key.block_perm.flags.writeable
    ((4,), True, False)
    >>> round(key.key_space_bits(), 2)  # log2(4! * 8**4 * 2**4 * 6**4)
    30.92
    """

    scheme: ClassVar[str] = "etc"
    _ARRAYS: ClassVar[tuple[str, ...]] = ("block_perm", "rot_flip", "negpos", "channel_perm")

    block_perm: np.ndarray
    rot_flip: np.ndarray
    negpos: np.ndarray
    channel_perm: np.ndarray
    image_size: tuple[int, int] = dataclasses.field(kw_only=True)
    block_size: int = dataclasses.field(kw_only=True)
    channels: int = dataclasses.field(default=3, kw_only=True)

    def _validate_geometry(self) -> None:
        super()._validate_geometry()
        if self.channels > _MAX_CHANNELS:
            raise ValueError(f"EtCKey: channels must be 1..{_MAX_CHANNELS} (3 for colour, 1 for grey), "
                             f"got {self.channels}")

    def _array_specs(self):
        n = self.n_blocks
        return {"block_perm": ((n,), n, "perm"), "rot_flip": ((n,), 8, "values"),
                "negpos": ((n,), 2, "values"),
                "channel_perm": ((n,), math.factorial(self.channels), "values")}

    @classmethod
    def generate(cls, *, image_size: Any, block_size: int, channels: int = 3,
                 seed: Any = None) -> "EtCKey":
        """Draw a uniformly random key.

        Draws, in order: ``permutation(n)``, ``integers(0, 8, n)``, ``integers(0, 2, n)``,
        ``integers(0, C!, n)`` from ``numpy.random.default_rng(seed)``.

        >>> EtCKey.generate(image_size=32, block_size=16, seed=3) == EtCKey.generate(
        ...     image_size=32, block_size=16, seed=3)
        True
        """
        (h, w), b = check_geometry(image_size, block_size)
        c = _as_int(channels, "channels")
        if c > _MAX_CHANNELS:
            raise ValueError(f"EtCKey: channels must be 1..{_MAX_CHANNELS}, got {c}")
        rng, n = _rng(seed), (h // b) * (w // b)
        return cls(rng.permutation(n), rng.integers(0, 8, n), rng.integers(0, 2, n),
                   rng.integers(0, math.factorial(c), n), image_size=(h, w), block_size=b, channels=c)

    @classmethod
    def generate_many(cls, n: int, *, image_size: Any, block_size: int, channels: int = 3,
                      seed: Any = None) -> list["EtCKey"]:
        """``n`` independent uniformly random keys, drawn at once (vectorised; a key set for
        ``EtC.from_keys``). Draws, in order: ``permuted`` rows of ``arange(nb)`` (shape
        ``(n, nb)``), ``integers(0, 8, (n, nb))``, ``integers(0, 2, (n, nb))``,
        ``integers(0, C!, (n, nb))`` from ``default_rng(seed)``.

        >>> ks = EtCKey.generate_many(3, image_size=32, block_size=8, seed=0)
        >>> len(ks), ks[1].n_blocks, ks == EtCKey.generate_many(3, image_size=32, block_size=8, seed=0)
        (3, 16, True)
        """
        n = _seed_many(n)
        (h, w), b = check_geometry(image_size, block_size)
        c = _as_int(channels, "channels")
        if c > _MAX_CHANNELS:
            raise ValueError(f"EtCKey: channels must be 1..{_MAX_CHANNELS}, got {c}")
        rng, nb = _rng(seed), (h // b) * (w // b)
        stacked = {"block_perm": rng.permuted(np.tile(np.arange(nb), (n, 1)), axis=1),
                   "rot_flip": rng.integers(0, 8, (n, nb)), "negpos": rng.integers(0, 2, (n, nb)),
                   "channel_perm": rng.integers(0, math.factorial(c), (n, nb))}
        return _keys_from_stack(cls, stacked, {"image_size": (h, w), "block_size": b, "channels": c})

    def key_space_bits(self) -> float:
        """log2(n! · 8^n · 2^n · (C!)^n).

        >>> round(EtCKey.generate(image_size=32, block_size=16, channels=1, seed=0).key_space_bits(), 2)
        20.58
        """
        n = self.n_blocks
        return _log2_factorial(n) + n * (3 + 1 + math.log2(math.factorial(self.channels)))


# ----------------------------------------------------------------------------- block scrambling
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class BlockScrambleKey(Key):
    """Key of block scrambling (paper 02): one permutation of block positions.

    ``block_perm`` (n,): ``out[i] = in[block_perm[i]]``, blocks numbered row-major.

    >>> key = BlockScrambleKey.generate(image_size=32, block_size=8, seed=0)
    >>> sorted(key.block_perm.tolist()) == list(range(16))
    True
    >>> round(key.key_space_bits(), 2)  # log2(16!)
    44.25
    """

    scheme: ClassVar[str] = "block_scramble"
    _ARRAYS: ClassVar[tuple[str, ...]] = ("block_perm",)

    block_perm: np.ndarray
    image_size: tuple[int, int] = dataclasses.field(kw_only=True)
    block_size: int = dataclasses.field(kw_only=True)
    channels: int = dataclasses.field(default=3, kw_only=True)

    def _array_specs(self):
        n = self.n_blocks
        return {"block_perm": ((n,), n, "perm")}

    @classmethod
    def generate(cls, *, image_size: Any, block_size: int, channels: int = 3,
                 seed: Any = None) -> "BlockScrambleKey":
        """Draw a uniformly random key: ``permutation(n)`` from ``default_rng(seed)``.

        >>> BlockScrambleKey.generate(image_size=(16, 32), block_size=8, seed=0).n_blocks
        8
        """
        (h, w), b = check_geometry(image_size, block_size)
        c = _as_int(channels, "channels")
        rng = _rng(seed)
        return cls(rng.permutation((h // b) * (w // b)), image_size=(h, w), block_size=b, channels=c)

    @classmethod
    def generate_many(cls, n: int, *, image_size: Any, block_size: int, channels: int = 3,
                      seed: Any = None) -> list["BlockScrambleKey"]:
        """``n`` independent uniformly random keys, drawn at once (vectorised; a key set for
        ``BlockScramble.from_keys``): ``permuted`` rows of ``arange(nb)``, shape ``(n, nb)``,
        from ``default_rng(seed)``.

        >>> ks = BlockScrambleKey.generate_many(1000, image_size=32, block_size=8, seed=0)
        >>> len(ks), len({k.sha256() for k in ks}), ks[7].block_perm.flags.writeable
        (1000, 1000, False)
        """
        n = _seed_many(n)
        (h, w), b = check_geometry(image_size, block_size)
        c = _as_int(channels, "channels")
        nb = (h // b) * (w // b)
        perms = _rng(seed).permuted(np.tile(np.arange(nb), (n, 1)), axis=1)
        return _keys_from_stack(cls, {"block_perm": perms}, {"image_size": (h, w), "block_size": b, "channels": c})

    def key_space_bits(self) -> float:
        """log2(n!).

        >>> key = BlockScrambleKey.generate(image_size=8, block_size=4, seed=0)  # 4 blocks
        >>> round(key.key_space_bits(), 9) == round(math.log2(24), 9)
        True
        """
        return _log2_factorial(self.n_blocks)


# ----------------------------------------------------------------------------- PE
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class PEKey(Key):
    """Key of pixel-based encryption (Sirichotedumrong, Kinoshita & Kiya 2019).

    * ``negpos`` (C, H, W) in {0, 1}: 1 maps that value v to ``v ^ 255``;
    * ``channel_perm`` (H, W) in 0..C!-1: then shuffles the channels of each pixel as in
      EtC step 4 (output channel j takes channel ``perm[j]`` of the negated pixel).

    There are no blocks (``block_size`` is 1); the geometry is read from ``negpos``.

    >>> key = PEKey.generate(image_size=32, seed=0)
    >>> key.negpos.shape, key.channel_perm.shape, key.block_size
    ((3, 32, 32), (32, 32), 1)
    >>> key.key_space_bits() == 3 * 32 * 32 + 32 * 32 * math.log2(6)
    True
    """

    scheme: ClassVar[str] = "pe"
    _ARRAYS: ClassVar[tuple[str, ...]] = ("negpos", "channel_perm")

    negpos: np.ndarray
    channel_perm: np.ndarray

    def _validate_geometry(self) -> None:
        shape = np.shape(self.negpos)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"PEKey.negpos: expected shape (C, H, W), got shape {shape}")
        c, h, w = (int(s) for s in shape)
        if c > _MAX_CHANNELS:
            raise ValueError(f"PEKey: channels must be 1..{_MAX_CHANNELS}, got {c}")
        _check_bounds("PEKey", h, w, 1, c)
        object.__setattr__(self, "image_size", (h, w))
        object.__setattr__(self, "block_size", 1)
        object.__setattr__(self, "channels", c)

    def _array_specs(self):
        c, (h, w) = self.channels, self.image_size
        return {"negpos": ((c, h, w), 2, "values"),
                "channel_perm": ((h, w), math.factorial(c), "values")}

    @classmethod
    def _from_fields(cls, arrays, meta):
        key = cls(**arrays)
        if list(key.image_size) != list(meta["image_size"]) or key.channels != meta["channels"] \
                or meta["block_size"] != 1:
            raise ValueError(f"PEKey: geometry fields (image_size={meta['image_size']}, "
                             f"block_size={meta['block_size']}, channels={meta['channels']}) disagree "
                             f"with the arrays: expected image_size={list(key.image_size)}, block_size=1, "
                             f"channels={key.channels}")
        return key

    @classmethod
    def generate(cls, *, image_size: Any, block_size: int = 1, channels: int = 3,
                 seed: Any = None) -> "PEKey":
        """Draw a uniformly random key: ``integers(0, 2, (C, H, W))`` then
        ``integers(0, C!, (H, W))`` from ``default_rng(seed)``. ``block_size`` must be 1.

        >>> int(PEKey.generate(image_size=(4, 6), channels=1, seed=0).channel_perm.max())
        0
        """
        if block_size != 1:
            raise ValueError(f"PE has no blocks: expected block_size=1, got {block_size!r}")
        h, w = normalize_image_size(image_size)
        c = _as_int(channels, "channels")
        if c > _MAX_CHANNELS:
            raise ValueError(f"PEKey: channels must be 1..{_MAX_CHANNELS}, got {c}")
        rng = _rng(seed)
        return cls(rng.integers(0, 2, (c, h, w)), rng.integers(0, math.factorial(c), (h, w)))

    def key_space_bits(self) -> float:
        """log2(2^(CHW) · (C!)^(HW)).

        >>> PEKey.generate(image_size=2, channels=1, seed=0).key_space_bits()
        4.0
        """
        (h, w), c = self.image_size, self.channels
        return c * h * w + h * w * math.log2(math.factorial(c))


# ----------------------------------------------------------------------------- LE
class _NibbleKey(Key):
    """What LE and ELE keys share: a block is a vector of nibbles (two per byte)."""

    @property
    def nibbles_per_block(self) -> int:
        """``L = 2 · B · B · C``, the length of a block's nibble vector.

        >>> from ppml.keys import ELEKey, LEKey
        >>> LEKey.generate(image_size=8, block_size=4, seed=0).nibbles_per_block
        96
        >>> ELEKey.generate(image_size=8, block_size=2, channels=1, seed=0).nibbles_per_block
        8
        """
        return 2 * self.block_size ** 2 * self.channels


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class LEKey(_NibbleKey):
    """Key of learnable encryption (Tanaka 2018): one nibble permutation for every block.

    A block's ``B·B·C`` bytes, flattened in (row, col, channel) order, are split into
    4-bit nibbles laid out as ``[all low nibbles | all high nibbles]`` (length ``L = 2·B·B·C``):

    * ``perm`` (L,): permutation, ``out[j] = in[perm[j]] ^ (0xF if invert[j])``;
    * ``invert`` (L,) in {0, 1}.

    The arrays do not depend on the image size; ``image_size`` says which images the
    cipher built from this key accepts (``dataclasses.replace(key, image_size=...)`` reuses
    the key for another size).

    >>> key = LEKey.generate(image_size=32, block_size=4, seed=0)
    >>> key.perm.shape, key.invert.shape
    ((96,), (96,))
    >>> round(key.key_space_bits(), 1)  # log2(96! * 2**96)
    594.3
    """

    scheme: ClassVar[str] = "le"
    _ARRAYS: ClassVar[tuple[str, ...]] = ("perm", "invert")

    perm: np.ndarray
    invert: np.ndarray
    image_size: tuple[int, int] = dataclasses.field(kw_only=True)
    block_size: int = dataclasses.field(kw_only=True)
    channels: int = dataclasses.field(default=3, kw_only=True)

    def _array_specs(self):
        n = self.nibbles_per_block
        return {"perm": ((n,), n, "perm"), "invert": ((n,), 2, "values")}

    @classmethod
    def generate(cls, *, image_size: Any, block_size: int, channels: int = 3,
                 seed: Any = None) -> "LEKey":
        """Draw a uniformly random key: ``permutation(L)`` then ``integers(0, 2, L)``.

        The inversion bits are independent fair coins (the canonical key space); Tanaka's
        own keys derive them from the permutation, see :meth:`from_reference`.

        >>> LEKey.generate(image_size=32, block_size=4, channels=1, seed=0).nibbles_per_block
        32
        """
        (h, w), b = check_geometry(image_size, block_size)
        c = _as_int(channels, "channels")
        rng, n = _rng(seed), 2 * b * b * c
        return cls(rng.permutation(n), rng.integers(0, 2, n), image_size=(h, w), block_size=b, channels=c)

    @classmethod
    def from_reference(cls, key: Any, *, image_size: Any = 32, channels: int = 3) -> "LEKey":
        """Convert a key of Tanaka's reference code (``BlockScramble``) to the canonical form.

        Tanaka's key is a permutation of ``0..L-1``; his inversion set is
        ``rev = key > L/2`` (strict), applied before *and* after the gather:
        ``out[j] = in[key[j]] ^ 15·rev[key[j]] ^ 15·rev[j]``. Hence ``perm = key`` and
        ``invert = rev[key] XOR rev``. The block size is read from ``L = 2·B·B·C``.

        >>> ref = np.random.default_rng(0).permutation(96)
        >>> k = LEKey.from_reference(ref)
        >>> k.block_size, bool((k.perm == ref).all())
        (4, True)
        """
        arr = np.asarray(key)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"LEKey.from_reference: expected a 1-D permutation, got shape {arr.shape}")
        c = _as_int(channels, "channels")
        n = arr.size
        b = math.isqrt(n // (2 * c)) if n % (2 * c) == 0 else 0
        if b < 1 or 2 * b * b * c != n:
            raise ValueError(f"LEKey.from_reference: key length {n} is not 2*B*B*C for C={c}: "
                             f"expected e.g. {2 * 16 * c} (B=4)")
        if not np.issubdtype(arr.dtype, np.integer) or not np.array_equal(np.sort(arr), np.arange(n)):
            raise ValueError(f"LEKey.from_reference: key is not a permutation of 0..{n - 1}")
        rev = (arr > n / 2).astype(np.int64)
        return cls(arr, rev[arr] ^ rev, image_size=image_size, block_size=b, channels=c)

    def key_space_bits(self) -> float:
        """log2(L! · 2^L), ``L = 2·B·B·C``.

        >>> round(LEKey.generate(image_size=2, block_size=1, channels=1, seed=0).key_space_bits(), 6)  # 2! * 2**2
        3.0
        """
        n = self.nibbles_per_block
        return _log2_factorial(n) + n


# ----------------------------------------------------------------------------- ELE
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class ELEKey(_NibbleKey):
    """Key of extended learnable encryption (Madono et al. 2020).

    LE with a different key per block, indexed by the *source* block, then a shuffle of
    block locations:

    * ``block_perm`` (n,): output block i is the LE-encrypted input block ``block_perm[i]``;
    * ``perm`` (n, L), ``invert`` (n, L): row k is the LE key (see :class:`LEKey`) used
      for input block k.

    >>> key = ELEKey.generate(image_size=32, block_size=4, seed=0)
    >>> key.block_perm.shape, key.perm.shape, key.invert.shape
    ((64,), (64, 96), (64, 96))
    """

    scheme: ClassVar[str] = "ele"
    _ARRAYS: ClassVar[tuple[str, ...]] = ("block_perm", "perm", "invert")

    block_perm: np.ndarray
    perm: np.ndarray
    invert: np.ndarray
    image_size: tuple[int, int] = dataclasses.field(kw_only=True)
    block_size: int = dataclasses.field(kw_only=True)
    channels: int = dataclasses.field(default=3, kw_only=True)

    def _array_specs(self):
        n, m = self.n_blocks, self.nibbles_per_block
        return {"block_perm": ((n,), n, "perm"), "perm": ((n, m), m, "perm"),
                "invert": ((n, m), 2, "values")}

    @classmethod
    def generate(cls, *, image_size: Any, block_size: int, channels: int = 3,
                 seed: Any = None) -> "ELEKey":
        """Draw a uniformly random key: ``permutation(n)``, then ``permuted`` rows of
        ``arange(L)`` (shape (n, L)), then ``integers(0, 2, (n, L))``.

        >>> k = ELEKey.generate(image_size=8, block_size=4, seed=0)
        >>> k.n_blocks, k.nibbles_per_block
        (4, 96)
        """
        (h, w), b = check_geometry(image_size, block_size)
        c = _as_int(channels, "channels")
        rng = _rng(seed)
        n, m = (h // b) * (w // b), 2 * b * b * c
        block_perm = rng.permutation(n)
        perm = rng.permuted(np.tile(np.arange(m), (n, 1)), axis=1)
        return cls(block_perm, perm, rng.integers(0, 2, (n, m)), image_size=(h, w), block_size=b, channels=c)

    def key_space_bits(self) -> float:
        """log2(n! · (L! · 2^L)^n).

        >>> round(ELEKey.generate(image_size=(1, 2), block_size=1, channels=1, seed=0).key_space_bits(), 6)
        7.0
        """
        n, m = self.n_blocks, self.nibbles_per_block
        return _log2_factorial(n) + n * (_log2_factorial(m) + m)
