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

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from ppml.utils import atomic_write_json

__all__ = [
    "Key", "EtCKey", "BlockScrambleKey", "PEKey", "LEKey", "ELEKey",
    "load", "KEY_FORMAT", "KEY_FORMAT_VERSION", "SCHEMES", "channel_permutations",
]

KEY_FORMAT = "ppml.key"
KEY_FORMAT_VERSION = 1
_MAX_CHANNELS = 6  # channel codes index C! permutations; 6! = 720 keeps the table tiny
# Bounds on the geometry a key may claim. Some arrays do not depend on it (LE's on the image
# size, block scrambling's on the channels), so a tiny file could otherwise ask a cipher for
# terabytes of gather tables. 2**27 values is a 6,000 x 7,000 colour image, far above the papers'.
_MAX_SIDE = 1 << 16
_MAX_VALUES = 1 << 27

# ----------------------------------------------------------------------------- helpers
def channel_permutations(channels: int) -> np.ndarray:
    """The table of channel permutations that channel codes index, shape ``(C!, C)``.

    Row ``k`` is the ``k``-th tuple of ``itertools.permutations(range(C))``; output channel
    ``j`` takes input channel ``table[code, j]``.

    >>> channel_permutations(3).tolist()
    [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]]
    >>> channel_permutations(1).tolist()
    [[0]]
    """
    return np.array(list(itertools.permutations(range(channels))), dtype=np.int64)


def _rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        # Fresh OS entropy (numpy draws it from `secrets`).
        return np.random.default_rng(np.random.SeedSequence())
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer, np.random.SeedSequence)):
        raise ValueError(f"seed must be None, an int, a numpy SeedSequence or Generator; got {type(seed).__name__}")
    return np.random.default_rng(seed)


def _as_int(value: Any, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def normalize_image_size(image_size: Any) -> tuple[int, int]:
    """``32`` or ``(32, 32)`` → ``(32, 32)``; anything else raises ``ValueError``.

    >>> normalize_image_size(32), normalize_image_size((24, 32))
    ((32, 32), (24, 32))
    """
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, (bool, np.bool_)):
        image_size = (image_size, image_size)
    try:
        h, w = image_size
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be an int or a pair (H, W), got {image_size!r}") from None
    return (_as_int(h, "image height"), _as_int(w, "image width"))


def check_geometry(image_size: Any, block_size: Any) -> tuple[tuple[int, int], int]:
    """Validate that the image splits into whole blocks; return ``((H, W), B)``.

    >>> check_geometry(32, 8)
    ((32, 32), 8)
    >>> check_geometry(30, 8)
    Traceback (most recent call last):
    ...
    ValueError: image size 30x30 is not divisible by block size 8: expected H and W to be multiples of 8
    """
    (h, w), b = normalize_image_size(image_size), _as_int(block_size, "block_size")
    if h % b or w % b:
        raise ValueError(f"image size {h}x{w} is not divisible by block size {b}: "
                         f"expected H and W to be multiples of {b}")
    return (h, w), b


def _check_bounds(cls_name: str, h: int, w: int, b: int, c: int) -> None:
    if max(h, w) > _MAX_SIDE or h * w * c > _MAX_VALUES:
        raise ValueError(f"{cls_name}: geometry {h}x{w} images in {b}x{b} blocks with {c} channel(s) "
                         f"({h * w * c:,} values per image) is beyond the supported bound (sides <= "
                         f"{_MAX_SIDE:,}, H*W*C <= {_MAX_VALUES:,}): a cipher for it could not be allocated; "
                         "expected the image size the key is used on")


def _frozen(arr: np.ndarray) -> np.ndarray:
    """A read-only view of an immutable ``bytes`` copy: ``setflags(write=True)`` cannot undo it."""
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    return np.frombuffer(arr.tobytes(), dtype=np.int64).reshape(arr.shape)


def _log2_factorial(n: int) -> float:
    return math.lgamma(n + 1) / math.log(2)


