"""The key base class, the key-file constants and the helpers every scheme's key uses
(see :mod:`ppml.keys`)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import math
import os
import secrets
from typing import Any, ClassVar

import numpy as np

from ppml.utils import atomic_write_json

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

    >>> from ppml.keys import BlockScrambleKey
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

        >>> from ppml.keys import EtCKey
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

        >>> from ppml.keys import LEKey
        >>> list(LEKey.generate(image_size=8, block_size=4, seed=0).arrays())
        ['perm', 'invert']
        """
        return {f: getattr(self, f) for f in self._ARRAYS}

    def _meta(self) -> dict[str, Any]:
        return {"image_size": list(self.image_size), "block_size": self.block_size,
                "channels": self.channels}

    def sha256(self) -> str:
        """Full sha256 hex digest over the scheme, the geometry and the arrays.

        >>> from ppml.keys import PEKey
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

        >>> from ppml.keys import PEKey
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
        >>> from ppml.keys import BlockScrambleKey, load
        >>> key = BlockScrambleKey.generate(image_size=32, block_size=8, seed=1)
        >>> key.save(p)
        >>> load(p) == key
        True
        """
        atomic_write_json(path, self._to_dict(), indent=1, permissions=0o600)  # a key is a secret

    def key_space_bits(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


def _rebuild(scheme: str, d: dict[str, Any]) -> Key:
    from ppml.keys._io import _from_dict  # the loader knows every scheme; they import this module

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
