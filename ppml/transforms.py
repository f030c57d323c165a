"""Batch augmentation: pure functional kernels and thin modules whose random parameters are
drawn in a separate step.

Every transform works on a whole batch ``(N, C, H, W)`` (uint8 or float) with tensor
indexing — no Python loop over images and no PIL. The layout follows kornia and
torchvision's transforms v2:

* **kernels** (:func:`hflip`, :func:`flip_where`, :func:`crop`, :func:`gridmask_keep`,
  :func:`mask`, :func:`to_float`) are deterministic functions of the batch and explicit
  per-image parameters;
* **modules** (:class:`RandomHorizontalFlip`, :class:`RandomCrop`, :class:`GridMask`,
  :class:`EncryptBatch`, :class:`ToFloat`, :class:`Compose`) draw their random parameters with
  ``make_params(x, generator)``, apply them with ``apply(x, params)`` and keep the last ones
  in ``last_params`` — so a batch's augmentation can be replayed on another batch
  (``t.apply(y, t.last_params)``) and, for the flip, inverted (:meth:`RandomHorizontalFlip.inverse`).

**Randomness.** Every module is called as ``t(x, generator)`` and takes *all* its random
numbers from ``generator`` (a :class:`torch.Generator`), so a run is reproducible and
resumable: save ``generator.get_state()`` in the checkpoint. Random numbers are drawn on the
generator's device and then moved to the batch's device, so a CPU generator gives the *same*
augmentation for a batch on CPU and on CUDA (recommended); a CUDA generator also works, with
CUDA's own stream of numbers. ``generator=None`` falls back to torch's global RNG.

>>> x = torch.arange(6, dtype=torch.uint8).view(1, 1, 2, 3)
>>> t = RandomHorizontalFlip(p=1.0)
>>> y = t(x, torch.Generator().manual_seed(0))
>>> bool((y == hflip(x)).all()), bool((t.inverse(y) == x).all())
(True, True)
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ppml._checks import check_batch, check_probability, generator_device
from ppml.ciphers import cipher_for
from ppml.ciphers.keysets import cached_key_set

__all__ = [
    "hflip", "identity", "flip_where", "crop", "gridmask_keep", "mask", "to_float",
    "BatchTransform", "ToFloat", "Compose", "RandomHorizontalFlip", "RandomCrop", "GridMask", "EncryptBatch",
]


# --------------------------------------------------------------------------------------------
# Kernels: deterministic, explicit parameters
# --------------------------------------------------------------------------------------------

def hflip(x: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of a batch (e.g. the server's test-time augmentation of paper 02).

    >>> hflip(torch.tensor([[[[1, 2, 3]]]])).tolist()
    [[[[3, 2, 1]]]]
    """
    return x.flip(-1)


def identity(x: torch.Tensor) -> torch.Tensor:
    """The unchanged batch (the first view of a test-time average).

    >>> identity(torch.ones(1)).tolist()
    [1.0]
    """
    return x