# ----------------------------------------------------------------------------- base
class Key:
    """Base of all key classes: validation, immutability, fingerprint, save, equality.

    Subclasses are frozen dataclasses whose array fields come first; ``_ARRAYS`` names
    them in file order. Every key has ``image_size`` (H, W), ``block_size`` and
    ``channels``.

    >>> key = BlockScrambleKey.generate(image_size=(16, 32), block_size=8, seed=0)
    >>> isinstance(key, Key), key.image_size, key.block_size, key.channels, key.n_blocks
    (True, (16, 32), 8, 3, 8)
    """

    scheme: ClassVar[str] = ""
    _ARRAYS: ClassVar[tuple[str, ...]] = ()

    # Geometry: dataclass fields in most subclasses, derived from the arrays in PEKey.
    image_size: tuple[int, int]
    block_size: int
    channels: int

    @property
    def n_blocks(self) -> int:
        """Number of blocks in the image (row-major numbering).

        >>> EtCKey.generate(image_size=32, block_size=8, seed=0).n_blocks
        16
        """
        h, w = self.image_size
        return (h // self.block_size) * (w // self.block_size)

    def _geometry_text(self) -> str:
        h, w = self.image_size
        b = self.block_size
        return f"{h}x{w} images in {b}x{b} blocks with {self.channels} channel(s)"

    # -- validation ----------------------------------------------------------------
    def _array_specs(self) -> dict[str, tuple[tuple[int, ...], int, str]]:
        """name → (expected shape, number of allowed values n (values in 0..n-1), kind)

        kind is "perm" (each last-axis row is a permutation of 0..n-1) or "values".
        """
        raise NotImplementedError

    def _validate_geometry(self) -> None:
        (h, w), b = check_geometry(self.image_size, self.block_size)
        c = _as_int(self.channels, "channels")
        _check_bounds(type(self).__name__, h, w, b, c)
        object.__setattr__(self, "image_size", (h, w))
        object.__setattr__(self, "block_size", b)
        object.__setattr__(self, "channels", c)

    def _validate_arrays(self) -> None:
        name = type(self).__name__
        for field, (shape, n, kind) in self._array_specs().items():
            raw = getattr(self, field)
            arr = np.asarray(raw)
            if arr.dtype == np.bool_:
                arr = arr.astype(np.int64)
            if arr.dtype == object or not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"{name}.{field}: expected an integer array, got dtype {arr.dtype}")
            if arr.shape != shape:
                raise ValueError(f"{name}.{field}: expected shape {shape} for {self._geometry_text()}, "
                                 f"got shape {arr.shape}")
            if arr.size:
                lo, hi = int(arr.min()), int(arr.max())
                if lo < 0 or hi >= n:
                    bad = lo if lo < 0 else hi
                    raise ValueError(f"{name}.{field}: values must lie in 0..{n - 1}, got {bad}")
            arr = np.array(arr, dtype=np.int64)  # always a private copy
            if kind == "perm" and arr.size:
                rows = arr.reshape(-1, n)
                ok = (np.sort(rows, axis=1) == np.arange(n)).all(axis=1)
                if not ok.all():
                    r = int(np.argmin(ok))
                    counts = np.bincount(rows[r], minlength=n)
                    missing = int(np.argmin(counts))
                    where = f" (row {r})" if rows.shape[0] > 1 else ""
                    raise ValueError(f"{name}.{field}{where}: not a permutation of 0..{n - 1}: "
                                     f"value {missing} is missing and {int(np.argmax(counts))} is repeated")
            # Backed by immutable bytes: a cipher built from the key can trust it never changes.
            object.__setattr__(self, field, _frozen(arr))

    def __post_init__(self) -> None:
        self._validate_geometry()
        self._validate_arrays()

    # -- identity --------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """The key's arrays by name, in file order (read-only).

        >>> list(LEKey.generate(image_size=8, block_size=4, seed=0).arrays())
        ['perm', 'invert']
        """
        return {f: getattr(self, f) for f in self._ARRAYS}

    def _meta(self) -> dict[str, Any]:
        return {"image_size": list(self.image_size), "block_size": self.block_size,
                "channels": self.channels}

    def sha256(self) -> str:
        """Full sha256 hex digest over the scheme, the geometry and the arrays.

        >>> len(PEKey.generate(image_size=4, seed=0).sha256())
        64
        """
        h = hashlib.sha256()
        h.update(json.dumps({"scheme": self.scheme, **self._meta()}, sort_keys=True).encode())
        for f, a in self.arrays().items():
            h.update(f.encode() + str(a.shape).encode())
            h.update(np.ascontiguousarray(a, dtype="<i8").tobytes())
        return h.hexdigest()

    @property
    def fingerprint(self) -> str:
        """12 hex digits that tell keys apart without revealing them.

        An HMAC-SHA256 of :meth:`sha256` under a random 128-bit salt that lives with the key
        (and in its file), so a saved and reloaded key shows the same fingerprint. A plain hash
        would not do: it can be searched (EtC on 32×32 with 16×16 blocks has only 31 bits), so
        the key could be recovered from a printed ``repr``. Equal keys made separately (the
        same seed twice) compare equal but show different fingerprints.

        >>> k = PEKey.generate(image_size=4, seed=0)
        >>> len(k.fingerprint), k.fingerprint in repr(k), k.fingerprint == k.sha256()[:12]
        (12, True, False)
        >>> k.fingerprint == PEKey.generate(image_size=4, seed=0).fingerprint
        False
        """
        return hmac.new(self._fingerprint_salt(), self.sha256().encode(), "sha256").hexdigest()[:12]

    def _fingerprint_salt(self) -> bytes:
        salt = self.__dict__.get("_salt")
        if salt is None:  # drawn once per key object; frozen dataclass, hence object.__setattr__
            salt = secrets.token_bytes(16)
            object.__setattr__(self, "_salt", salt)
        return salt

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(scheme={self.scheme!r}, image_size={self.image_size}, "
                f"block_size={self.block_size}, channels={self.channels}, "
                f"fingerprint={self.fingerprint!r})")

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._meta() == other._meta() and all(
            np.array_equal(a, b) for a, b in zip(self.arrays().values(), other.arrays().values()))

    def __hash__(self) -> int:
        return hash(self.sha256())

    def __reduce__(self):
        # Rebuild through the constructor so unpickled arrays are validated and read-only.
        return (_rebuild, (self.scheme, self._to_dict()))

    # -- persistence -----------------------------------------------------------------
    def _to_dict(self) -> dict[str, Any]:
        return {
            "format": KEY_FORMAT,
            "version": KEY_FORMAT_VERSION,
            "scheme": self.scheme,
            **self._meta(),
            "arrays": {f: {"shape": list(a.shape), "data": a.reshape(-1).tolist()}
                       for f, a in self.arrays().items()},
            "sha256": self.sha256(),
            "fingerprint_salt": self._fingerprint_salt().hex(),
        }

    @classmethod
    def _from_fields(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> "Key":
        return cls(**arrays, image_size=tuple(meta["image_size"]), block_size=meta["block_size"],
                   channels=meta["channels"])

    def save(self, path: str | os.PathLike) -> None:
        """Write the key as versioned JSON, atomically (a temp file renamed over ``path``),
        readable by its owner only (mode 0600).

        The file holds the secret: keep it out of shared folders and version control.

        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "k.json"
        >>> key = BlockScrambleKey.generate(image_size=32, block_size=8, seed=1)
        >>> key.save(p)
        >>> load(p) == key
        True
        """
        atomic_write_json(path, self._to_dict(), indent=1, permissions=0o600)  # a key is a secret

    def key_space_bits(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


def _rebuild(scheme: str, d: dict[str, Any]) -> Key:
    return _from_dict(d, source="pickle")


def _seed_many(n: Any) -> int:
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (the number of keys) must be a positive int, got {n!r}")
    return int(n)


def _keys_from_stack(cls: type[Key], stacked: dict[str, np.ndarray], geometry: dict[str, Any]) -> list[Key]:
    """``n`` keys from arrays stacked along axis 0, validated once for the whole stack.

    The first key goes through the constructor (geometry and array specs checked); the
    drawn arrays of every key then have that key's shapes and value ranges by construction,
    so the others are made without repeating the per-key checks (the reason this is fast).
    """
    n = next(iter(stacked.values())).shape[0]
    first = cls(**{f: a[0] for f, a in stacked.items()}, **geometry)
    for field, (shape, count, kind) in first._array_specs().items():
        arr = stacked[field]
        # cheap whole-stack guards: a drawing bug must not yield invalid keys silently
        ok = arr.shape == (n, *shape) and arr.min(initial=0) >= 0 and arr.max(initial=0) < count
        if ok and kind == "perm":
            ok = bool((np.sort(arr.reshape(n, -1, count), axis=-1) == np.arange(count)).all())
        if not ok:  # pragma: no cover - an internal error, not bad input
            raise RuntimeError(f"{cls.__name__}.generate_many drew an invalid {field} array")
    frozen = {f: _frozen(a) for f, a in stacked.items()}
    keys: list[Key] = [first]
    meta = {"image_size": first.image_size, "block_size": first.block_size, "channels": first.channels}
    for i in range(1, n):
        k = object.__new__(cls)
        for f, a in frozen.items():
            object.__setattr__(k, f, a[i])
        for f, v in meta.items():
            object.__setattr__(k, f, v)
        keys.append(k)
    return keys


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
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class LEKey(Key):
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

    @property
    def nibbles_per_block(self) -> int:
        """``L = 2 · B · B · C``, the length of a block's nibble vector.

        >>> LEKey.generate(image_size=8, block_size=4, seed=0).nibbles_per_block
        96
        """
        return 2 * self.block_size ** 2 * self.channels

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
class ELEKey(Key):
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

    @property
    def nibbles_per_block(self) -> int:
        """``L = 2 · B · B · C``, the length of a block's nibble vector.

        >>> ELEKey.generate(image_size=8, block_size=2, channels=1, seed=0).nibbles_per_block
        8
        """
        return 2 * self.block_size ** 2 * self.channels

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


# ----------------------------------------------------------------------------- loading
SCHEMES: dict[str, type[Key]] = {k.scheme: k for k in (EtCKey, BlockScrambleKey, PEKey, LEKey, ELEKey)}


def _from_dict(d: Any, *, source: str) -> Key:
    where = f"key file {source}"
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected a JSON object with 'format': {KEY_FORMAT!r}, got {type(d).__name__}")
    if d.get("format") != KEY_FORMAT:
        raise ValueError(f"{where}: not a ppml key file: expected 'format': {KEY_FORMAT!r}, "
                         f"got {d.get('format')!r}")
    version = d.get("version")
    if isinstance(version, bool) or version != KEY_FORMAT_VERSION:
        raise ValueError(f"{where}: unsupported key file version {version!r}: "
                         f"expected {KEY_FORMAT_VERSION}")
    scheme = d.get("scheme")
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise ValueError(f"{where}: unknown scheme {scheme!r}: expected one of {sorted(SCHEMES)}")
    cls = SCHEMES[scheme]
    missing = [f for f in ("image_size", "block_size", "channels", "arrays") if f not in d]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}: expected image_size, block_size, "
                         f"channels and arrays")
    arrays_in = d["arrays"]
    if not isinstance(arrays_in, Mapping) or set(arrays_in) != set(cls._ARRAYS):
        got = sorted(arrays_in) if isinstance(arrays_in, Mapping) else type(arrays_in).__name__
        raise ValueError(f"{where}: {scheme} key arrays: expected {list(cls._ARRAYS)}, got {got}")
    arrays: dict[str, np.ndarray] = {}
    for name in cls._ARRAYS:
        spec = arrays_in[name]
        if not isinstance(spec, Mapping) or "shape" not in spec or "data" not in spec:
            raise ValueError(f"{where}: array {name!r}: expected an object with 'shape' and 'data'")
        shape, data = spec["shape"], spec["data"]
        if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                  for s in shape):
            raise ValueError(f"{where}: array {name!r}: expected 'shape' to be a list of non-negative "
                             f"integers, got {shape!r}")
        if not isinstance(data, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in data):
            raise ValueError(f"{where}: array {name!r}: expected 'data' to be a flat list of integers")
        if len(data) != math.prod(shape):
            raise ValueError(f"{where}: array {name!r}: expected {math.prod(shape)} values for shape "
                             f"{tuple(shape)}, got {len(data)}")
        try:
            arrays[name] = np.array(data, dtype=np.int64).reshape(shape)
        except OverflowError:
            raise ValueError(f"{where}: array {name!r}: value out of range for a 64-bit integer") from None
    meta = {"image_size": d["image_size"], "block_size": d["block_size"], "channels": d["channels"]}
    try:
        key = cls._from_fields(arrays, meta)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    except TypeError as e:
        raise ValueError(f"{where}: bad geometry fields {meta}: {e}") from None
    if "sha256" in d and d["sha256"] != key.sha256():
        raise ValueError(f"{where}: checksum mismatch: expected sha256 {d['sha256']!r} recorded in the "
                         f"file, got {key.sha256()!r} (the file was modified or corrupted)")
    salt = d.get("fingerprint_salt")
    if salt is not None:
        try:
            raw = bytes.fromhex(salt)
        except (TypeError, ValueError):
            raw = b""
        if len(raw) != 16:
            raise ValueError(f"{where}: 'fingerprint_salt' must be 32 hex digits, got {salt!r}")
        object.__setattr__(key, "_salt", raw)
    return key


def load(path: str | os.PathLike) -> Key:
    """Read a key file written by :meth:`Key.save`; return an instance of the right class.

    Checks the format tag and version, the scheme, the fields, array shapes and value
    ranges, that permutations are permutations and the recorded sha256. Any problem
    raises ``ValueError`` naming it and the expected value.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "k.json"
    >>> ELEKey.generate(image_size=8, block_size=4, seed=0).save(p)
    >>> load(p)  # doctest: +ELLIPSIS
    ELEKey(scheme='ele', image_size=(8, 8), block_size=4, channels=3, fingerprint='...')
    >>> _ = p.write_text('{"format": "ppml.key", "version": 9}')
    >>> load(p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: key file ...: unsupported key file version 9: expected 1
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"key file {path}: corrupt or truncated: not valid JSON ({e}); "
                         f"expected a file written by Key.save") from None
    except RecursionError:
        raise ValueError(f"key file {path}: not a key file: JSON nested too deeply; "
                         f"expected a file written by Key.save") from None
    except ValueError as e:  # e.g. an integer of thousands of digits
        raise ValueError(f"key file {path}: not a key file: {str(e)[:200]}; "
                         f"expected a file written by Key.save") from None
    return _from_dict(d, source=str(path))
