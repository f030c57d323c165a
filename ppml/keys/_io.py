"""Reading key files: format, version and scheme checks (see :mod:`ppml.keys`)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ppml.keys._base import KEY_FORMAT, KEY_FORMAT_VERSION, Key
from ppml.keys._schemes import BlockScrambleKey, ELEKey, EtCKey, LEKey, PEKey

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