def flip_where(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Flip left–right the images whose entry of the bool vector ``flip`` ``(N,)`` is True.

    >>> flip_where(torch.tensor([[[[1, 2]]], [[[3, 4]]]]), torch.tensor([True, False])).flatten().tolist()
    [2, 1, 3, 4]
    """
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)


def crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: tuple[int, int], *,
         padding: int = 0, fill: float = 0) -> torch.Tensor:
    """Pad every image by ``padding`` pixels of value ``fill``, then cut a ``size = (h, w)``
    window whose corner, in padded coordinates, is ``(top[i], left[i])`` for image ``i`` —
    one gather for the whole batch.

    >>> x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    >>> crop(x, torch.tensor([1]), torch.tensor([2]), (2, 2))[0, 0].tolist()
    [[6, 7], [10, 11]]
    """
    n, c = x.shape[:2]
    top, left = top.to(x.device), left.to(x.device)
    p = padding
    xp = F.pad(x, (p, p, p, p), mode="constant", value=fill) if p else x
    ch, cw = size
    rows = (top[:, None] + torch.arange(ch, device=x.device))[:, None, :, None]  # (N,1,ch,1)
    cols = (left[:, None] + torch.arange(cw, device=x.device))[:, None, None, :]  # (N,1,1,cw)
    b = torch.arange(n, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[b, ci, rows, cols]


def gridmask_keep(h: int, w: int, d: torch.Tensor, st_h: torch.Tensor, st_w: torch.Tensor, angle: torch.Tensor, *,
                  ratio: float, mode: int = 0) -> torch.Tensor:
    """GridMask's bool keep-mask ``(n, h, w)`` (True = pixel kept) for per-image unit ``d``,
    offsets ``st_h``, ``st_w`` (in ``[0, d)``) and integer ``angle`` in degrees (int tensors
    ``(n,)``), evaluated analytically at every output pixel (see :class:`GridMask`).

    >>> keep = gridmask_keep(4, 4, torch.tensor([4]), torch.tensor([0]), torch.tensor([0]), torch.tensor([0]),
    ...                      ratio=0.5)
    >>> keep.int()[0].tolist()   # rows/columns 0-1 of every 4-pixel unit removed (1.5x mask, centred)
    [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    """
    dev = d.device
    l = torch.floor(d.to(torch.float64) * ratio + 0.5).long()
    hh, ww = int(1.5 * h), int(1.5 * w)
    ys = torch.arange(h, device=dev, dtype=torch.float64) + (hh - h) // 2 + 0.5 - hh / 2
    xs = torch.arange(w, device=dev, dtype=torch.float64) + (ww - w) // 2 + 0.5 - ww / 2
    theta = angle.to(torch.float64) * (math.pi / 180.0)
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    dy, dx = ys[None, :, None], xs[None, None, :]
    # PIL's rotate(angle) samples the source at R(−angle)·(p − c) + c for output pixel p.
    sx = torch.floor(cos * dx - sin * dy + ww / 2).long()
    sy = torch.floor(sin * dx + cos * dy + hh / 2).long()
    inside = (sx >= 0) & (sx < ww) & (sy >= 0) & (sy < hh)
    dd, ll = d[:, None, None], l[:, None, None]
    row_cut = torch.remainder(sy - st_h[:, None, None], dd) < ll
    col_cut = torch.remainder(sx - st_w[:, None, None], dd) < ll
    keep = inside & ~row_cut & ~col_cut
    return ~keep if mode == 1 else keep


def mask(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Zero the pixels where the bool ``keep`` ``(N, H, W)`` is False, in every channel.

    >>> mask(torch.ones(1, 2, 1, 2), torch.tensor([[[True, False]]])).tolist()
    [[[[1.0, 0.0]], [[1.0, 0.0]]]]
    """
    return torch.where(keep.to(x.device)[:, None], x, torch.zeros((), dtype=x.dtype, device=x.device))


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 → float32 in [0, 1] (divide by 255); floating input is returned unchanged."""
    return x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x


# --------------------------------------------------------------------------------------------
# Modules: draw parameters (make_params), then apply them (apply)
# --------------------------------------------------------------------------------------------

class BatchTransform(nn.Module):
    """Base class: ``t(x, generator=None) -> x`` on a whole batch ``(N, C, H, W)``.

    A subclass draws every random number in ``make_params(x, generator)`` (on the generator's
    device) and applies them in the deterministic ``apply(x, params)``; ``forward`` does both
    and keeps the parameters in ``last_params`` for replay. Being :class:`torch.nn.Module` s,
    transforms that hold tensors (e.g. :class:`EncryptBatch`) follow ``.to(device)``.
    """

    last_params: dict[str, Any] | None = None

    def make_params(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, Any]:
        """The random parameters for batch ``x`` (default: none)."""
        return {}

    def apply(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:  # pragma: no cover
        """Apply given parameters to ``x`` (replays a call when ``params`` is its ``last_params``)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_batch(x, type(self).__name__)
        params = self.make_params(x, generator)
        self.last_params = params
        return self.apply(x, params)


class ToFloat(BatchTransform):
    """uint8 → float32 in [0, 1] (divide by 255); floating input is returned unchanged.

    >>> ToFloat()(torch.tensor([[[[0, 51, 255]]]], dtype=torch.uint8)).flatten().tolist()
    [0.0, 0.20000000298023224, 1.0]
    """

    def apply(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return to_float(x)


class Compose(BatchTransform):
    """Apply batch transforms in order, passing the same generator to each.

    >>> t = Compose([RandomHorizontalFlip(p=1.0), ToFloat()])
    >>> t(torch.tensor([[[[0, 255]]]], dtype=torch.uint8), torch.Generator().manual_seed(0)).tolist()
    [[[[1.0, 0.0]]]]
    """

    def __init__(self, transforms: Iterable[Callable[..., torch.Tensor]]) -> None:
        super().__init__()
        self.transforms = list(transforms)
        for i, t in enumerate(self.transforms):
            if not callable(t):
                raise ValueError(f"transform {i} ({t!r}) is not callable; expected t(x, generator)")
            if isinstance(t, nn.Module):
                self.add_module(str(i), t)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for t in self.transforms:
            x = t(x, generator)
        return x

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class RandomHorizontalFlip(BatchTransform):
    """Flip each image left–right independently with probability ``p``.

    Parameters: ``{"flip": (N,) bool}``; :meth:`inverse` undoes the last call's flips.

    >>> x = torch.arange(6, dtype=torch.uint8).view(1, 1, 2, 3)
    >>> bool((RandomHorizontalFlip(p=1.0)(x) == x.flip(-1)).all())
    True
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = check_probability(p, "p", type(self).__name__)

    def make_params(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, Any]:
        flip = torch.rand(x.shape[0], generator=generator, device=generator_device(generator)) < self.p
        return {"flip": flip}

    def apply(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return flip_where(x, params["flip"])

    def inverse(self, y: torch.Tensor, params: dict[str, Any] | None = None) -> torch.Tensor:
        """Undo the flips of ``params`` (default: the last call's) — a flip is its own inverse."""
        params = self.last_params if params is None else params
        if params is None or params["flip"].shape[0] != y.shape[0]:
            raise ValueError("give params= (one flip per image): no matching previous call to reuse")
        return flip_where(y, params["flip"])

    def extra_repr(self) -> str:
        return f"p={self.p}"


class RandomCrop(BatchTransform):
    """Pad every image by ``padding`` pixels of value ``fill`` on each side, then crop a
    ``size`` window at an independent uniformly random position per image (as torchvision's
    ``RandomCrop(size, padding)``; CIFAR's standard "crop 32, pad 4"). Vectorised with index
    arithmetic: one gather for the whole batch (:func:`crop`).

    Parameters: ``{"top": (N,), "left": (N,)}`` crop corners in padded coordinates.

    >>> x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    >>> bool((RandomCrop(4, padding=0)(x, torch.Generator().manual_seed(0)) == x).all())
    True
    """

    def __init__(self, size: int | tuple[int, int], padding: int = 4, fill: float = 0) -> None:
        super().__init__()
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if len(hw) != 2 or any((not isinstance(v, int)) or v < 1 for v in hw):
            raise ValueError(f"size must be a positive int or (h, w) of positive ints, got {size!r}")
        if not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be a non-negative int, got {padding!r}")
        self.size = hw
        self.padding = padding
        self.fill = fill

    def offsets(self, n: int, h: int, w: int, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The random (top, left) crop corners in padded coordinates, each in
        ``[0, h + 2·padding − size_h]`` (resp. width); ``padding`` means no shift."""
        ch, cw = self.size
        hp, wp = h + 2 * self.padding, w + 2 * self.padding
        if ch > hp or cw > wp:
            raise ValueError(f"crop size {self.size} is larger than the padded image ({hp}, {wp}); "
                             f"use a smaller size or more padding")
        dev = generator_device(generator)
        top = torch.randint(0, hp - ch + 1, (n,), generator=generator, device=dev)
        left = torch.randint(0, wp - cw + 1, (n,), generator=generator, device=dev)
        return top, left

    def make_params(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, Any]:
        n, _, h, w = x.shape
        top, left = self.offsets(n, h, w, generator)
        return {"top": top, "left": left}

    def apply(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return crop(x, params["top"], params["left"], self.size, padding=self.padding, fill=self.fill)

    def extra_repr(self) -> str:
        return f"size={self.size}, padding={self.padding}, fill={self.fill}"


class GridMask(BatchTransform):
    """GridMask (Chen, Liu, Wang & Jia 2020, "GridMask Data Augmentation", arXiv:2001.04086),
    built for a whole batch at once.

    Following the authors' reference code (``imagenet_grid/utils/grid.py``, class ``Grid``), per
    image and with these defaults: with probability ``prob`` the image is masked, else kept;
    the grid unit ``d`` is an integer uniform in ``[d1, d2)``; ``l = floor(d·ratio + 0.5)`` (their
    rounding; equals ``⌈d·ratio⌉`` for the default ``ratio=0.5``) is the width of the *removed*
    stripes: in a mask 1.5× the image size, rows with ``(y − δy) mod d < l`` and columns with
    ``(x − δx) mod d < l`` are set to 0, with random offsets ``δy, δx`` uniform in ``[0, d)``,
    so ``(d − l)²`` of every ``d²`` unit is kept; the mask is rotated by an integer angle
    uniform in ``[0, rotate)`` degrees about its centre (``rotate=1``: no rotation; nearest
    neighbour, PIL's ``Image.rotate`` geometry; points rotated in from outside the mask are 0)
    and centre-cropped to the image; ``mode=1`` inverts it. The image is multiplied by the mask
    (the same for all channels). Expected removed fraction for ``mode=0, rotate=1``:
    ``prob · E_d[1 − (1 − l/d)²]`` (each pixel's row and column phase is uniform over the unit).

    Vectorised: the mask is evaluated analytically at every output pixel (inverse rotation of
    the pixel centre, then the modular stripe test; :func:`gridmask_keep`), never drawn image by
    image. Parameters (:meth:`draw`), drawn from the generator in this order: ``apply``, ``d``,
    ``st_h``, ``st_w``, ``angle`` (each ``(N,)``).

    >>> gm = GridMask(4, 5, ratio=0.5, rotate=1, prob=1.0)
    >>> keep = gm.sample_mask(1, 8, 8, torch.Generator().manual_seed(0))
    >>> keep.shape, keep.float().mean().item()   # d = 4, l = 2: (2/4)**2 of the pixels kept
    (torch.Size([1, 8, 8]), 0.25)
    """

    def __init__(self, d1: int, d2: int, ratio: float = 0.5, rotate: int = 1, prob: float = 0.8,
                 mode: int = 0) -> None:
        super().__init__()
        if not (isinstance(d1, int) and isinstance(d2, int)) or not (1 <= d1 < d2):
            raise ValueError(f"need integers 1 <= d1 < d2 (d is drawn from [d1, d2)); got d1={d1!r}, d2={d2!r}")
        if not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f"ratio must lie in [0, 1], got {ratio!r}")
        if not isinstance(rotate, int) or rotate < 1:
            raise ValueError(f"rotate must be an int >= 1 (angles from [0, rotate) degrees; 1 = none), got {rotate!r}")
        if not 0.0 <= float(prob) <= 1.0:
            raise ValueError(f"prob must lie in [0, 1], got {prob!r}")
        if mode not in (0, 1):
            raise ValueError(f"mode must be 0 (remove the grid lines) or 1 (keep only them), got {mode!r}")
        self.d1, self.d2, self.ratio, self.rotate, self.prob, self.mode = d1, d2, float(ratio), rotate, float(prob), mode

    def expected_masked_fraction(self) -> float:
        """``prob · mean_d [1 − (1 − l_d/d)²]`` over ``d ∈ [d1, d2)``: the exact expected
        fraction of removed pixels for ``mode=0, rotate=1`` (approximate with rotation).

        >>> round(GridMask(4, 5, ratio=0.5, prob=1.0).expected_masked_fraction(), 4)
        0.75
        """
        fr = [1 - (1 - math.floor(d * self.ratio + 0.5) / d) ** 2 for d in range(self.d1, self.d2)]
        frac = sum(fr) / len(fr)
        return self.prob * (frac if self.mode == 0 else 1 - frac)

    def draw(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The random parameters of ``n`` images, on the generator's device."""
        gdev = generator_device(generator)
        apply = torch.rand(n, generator=generator, device=gdev) < self.prob
        d = torch.randint(self.d1, self.d2, (n,), generator=generator, device=gdev)
        # Offsets uniform in [0, d): float64 so floor(u·d) < d (clamped to be safe).
        st_h = torch.minimum((torch.rand(n, generator=generator, device=gdev, dtype=torch.float64) * d).floor(), d - 1)
        st_w = torch.minimum((torch.rand(n, generator=generator, device=gdev, dtype=torch.float64) * d).floor(), d - 1)
        angle = torch.randint(0, self.rotate, (n,), generator=generator, device=gdev)
        return {"apply": apply, "d": d, "st_h": st_h.long(), "st_w": st_w.long(), "angle": angle}

    def keep_from_params(self, h: int, w: int, params: dict[str, torch.Tensor],
                         device: torch.device | str | None = None) -> torch.Tensor:
        """Bool keep-mask ``(n, h, w)`` of drawn parameters (True = pixel kept)."""
        dev = torch.device(device) if device is not None else params["d"].device
        keep = self.mask_from_params(h, w, params["d"].to(dev), params["st_h"].to(dev), params["st_w"].to(dev),
                                     params["angle"].to(dev))
        return keep | ~params["apply"].to(dev)[:, None, None]

    def sample_mask(self, n: int, h: int, w: int, generator: torch.Generator | None = None,
                    device: torch.device | str | None = None) -> torch.Tensor:
        """Bool keep-mask ``(n, h, w)`` for a batch of ``n`` images (True = pixel kept)."""
        return self.keep_from_params(h, w, self.draw(n, generator), device)

    def mask_from_params(self, h: int, w: int, d: torch.Tensor, st_h: torch.Tensor, st_w: torch.Tensor,
                         angle: torch.Tensor) -> torch.Tensor:
        """Bool keep-mask ``(n, h, w)`` for given per-image unit ``d``, offsets ``st_h``,
        ``st_w`` (in ``[0, d)``) and integer ``angle`` in degrees (all int tensors ``(n,)``),
        ignoring ``prob`` (every image masked)."""
        return gridmask_keep(h, w, d, st_h, st_w, angle, ratio=self.ratio, mode=self.mode)

    def make_params(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, Any]:
        return self.draw(x.shape[0], generator)

    def apply(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        h, w = x.shape[-2:]
        return mask(x, self.keep_from_params(h, w, params, device=x.device))

    def extra_repr(self) -> str:
        return (f"d1={self.d1}, d2={self.d2}, ratio={self.ratio}, rotate={self.rotate}, "
                f"prob={self.prob}, mode={self.mode}")


class _Fn(nn.Module):
    """Wrap a plain function as a module (so it can sit in a ModuleList)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class EncryptBatch(BatchTransform):
    """Encrypt a batch after augmentation: one cipher, or a per-image key from a key set.

    ``ciphers`` is a cipher module (``forward(x)`` encrypts, ``inverse(y)`` decrypts, shape
    and dtype preserved), a list of them (a set of N keys), or key objects, which are turned
    into ciphers with ``ppml.ciphers.cipher_for``. With several ciphers, every call draws a
    key index per image from the generator (so it is re-drawn every epoch, reproducibly) and
    encrypts image n with cipher ``keys[n]``: when the ciphers are ppml single-key ciphers of
    one scheme and geometry, in one gather through their key set
    (:func:`ppml.ciphers.stack_ciphers`, built on first use on the ciphers' device and kept out
    of ``state_dict``); other modules (as below) one call per key, ``y[idx_k] = cipher_k(x[idx_k])``.
    The drawn indices are kept in ``last_keys`` (for :meth:`inverse` or inspection); pass
    ``keys=`` to choose them yourself (e.g. test images under key 0). A single cipher draws no
    random numbers. Parameters: ``{"keys": (N,) int64}``.

    >>> class AddOne(nn.Module):            # stand-in ciphers for the example
    ...     def __init__(self, k): super().__init__(); self.k = k
    ...     def forward(self, x): return x + self.k
    ...     def inverse(self, y): return y - self.k
    >>> enc = EncryptBatch([AddOne(10), AddOne(20)])
    >>> x = torch.zeros(6, 1, 1, 1)
    >>> y = enc(x, torch.Generator().manual_seed(0))
    >>> bool((y.flatten() == 10 * (enc.last_keys + 1)).all()), bool((enc.inverse(y) == x).all())
    (True, True)
    """

    def __init__(self, ciphers: Any) -> None:
        super().__init__()
        # A ModuleList or a plain sequence is a key set; any other module (a Sequential
        # pipeline included) is one cipher.
        if isinstance(ciphers, nn.Module) and not isinstance(ciphers, nn.ModuleList):
            items = [ciphers]
        elif isinstance(ciphers, (str, bytes)) or not isinstance(ciphers, Iterable):
            items = [ciphers]
        else:
            items = list(ciphers)
        if not items:
            raise ValueError("EncryptBatch needs at least one cipher (or key)")
        mods = []
        for i, c in enumerate(items):
            if isinstance(c, nn.Module):
                mods.append(c)
            elif callable(c):
                mods.append(_Fn(c))
            else:
                try:
                    mods.append(cipher_for(c))
                except (TypeError, ValueError) as e:
                    raise ValueError(f"item {i} ({type(c).__name__}) is neither a cipher module, a callable "
                                     f"nor a ppml key: {e}") from e
        self.ciphers = nn.ModuleList(mods)
        self.last_keys: torch.Tensor | None = None
        # the key set of the ciphers, by the ciphers' device: not a submodule, so neither
        # state_dict nor a checkpoint's run fingerprint sees a second copy of the tables
        self._key_sets: dict[Any, tuple[tuple[nn.Module, ...], nn.Module | None]] = {}

    @property
    def num_keys(self) -> int:
        """Number of keys (ciphers) in the set."""
        return len(self.ciphers)

    def draw_keys(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Key index per image, uniform over the set (int64 on the generator's device)."""
        return torch.randint(0, self.num_keys, (n,), generator=generator, device=generator_device(generator))

    def _key_set(self) -> nn.Module | None:
        """The key set of the ciphers (None for other modules), rebuilt when they change or move."""
        return cached_key_set(self, self.ciphers)

    def _encrypt_by_key(self, x: torch.Tensor, keys: torch.Tensor, inverse: bool) -> torch.Tensor:
        if self.num_keys == 1:
            c = self.ciphers[0]
            return c.inverse(x) if inverse else c(x)
        key_set = self._key_set()
        if key_set is not None:
            return key_set.inverse(x, key_ids=keys) if inverse else key_set(x, key_ids=keys)
        out = None
        for k, c in enumerate(self.ciphers):
            idx = torch.nonzero(keys == k).reshape(-1)
            if idx.numel() == 0:
                continue
            part = x.index_select(0, idx)
            part = c.inverse(part) if inverse else c(part)
            if out is None:
                out = torch.empty((x.shape[0], *part.shape[1:]), dtype=part.dtype, device=part.device)
            out[idx] = part
        assert out is not None  # keys is non-empty here
        return out

    def _keys(self, x: torch.Tensor, keys: torch.Tensor | Sequence[int] | int | None,
              generator: torch.Generator | None) -> torch.Tensor:
        n = x.shape[0]
        if keys is None:
            k = self.draw_keys(n, generator) if self.num_keys > 1 else torch.zeros(n, dtype=torch.int64)
        else:
            k = torch.as_tensor(keys, dtype=torch.int64)
            if k.ndim == 0:
                k = k.expand(n)
            if k.shape != (n,):
                raise ValueError(f"keys must be one index per image ({n}), got shape {tuple(k.shape)}")
            if n and (int(k.min()) < 0 or int(k.max()) >= self.num_keys):
                raise ValueError(f"key indices must lie in [0, {self.num_keys})")
        return k.to(x.device)

    def make_params(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, Any]:
        return {"keys": self._keys(x, None, generator)}

    def apply(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        k = self._keys(x, params["keys"], None)
        if x.shape[0] == 0:
            return x
        return self._encrypt_by_key(x, k, inverse=False)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, *,
                keys: torch.Tensor | Sequence[int] | int | None = None) -> torch.Tensor:
        check_batch(x, "EncryptBatch")
        k = self._keys(x, keys, generator)
        self.last_keys = k
        self.last_params = {"keys": k}
        if x.shape[0] == 0:
            return x
        return self._encrypt_by_key(x, k, inverse=False)

    def inverse(self, y: torch.Tensor, keys: torch.Tensor | Sequence[int] | int | None = None) -> torch.Tensor:
        """Decrypt ``y`` with per-image key indices ``keys`` (default: those of the last call)."""
        check_batch(y, "EncryptBatch.inverse")
        if keys is None:
            if self.num_keys > 1 and (self.last_keys is None or self.last_keys.shape[0] != y.shape[0]):
                raise ValueError("give keys= (one index per image): no matching previous call to reuse")
            keys = self.last_keys if self.num_keys > 1 else 0
        k = self._keys(y, keys, None)
        if y.shape[0] == 0:
            return y
        return self._encrypt_by_key(y, k, inverse=True)

    def extra_repr(self) -> str:
        return f"num_keys={self.num_keys}"
