"""Machinery shared by the block ciphers: block geometry, index tables, input checks and the
fused gather — for one key, or a stack of keys with a key per image.

Every cipher in this package, with its key fixed, is a fixed permutation of the bytes of
an image (EtC, block scrambling, PE) or of its 4-bit nibbles (LE, ELE) followed by an XOR
mask. At construction a cipher derives that permutation once, with vectorised numpy over
the whole image, and stores it as buffers; ``forward`` and ``inverse`` are then one
``torch.gather`` over the flattened ``C·H·W`` bytes plus an XOR (bytes), or two gathers
plus a few in-place bit operations (nibbles). No Python loop runs over images, blocks or
pixels, and the same code runs on any device (the buffers move with ``.to(device)``).

**One key or K keys.** ``EtC(key=k)`` holds one key: its tables have shape ``(C·H·W,)``
(``(2·C·H·W,)`` nibbles for LE/ELE, kept as per-byte tables) and every image is encrypted
with it. ``EtC(keys=[k0, …, k_{K-1}])`` — equivalently ``EtC.from_keys(keys)`` or
``ppml.ciphers.cipher_for(keys)`` — stacks the K keys' tables once into ``(K, C·H·W)``
buffers (in the smallest integer dtype that holds an index, int16 for CIFAR), and
``forward(x, key_ids)`` / ``inverse(y, key_ids)`` encrypt image ``n`` with key
``key_ids[n]``: the gather runs over ``index[key_ids]`` (rows picked per image, the XOR
masks likewise), in chunks of tens to hundreds of images on CPU so the picked rows stay in
cache — still no Python loop over keys or images. A byte table that moves aligned runs of
2, 4 or 8 bytes whole (block scrambling) is gathered as words of that size, for one key or
many (the same bytes out, several times faster). ``key_ids`` is an int64 tensor of shape ``(N,)``
on the input's device with values in ``0..K-1``; a single-key cipher accepts it too (all
zeros) and a K = 1 set *is* the single-key cipher (same tables, same kernel). Memory: a key
set costs about ``6·C·H·W`` bytes per key for byte ciphers (18 KB for CIFAR; ``10·C·H·W``
for EtC and PE, whose per-image kernel gathers from ``[x | ~x]`` with the negation folded
into a second index table) and ``14·C·H·W`` for nibble ciphers.

>>> import torch
>>> from ppml.ciphers import EtC
>>> from ppml.keys import EtCKey
>>> keys = EtCKey.generate_many(3, image_size=8, block_size=4, seed=0)
>>> cipher = EtC.from_keys(keys)
>>> x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
>>> ids = torch.tensor([2, 0, 1, 1, 2])
>>> y = cipher(x, key_ids=ids)
>>> torch.equal(y[0:1], EtC(key=keys[2])(x[0:1])), torch.equal(cipher.inverse(y, key_ids=ids), x)
(True, True)

**Geometry.** :class:`BlockGrid` owns the block arithmetic (image size, block size, grid
shape, the block ↔ image reshape, the flat index of a (block, offset) pair, the
divisibility and bounds checks); it and the table builders live in :mod:`ppml.ciphers.grid`
(re-exported here) and the batch transforms use them.

Conventions (all tables follow them):

* images are ``(N, C, H, W)``; the flat byte index of ``(c, y, x)`` is ``c·H·W + y·W + x``;
* blocks of ``B×B`` pixels are numbered row-major, block ``i`` sits at block row
  ``i // (W/B)`` and block column ``i % (W/B)``; the offset of ``(c, r, s)`` inside a
  block is ``c·B·B + r·B + s``;
* every permutation is a gather, ``out[k] = in[index[k]]``;
* table builders accept key arrays with any leading (key) dimensions and return tables
  with the same leading dimensions.

Input dtypes: ``uint8`` runs bit-exact. Floating input (float16/32/64) must lie in
[0, 1]; it is quantised to 8 bits as ``round(x·255)`` — exactly what saving it as an
8-bit image would do — the uint8 path runs, and the result is returned in the input dtype
divided by 255. So the float output equals the uint8 output / 255, and an image made as
``k/255`` from uint8 ``k`` round-trips exactly. The float path is not differentiable.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ppml._checks import DTypeError, RangeError, ShapeError
from ppml.ciphers.grid import (
    BlockGrid, block_gather_index, channel_local_index, dihedral_table, invert_gather, nibble_block_index,
    nibble_fast_tables,
)
from ppml.keys import Key

__all__ = [
    "BlockGrid", "Cipher", "ByteCipher", "NibbleCipher", "dihedral_table", "block_gather_index",
    "channel_local_index", "invert_gather", "nibble_fast_tables", "nibble_block_index", "stack_ciphers",
    "FLOAT_DTYPES",
]

#: floating dtypes accepted as input (bfloat16 cannot hold k/255 exactly enough to round-trip)
FLOAT_DTYPES = (torch.float16, torch.float32, torch.float64)


def _index_dtype(numel: int) -> np.dtype:
    """Smallest integer dtype for byte indices ``0..numel-1`` of a stacked (per-key) table."""
    return np.dtype(np.int16) if numel <= np.iinfo(np.int16).max + 1 else np.dtype(np.int32)


# ----------------------------------------------------------------------------- base module
Apply = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], None]


class Cipher(nn.Module):
    """Base of the ciphers: key handling, input checks and the uint8/float plumbing.

    Built from one key (``key=``) or a key set (``keys=``, any non-empty sequence of keys of
    this scheme and one geometry; see the module docstring). Subclasses set ``key_type`` and
    implement ``_chunk_fn`` (the uint8 kernel on flat ``(m, C·H·W)`` rows). ``state_dict()``
    holds the keys' tables: treat a saved state dict (and any checkpoint of a model that
    contains a cipher) as a secret. Loading a state dict made from other keys raises
    ``ValueError``.

    >>> from ppml.ciphers import cipher_for
    >>> from ppml.keys import PEKey
    >>> cipher = cipher_for(PEKey.generate(image_size=8, seed=0))
    >>> isinstance(cipher, Cipher), cipher.image_size, cipher.block_size, cipher.channels, cipher.num_keys
    (True, (8, 8), 1, 3, 1)
    >>> cipher.key == PEKey.generate(image_size=8, seed=0)
    True
    """

    key_type: ClassVar[type[Key]] = Key
    #: bytes per gathered element (see ByteCipher: aligned runs are gathered as words)
    _word: int = 1
    #: whether the scheme has blocks (PE does not: its block size is always 1)
    has_blocks: ClassVar[bool] = True

    def __init__(self, *, key: Key | None = None, keys: Iterable[Key] | None = None,
                 block_size: int | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        if (key is None) == (keys is None):
            raise ValueError(f"{name}: pass exactly one of key= (one key) or keys= (a key set, one key per "
                             f"image chosen by key_ids), got {'both' if key is not None else 'neither'}")
        if key is not None:
            if not isinstance(key, self.key_type):
                raise ValueError(f"{name} needs a key of type {self.key_type.__name__}, got {type(key).__name__}; "
                                 f"use ppml.ciphers.cipher_for(key) to pick the cipher of a key")
            key_list = [key]
        else:
            key_list = self._check_key_set(keys)
        key = key_list[0]
        if block_size is not None and block_size != key.block_size:
            expected = "1 (PE has no blocks)" if not self.has_blocks else f"{key.block_size} (the key's block size)"
            raise ValueError(f"{name}: block_size={block_size!r} does not match the key: expected {expected}; "
                             f"generate a key for block size {block_size}")
        self._keys: tuple[Key, ...] = tuple(key_list)

    def _check_key_set(self, keys: Any) -> list[Key]:
        name = type(self).__name__
        if isinstance(keys, Key) or isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
            raise ValueError(f"{name}: keys= must be a sequence of {self.key_type.__name__}s, got "
                             f"{type(keys).__name__}; for one key use key=")
        key_list = list(keys)
        if not key_list:
            raise ValueError(f"{name}: keys= is empty: expected at least one {self.key_type.__name__}")
        # one pass over the keys at construction (never per batch): same scheme, same geometry
        bad = next((i for i, k in enumerate(key_list) if not isinstance(k, self.key_type)), None)
        if bad is not None:
            raise ValueError(f"{name}: key {bad} is a {type(key_list[bad]).__name__}, expected "
                             f"{self.key_type.__name__}: a key set holds keys of one scheme; build one cipher per "
                             f"scheme (ppml.ciphers.cipher_for(keys) picks the scheme of key 0)")
        k0 = key_list[0]
        geo = (k0.image_size, k0.block_size, k0.channels)
        bad = next((i for i, k in enumerate(key_list) if (k.image_size, k.block_size, k.channels) != geo), None)
        if bad is not None:
            raise ValueError(f"{name}: key {bad} is for {key_list[bad]._geometry_text()} but key 0 is for "
                             f"{k0._geometry_text()}: a key set holds keys of one geometry; generate every key "
                             f"with the same image_size, block_size and channels")
        return key_list

    @classmethod
    def from_keys(cls, keys: Iterable[Key], **kw: Any) -> "Cipher":
        """The cipher of a key set: ``forward(x, key_ids)`` encrypts image ``n`` with ``keys[key_ids[n]]``.

        >>> from ppml.ciphers import BlockScramble
        >>> from ppml.keys import BlockScrambleKey
        >>> bs = BlockScramble.from_keys(BlockScrambleKey.generate_many(4, image_size=8, block_size=4, seed=0))
        >>> bs.num_keys, tuple(bs.index.shape), bs.index.dtype
        (4, (4, 192), torch.int16)
        """
        return cls(keys=keys, **kw)

    def _stacked(self, keys: Sequence[Key]) -> dict[str, np.ndarray]:
        """The keys' arrays by name, stacked along a new leading (key) axis."""
        return {name: np.stack([getattr(k, name) for k in keys]) for name in type(keys[0])._ARRAYS}

    # -- keys and geometry -------------------------------------------------------------
    @property
    def keys(self) -> tuple[Key, ...]:
        """The keys this cipher was built from (one for a single-key cipher)."""
        return self._keys

    @property
    def num_keys(self) -> int:
        """K, the number of keys (1 for a single-key cipher)."""
        return len(self._keys)

    @property
    def key(self) -> Key:
        """The key this cipher was built from (a single-key cipher only; a key set has :attr:`keys`)."""
        if len(self._keys) != 1:
            raise ValueError(f"{type(self).__name__} holds {len(self._keys)} keys: use .keys[i] for key i")
        return self._keys[0]

    @property
    def block_size(self) -> int:
        """The keys' block size (1 for PE)."""
        return self._keys[0].block_size

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images this cipher accepts (the keys')."""
        return self._keys[0].image_size

    @property
    def channels(self) -> int:
        """Number of channels of the images this cipher accepts (the keys')."""
        return self._keys[0].channels

    @property
    def grid(self) -> BlockGrid:
        """The :class:`BlockGrid` of the images this cipher accepts."""
        return BlockGrid(self.image_size, self.block_size, self.channels)

    def extra_repr(self) -> str:
        who = f"key={self._keys[0].fingerprint!r}" if len(self._keys) == 1 else f"num_keys={len(self._keys)}"
        return f"image_size={self.image_size}, block_size={self.block_size}, channels={self.channels}, {who}"

    # -- checks ----------------------------------------------------------------------
    def _check(self, x: Any) -> None:
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
        if x.dim() != 4:
            raise ShapeError(f"{name}: expected a batch of shape (N, C, H, W), got shape {tuple(x.shape)}; "
                             f"use x.unsqueeze(0) for a single image")
        if x.dtype != torch.uint8 and x.dtype not in FLOAT_DTYPES:
            raise DTypeError(f"{name}: expected dtype uint8, or float16/32/64 in [0, 1], got {x.dtype}")
        _, c, h, w = x.shape
        (eh, ew), b = self.image_size, self.block_size
        if c != self.channels:
            raise ShapeError(f"{name}: expected {self.channels} channel(s) (the key's), got {c}")
        if h % b or w % b:
            raise ShapeError(f"{name}: image size {h}x{w} is not divisible by block size {b}: "
                             f"expected {eh}x{ew} (the key's image size)")
        if (h, w) != (eh, ew):
            raise ShapeError(f"{name}: expected {eh}x{ew} images (the key's image size), got {h}x{w}; "
                             f"generate a key for {h}x{w}")
        dev = self._device()
        if dev is not None and x.device != dev:
            raise ValueError(f"{name}: input is on {x.device} but the cipher is on {dev}: "
                             f"expected the same device (use cipher.to(x.device))")
        if x.dtype != torch.uint8 and x.numel():
            lo, hi = torch.aminmax(x)
            lo, hi = float(lo), float(hi)
            if not (lo >= 0.0 and hi <= 1.0):
                raise RangeError(f"{name}: float images must lie in [0, 1], got values in [{lo}, {hi}]; "
                                 f"expected x/255 for 8-bit data, or pass uint8")

    def _check_key_ids(self, key_ids: Any, x: torch.Tensor) -> torch.Tensor | None:
        """Validate ``key_ids``; return them, or None when the single-key kernel applies."""
        name, n, k = type(self).__name__, x.shape[0], self.num_keys
        fix = f"an int64 tensor of shape ({n},) on {x.device} with values in 0..{k - 1}"
        if key_ids is None:
            if k > 1:
                raise ValueError(f"{name} holds {k} keys: pass key_ids=, the key index of every image ({fix})")
            return None
        if not isinstance(key_ids, torch.Tensor):
            raise ValueError(f"{name}: key_ids must be a torch.Tensor, got {type(key_ids).__name__}: expected {fix} "
                             f"(use torch.as_tensor(ids, dtype=torch.long, device=x.device))")
        if key_ids.dtype != torch.int64:
            raise ValueError(f"{name}: key_ids must have dtype int64, got {key_ids.dtype}: expected {fix} "
                             f"(use key_ids.long())")
        if tuple(key_ids.shape) != (n,):
            raise ValueError(f"{name}: key_ids must have shape ({n},), one key index per image, got shape "
                             f"{tuple(key_ids.shape)}: expected {fix}")
        if key_ids.device != x.device:
            raise ValueError(f"{name}: key_ids is on {key_ids.device} but the images are on {x.device}: expected "
                             f"{fix} (use key_ids.to(x.device))")
        if n:
            lo, hi = (int(v) for v in torch.aminmax(key_ids))
            if lo < 0 or hi >= k:
                raise ValueError(f"{name}: key_ids must lie in 0..{k - 1} (this cipher holds {k} key(s)), got "
                                 f"{lo if lo < 0 else hi}: expected {fix}")
        return key_ids if k > 1 else None  # K = 1: every id is 0, the single-key kernel applies

    def _device(self) -> torch.device | None:
        for b in self.buffers():
            return b.device
        return None

    # -- apply -----------------------------------------------------------------------
    #: On CPU a batch is processed in chunks of about this many uint8 bytes, so that the
    #: gathered bytes and the bit operations on them stay in cache (a loop over a few
    #: chunks of hundreds of images, never over single images). Other devices: one chunk.
    #: Byte ciphers (one gather + one XOR) gain nothing from chunking, so it is off there.
    cpu_chunk_bytes: ClassVar[int] = 1 << 62
    #: With a key per image the rows of the tables are picked per image: on CPU chunks of
    #: about this many gathered elements (bytes, or words for a word gather; ~85 CIFAR images
    #: bytewise) keep the picked rows in cache (measured: 64
    #: rows ~1.0x the single-key gather, 1,024 rows ~1.2x, the whole batch ~3.8x; one thread).
    keyset_cpu_chunk_bytes: ClassVar[int] = 1 << 18
    #: ... and on other devices chunks of this many bytes bound the (rows, C·H·W) int64
    #: index picked per chunk (8 bytes per image byte).
    keyset_chunk_bytes: ClassVar[int] = 1 << 26

    @torch.no_grad()  # a permutation of quantised values: there is no gradient to track
    def _run(self, x: torch.Tensor, encrypt: bool, key_ids: torch.Tensor | None) -> torch.Tensor:
        self._check(x)
        ids = self._check_key_ids(key_ids, x)
        n, d = x.shape[0], x.shape[1] * x.shape[2] * x.shape[3]
        flat = x.reshape(n, d)
        if ids is None:
            rows = max(1, self.cpu_chunk_bytes // d) if x.device.type == "cpu" else max(n, 1)
        else:
            budget = min(self.cpu_chunk_bytes, self.keyset_cpu_chunk_bytes) if x.device.type == "cpu" \
                else self.keyset_chunk_bytes
            rows = max(1, budget // (d // self._word))  # the budget counts gathered elements
        rows = min(rows, max(n, 1))
        apply = self._chunk_fn(encrypt, rows, x.device, ids is not None)

        def part(i: int) -> torch.Tensor | None:
            return None if ids is None else ids[i:i + rows]

        if x.dtype == torch.uint8:
            out = torch.empty((n, d), dtype=torch.uint8, device=x.device)
            for i in range(0, n, rows):
                apply(flat[i:i + rows], out[i:i + rows], part(i))
            return out.view(x.shape)
        # float: quantise to 8 bits, run the uint8 path, return (uint8 result in x.dtype) / 255
        out = torch.empty((n, d), dtype=x.dtype, device=x.device)
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        enc = torch.empty((rows, d), dtype=torch.uint8, device=x.device)
        for i in range(0, n, rows):
            chunk = flat[i:i + rows]
            m = chunk.shape[0]
            q = (chunk.to(work) * 255).round_().to(torch.uint8)
            apply(q, enc[:m], part(i))
            out[i:i + m].copy_(enc[:m]).div_(255)
        return out.view(x.shape)

    def forward(self, x: torch.Tensor, key_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Encrypt a batch ``(N, C, H, W)``; uint8 → uint8, float in [0, 1] → same float dtype.

        ``key_ids`` (int64 ``(N,)`` on ``x``'s device): image ``n`` is encrypted with key
        ``key_ids[n]``; required when the cipher holds several keys.
        """
        return self._run(x, True, key_ids)

    def inverse(self, y: torch.Tensor, key_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Decrypt a batch made by :meth:`forward` with the same ``key_ids`` (exactly:
        ``inverse(forward(x, ids), ids) == x``)."""
        return self._run(y, False, key_ids)

    def _chunk_fn(self, encrypt: bool, rows: int, device: torch.device, per_image: bool) -> Apply:
        """Return ``apply(x, out, ids)`` writing the cipher of uint8 rows ``x`` (m, D) into
        ``out``; ``ids`` (m,) picks each row's key when ``per_image``, else it is None."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _build_tables(self, tables: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
                      dtypes: dict[str, Any]) -> None:
        """Register the tables of every key as buffers: ``(D,)`` with int64 indices for one key
        (as ever), ``(K, D)`` in a compact index dtype for a key set, built in chunks of keys
        (vectorised over each chunk) to bound the memory of the int64 intermediates."""
        keys, d = self._keys, self.grid.numel
        if len(keys) == 1:
            for name, arr in tables(self._stacked(keys)).items():
                dt = np.int64 if dtypes[name] == "index" else dtypes[name]
                self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(arr[0], dtype=dt)))
            return
        out: dict[str, np.ndarray] = {}
        step = max(1, (1 << 21) // d)
        for s in range(0, len(keys), step):
            for name, arr in tables(self._stacked(keys[s:s + step])).items():
                if name not in out:
                    dt = _index_dtype(d) if dtypes[name] == "index" else dtypes[name]
                    out[name] = np.empty((len(keys), arr.shape[-1]), dtype=dt)
                out[name][s:s + step] = arr
        for name, arr in out.items():
            self.register_buffer(name, torch.from_numpy(arr))

    # -- state dict safety -----------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for name, buf in self._buffers.items():
            other = state_dict.get(prefix + name)
            if other is not None and (other.shape != buf.shape or not torch.equal(other.to(buf.device), buf)):
                what = f"key {self._keys[0].fingerprint!r}" if len(self._keys) == 1 else f"these {len(self._keys)} keys"
                raise ValueError(f"{type(self).__name__}: state_dict entry {prefix + name!r} comes from another "
                                 f"key: expected the tables of {what}; build the cipher "
                                 f"from the right key (ppml.ciphers.cipher_for(key))")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


class ByteCipher(Cipher):
    """A cipher that is ``out = in[index] ^ mask`` on the flat ``C·H·W`` bytes.

    Buffers: ``index`` (int64 ``(D,)``; a key set: ``(K, D)`` int16/int32), ``mask`` (uint8),
    ``inverse_index``, ``inverse_mask``. EtC, BlockScramble and PE are byte ciphers.

    >>> from ppml.ciphers import cipher_for
    >>> from ppml.keys import EtCKey
    >>> etc = cipher_for(EtCKey.generate(image_size=8, block_size=4, seed=0))
    >>> sorted(etc.state_dict()), etc.index.dtype, etc.mask.dtype
    (['index', 'inverse_index', 'inverse_mask', 'mask'], torch.int64, torch.uint8)
    """

    def __init__(self, *, key: Key | None = None, keys: Iterable[Key] | None = None,
                 block_size: int | None = None) -> None:
        super().__init__(key=key, keys=keys, block_size=block_size)

        def tables(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            index, mask = self._tables(arrays)
            index = np.asarray(index, dtype=np.int64)
            inv_index, inv_mask = invert_gather(index, mask)
            return {"index": index, "mask": np.broadcast_to(mask, index.shape), "inverse_index": inv_index, "inverse_mask": inv_mask}

        self._build_tables(tables, {"index": "index", "inverse_index": "index", "mask": np.uint8,
                                    "inverse_mask": np.uint8})
        self._masked = bool(self.mask.any())
        self._register_word_tables()
        self._negate_fold = self._register_negate_tables()

    def _tables(self, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        """``(index, mask)``, each ``(K, C·H·W)``, from the keys' arrays stacked along axis 0."""
        raise NotImplementedError

    #: word sizes tried, in bytes: a table that moves aligned runs of w bytes together (block
    #: scrambling with B >= 8, or 4 for B = 4) runs as a gather of w-byte words: w times fewer
    #: elements and index entries, the same bytes out
    _WORDS: ClassVar[dict[int, torch.dtype]] = {8: torch.int64, 4: torch.int32, 2: torch.int16}

    def _find_word_size(self) -> int:
        """The largest w such that every key's table moves aligned w-byte words whole."""
        d = self.grid.numel
        idx = self.index.reshape(-1, d)
        for w, _ in self._WORDS.items():
            if d % w:
                continue
            runs = idx.reshape(idx.shape[0], d // w, w).long()
            if bool((runs[..., 0] % w == 0).all()) and bool((runs == runs[..., :1] + torch.arange(w)).all()):
                return w
        return 1

    def _register_word_tables(self) -> None:
        self._word = self._find_word_size()
        if self._word > 1:  # derived from the tables: not saved in state_dict, moved by .to()
            for name in ("index", "inverse_index"):
                t = getattr(self, name)
                self.register_buffer(f"{name}_words", t[..., ::self._word] // self._word, persistent=False)

    def _register_negate_tables(self) -> bool:
        """Key sets whose masks only negate bytes (0 or 255: EtC, PE) also get ``index_neg``,
        the index plus ``D`` where the output byte is negated: a gather from the row
        ``[x | ~x]`` then does the gather and the mask at once, without picking each image's
        mask row and XOR-ing it (one pass fewer per chunk; measured ~1.1x faster for EtC
        on CPU). Derived, so not saved in ``state_dict``; ``2·D`` more bytes per key."""
        if self.num_keys == 1 or not self._masked or self._word > 1:
            return False
        d = self.grid.numel
        if not all(bool(((m == 0) | (m == 255)).all()) for m in (self.mask, self.inverse_mask)):
            return False
        dt = torch.from_numpy(np.empty(0, _index_dtype(2 * d))).dtype
        for p in ("", "inverse_"):
            index, mask = getattr(self, p + "index"), getattr(self, p + "mask")
            folded = (index.to(torch.int32) + d * (mask == 255).to(torch.int32)).to(dt)
            self.register_buffer(p + "index_neg", folded, persistent=False)
        return True

    def _chunk_fn(self, encrypt: bool, rows: int, device: torch.device, per_image: bool) -> Apply:
        p = "" if encrypt else "inverse_"
        if per_image and self._negate_fold:
            return _gather_negated(getattr(self, p + "index_neg"), rows, device)
        index, mask = getattr(self, p + "index"), getattr(self, p + "mask")
        byte_apply = _gather_xor(index, mask, self._masked, rows, device, per_image)
        w = self._word
        if w == 1:
            return byte_apply
        dt = self._WORDS[w]
        word_apply = _gather_xor(getattr(self, p + "index_words"), mask.view(dt), self._masked, rows, device,
                                 per_image)

        def apply(x: torch.Tensor, out: torch.Tensor, ids: torch.Tensor | None) -> None:
            try:  # the same bytes, read as words (needs w-aligned rows; else the byte kernel)
                xw, ow = x.view(dt), out.view(dt)
            except RuntimeError:
                return byte_apply(x, out, ids)
            word_apply(xw, ow, ids)

        return apply


def stack_ciphers(modules: Iterable[nn.Module]) -> Cipher | None:
    """One key set of single-key ciphers: ``stack_ciphers(ms)(x, key_ids)`` equals ``ms[key_ids[n]](x[n])``
    for every image ``n``, in one gather. ``None`` unless every module is a single-key
    :class:`Cipher` of one class (that keeps the base ``forward``/``inverse``), one geometry and
    one device — callers then fall back to calling the modules one by one.

    The set is a new module on the ciphers' device (built from their keys, not registered
    anywhere: a cache of a transform must not add its tables to a ``state_dict``).

    >>> from ppml.ciphers import EtC
    >>> from ppml.keys import EtCKey
    >>> ms = [EtC(key=k) for k in EtCKey.generate_many(2, image_size=8, block_size=4, seed=0)]
    >>> x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    >>> torch.equal(stack_ciphers(ms)(x, key_ids=torch.tensor([1, 0, 1]))[1:2], ms[0](x[1:2]))
    True
    >>> stack_ciphers([ms[0], nn.Identity()]) is None
    True
    """
    mods = list(modules)
    if not mods or not isinstance(mods[0], Cipher):
        return None
    cls = type(mods[0])
    if cls.forward is not Cipher.forward or cls.inverse is not Cipher.inverse:
        return None  # a subclass with its own forward may not take key_ids
    if any(type(m) is not cls or m.num_keys != 1 for m in mods):
        return None
    grid, device = mods[0].grid, mods[0]._device()
    if any(m.grid != grid or m._device() != device for m in mods):
        return None
    return cls.from_keys([m.key for m in mods]).to(device)


def _gather_xor(index: torch.Tensor, mask: torch.Tensor, masked: bool, rows: int, device: torch.device,
                per_image: bool) -> Apply:
    """``out = x[index] ^ mask`` on rows: one broadcast table, or each row's own (``ids``)."""
    if not per_image:
        def apply(x: torch.Tensor, out: torch.Tensor, ids: None) -> None:
            # gather with a broadcast (stride-0) index is several times faster than
            # index_select or advanced indexing on CPU, and one fused kernel on CUDA.
            torch.gather(x, 1, index.expand(x.shape[0], -1), out=out)
            if masked:
                out.bitwise_xor_(mask)
        return apply

    picked = torch.empty((rows, index.shape[-1]), dtype=index.dtype, device=device)
    wide = torch.empty((rows, index.shape[-1]), dtype=torch.int64, device=device)
    picked_mask = torch.empty((rows, mask.shape[-1]), dtype=mask.dtype, device=device)

    def apply_rows(x: torch.Tensor, out: torch.Tensor, ids: torch.Tensor) -> None:
        m = x.shape[0]
        torch.index_select(index, 0, ids, out=picked[:m])  # each image's own table row
        wide[:m].copy_(picked[:m])                         # gather wants int64 indices
        torch.gather(x, 1, wide[:m], out=out)
        if masked:
            out.bitwise_xor_(torch.index_select(mask, 0, ids, out=picked_mask[:m]))

    return apply_rows


def _gather_negated(index_neg: torch.Tensor, rows: int, device: torch.device) -> Apply:
    """``out = [x | ~x][index_neg]`` on rows, each row with its own table row (``ids``)."""
    d = index_neg.shape[-1]
    picked = torch.empty((rows, d), dtype=index_neg.dtype, device=device)
    wide = torch.empty((rows, d), dtype=torch.int64, device=device)
    both = torch.empty((rows, 2 * d), dtype=torch.uint8, device=device)

    def apply_rows(x: torch.Tensor, out: torch.Tensor, ids: torch.Tensor) -> None:
        m = x.shape[0]
        torch.index_select(index_neg, 0, ids, out=picked[:m])  # each image's own table row
        wide[:m].copy_(picked[:m])                             # gather wants int64 indices
        src = both[:m]
        src[:, :d].copy_(x)
        torch.bitwise_not(x, out=src[:, d:])
        torch.gather(src, 1, wide[:m], out=out)

    return apply_rows


class NibbleCipher(Cipher):
    """A cipher that is ``n_out = n_in[index] ^ mask`` on the ``2·C·H·W`` nibbles.

    The nibble vector of a flat image ``x`` is ``[x & 15 | x >> 4]``. It is never built:
    each output byte is assembled from two byte gathers (see :func:`nibble_fast_tables`),
    ``((x[i_lo] >> s_lo) & 15) | ((x[i_hi] << s_hi) & 0xF0)``, then XOR-ed with a byte mask.
    Buffers: ``index_lo``, ``shift_lo``, ``index_hi``, ``shift_hi``, ``mask`` and the same
    with an ``inverse_`` prefix (``(D,)``; a key set: ``(K, D)``). LE and ELE are nibble ciphers.

    >>> from ppml.ciphers import cipher_for
    >>> from ppml.keys import LEKey
    >>> le = cipher_for(LEKey.generate(image_size=8, block_size=4, seed=0))
    >>> isinstance(le, NibbleCipher), le.index_lo.shape
    (True, torch.Size([192]))
    """

    cpu_chunk_bytes = 1 << 20  # measured: ~1.5x faster than one pass on 10,000 CIFAR images
    _NAMES = ("index_lo", "shift_lo", "index_hi", "shift_hi", "mask")

    def __init__(self, *, key: Key | None = None, keys: Iterable[Key] | None = None,
                 block_size: int | None = None) -> None:
        super().__init__(key=key, keys=keys, block_size=block_size)

        def tables(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            nidx, nmask = self._nibble_tables(arrays)
            nidx = np.asarray(nidx, dtype=np.int64)
            inv_idx, inv_mask = invert_gather(nidx, nmask)
            nmask = np.broadcast_to(np.asarray(nmask, dtype=np.int64), nidx.shape)
            return {prefix + name: arr for prefix, (i, m) in (("", (nidx, nmask)), ("inverse_", (inv_idx, inv_mask)))
                    for name, arr in nibble_fast_tables(i, m).items()}

        self._build_tables(tables, {p + n: ("index" if n.startswith("index") else np.uint8)
                                    for p in ("", "inverse_") for n in self._NAMES})

    def _nibble_tables(self, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        """``(nibble index, nibble mask)``, each ``(K, 2·C·H·W)``, from the keys' stacked arrays."""
        raise NotImplementedError

    def _chunk_fn(self, encrypt: bool, rows: int, device: torch.device, per_image: bool) -> Apply:
        p = "" if encrypt else "inverse_"
        index_lo, shift_lo, index_hi, shift_hi, mask = (getattr(self, p + name) for name in self._NAMES)
        d = index_hi.shape[-1]
        scratch = torch.empty((rows, d), dtype=torch.uint8, device=device)
        if per_image:
            wide = torch.empty((2, rows, d), dtype=torch.int64, device=device)
            picked = torch.empty((3, rows, d), dtype=torch.uint8, device=device)

        def apply(x: torch.Tensor, out: torch.Tensor, ids: torch.Tensor | None) -> None:
            m = x.shape[0]
            hi = scratch[:m]
            if ids is None:
                i_lo, s_lo, i_hi, s_hi, msk = index_lo.expand(m, -1), shift_lo, index_hi.expand(m, -1), shift_hi, mask
            else:  # each image's own table rows
                i_lo, i_hi = wide[0, :m], wide[1, :m]
                i_lo.copy_(index_lo.index_select(0, ids))
                i_hi.copy_(index_hi.index_select(0, ids))
                s_lo = torch.index_select(shift_lo, 0, ids, out=picked[0, :m])
                s_hi = torch.index_select(shift_hi, 0, ids, out=picked[1, :m])
                msk = torch.index_select(mask, 0, ids, out=picked[2, :m])
            torch.gather(x, 1, i_lo, out=out)
            torch.gather(x, 1, i_hi, out=hi)
            out.bitwise_right_shift_(s_lo).bitwise_and_(0x0F)
            hi.bitwise_left_shift_(s_hi).bitwise_and_(0xF0)
            out.bitwise_or_(hi).bitwise_xor_(msk)

        return apply
