"""Input validation shared by every layer, and the one seed → ``torch.Generator`` function.

Imports nothing from ``ppml``, so any module may use it.

**Errors.** One exception type per kind of error, so that a caller can catch a kind and every
entry point raises the same type for the same defect:

=====================================================  ==========================================
defect                                                 exception
=====================================================  ==========================================
wrong Python type (a list for a tensor, 2.5 for an     ``TypeError``
int, a str for a probability)
wrong number of dimensions, channels, image size,      :class:`ShapeError` (a ``ValueError``)
an empty batch, sizes or lengths that must agree
wrong tensor dtype (float where uint8 is needed, int)  :class:`DTypeError` (a ``ValueError``)
values outside the allowed range, NaN / ±inf, an int   :class:`RangeError` (a ``ValueError``)
below its minimum, a probability outside [0, 1]
an unknown option name (``stage="fast"``)              ``ValueError``
=====================================================  ==========================================

The three subclasses of ``ValueError`` let a caller tell the kinds apart while
``except ValueError`` still catches every bad value. Every message names who raised it, the
argument, what was expected, what was got and the fix:
``"gan_attack: train_plain must be uint8 images, got torch.float32; convert float [0, 1]
images with (x * 255).round().to(torch.uint8)"``.

>>> check_images(torch.zeros(3, 8, 8), "x", "ssim")
Traceback (most recent call last):
...
ppml._checks.ShapeError: ssim: x must be a batch tensor of shape (N, C, H, W), got shape (3, 8, 8); add a batch dimension with x[None]
>>> check_positive_int(0, "epochs", "itn_attack")
Traceback (most recent call last):
...
ppml._checks.RangeError: itn_attack: epochs must be an int >= 1, got 0

**Seeds.** :func:`seed_generator` turns a seed — ``None`` (fresh OS entropy), a non-negative
int, a tuple of them, or a :class:`numpy.random.SeedSequence` — into a CPU generator through
``SeedSequence`` (which mixes the entropy so nearby seeds such as ``(seed, epoch)`` and
``(seed, epoch + 1)`` give unrelated streams) and two 32-bit words ``s0, s1`` of its state.
Two ways of folding the words into torch's 64-bit seed are in use, and both stay because
changing either would change published results:

* ``mixing="concat"``: ``s0 << 32 | s1`` — the batch loader's per-epoch shuffles and
  transform generators (:func:`ppml.loader.make_generator`);
* ``mixing="xor31"``: ``(s0 << 31) ^ s1`` — per-image key tables drawn from a key seed
  (:class:`ppml.papers.block_scramble_augmentation.PerImageBlockScramble`).

>>> a, b = seed_generator((0, 1)), seed_generator((0, 1))
>>> torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))
True
>>> seed_generator(5).initial_seed() == seed_generator((5,)).initial_seed()   # an int is a 1-tuple
True
>>> seed_generator(5).initial_seed() == seed_generator(5, mixing="xor31").initial_seed()
False
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

__all__ = ["ShapeError", "DTypeError", "RangeError", "check_images", "check_batch", "check_tensor",
           "check_range", "check_finite", "check_same_length", "check_int", "check_positive_int",
           "check_probability", "check_choice", "generator_device", "seed_sequence", "seed_generator",
           "MIXINGS"]

#: the ways of folding SeedSequence's two state words into torch's seed (see the module docstring)
MIXINGS = ("concat", "xor31")


class ShapeError(ValueError):
    """Wrong number of dimensions or channels, a wrong or too small image size, an empty batch,
    or sizes / lengths that must agree and do not."""


class DTypeError(ValueError):
    """A tensor of the wrong dtype (e.g. float images where 8-bit values are needed)."""


class RangeError(ValueError):
    """Values outside the allowed range: pixels outside [0, 1] or the declared range, NaN or
    ±inf, an integer below its minimum, a probability outside [0, 1]."""


def _at(who: str, name: str) -> str:
    return f"{who}: {name}" if who else name


_DTYPES = ("any", "uint8", "float")
_TO_UINT8 = "convert float [0, 1] images with (x * 255).round().to(torch.uint8)"


def check_tensor(x: Any, name: str, who: str = "", *, shape: str = "(N, C, H, W)") -> torch.Tensor:
    """``x`` itself if it is a ``torch.Tensor``, else ``TypeError``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{_at(who, name)} must be a torch.Tensor {shape}, got {type(x).__name__}; "
                        f"convert with torch.as_tensor(...)")
    return x


def check_images(x: Any, name: str, who: str = "", *, dtype: str = "any", channels: int | Sequence[int] | None = None,
                 min_size: int = 1, allow_empty: bool = False,
                 value_range: tuple[float, float] | None = (0.0, 1.0)) -> torch.Tensor:
    """``x`` itself if it is a batch of images ``(N, C, H, W)``; raises otherwise.

    Args:
        dtype: ``"any"`` (uint8 or floating point), ``"uint8"`` (8-bit values only) or
            ``"float"`` (floating point only).
        channels: the allowed channel count(s), or None for any.
        min_size: the smallest allowed height and width.
        allow_empty: whether ``N = 0`` is allowed.
        value_range: the range float images must lie in (and be finite); None skips the
            value check (for callers that check a declared range themselves).

    Raises ``TypeError`` (not a tensor), :class:`ShapeError` (not 4-D, empty, wrong channels,
    too small), :class:`DTypeError` (dtype) or :class:`RangeError` (NaN / ±inf, out of range).

    >>> check_images(torch.full((1, 3, 4, 4), 2.0), "x", "psnr")
    Traceback (most recent call last):
    ...
    ppml._checks.RangeError: psnr: x must lie in [0, 1], got values in [2, 2]; pass uint8 images or scale floats to [0, 1] (x / 255)
    """
    if dtype not in _DTYPES:
        raise ValueError(f"check_images: dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    where = _at(who, name)
    check_tensor(x, name, who)
    if x.ndim != 4:
        raise ShapeError(f"{where} must be a batch tensor of shape (N, C, H, W), got shape {tuple(x.shape)}; "
                         f"add a batch dimension with x[None]")
    if dtype == "uint8" and x.dtype != torch.uint8:
        raise DTypeError(f"{where} must be uint8 images (8-bit values), got {x.dtype}; {_TO_UINT8}")
    if dtype == "float" and not x.is_floating_point():
        raise DTypeError(f"{where} must be floating-point images, got {x.dtype}; "
                         f"convert uint8 images with x.float() / 255")
    if dtype == "any" and not (x.dtype == torch.uint8 or x.is_floating_point()):
        raise DTypeError(f"{where} must be uint8 or float images (uint8 0-255 or float in [0, 1]), got {x.dtype}; "
                         f"convert with x.to(torch.uint8) or x.float() / 255")
    if x.shape[0] == 0 and not allow_empty:
        raise ShapeError(f"{where} must hold at least one image, got an empty batch of shape {tuple(x.shape)}; "
                         f"pass a non-empty batch")
    if channels is not None:
        allowed = (channels,) if isinstance(channels, int) else tuple(channels)
        if x.shape[1] not in allowed:
            want = " or ".join(str(c) for c in allowed)
            raise ShapeError(f"{where} must have {want} channel(s), got {x.shape[1]} (shape {tuple(x.shape)})")
    if min(x.shape[-2:]) < min_size:
        raise ShapeError(f"{where} must be at least {min_size}×{min_size} pixels, got {tuple(x.shape[-2:])}")
    if value_range is not None and x.is_floating_point():
        check_range(x, name, who, value_range)
    return x


def check_batch(x: Any, who: str) -> None:
    """Raise unless ``x`` is a batch tensor ``(N, C, H, W)`` of uint8 or floats (any size, any
    values, may be empty): the check of the augmentation kernels.

    >>> check_batch(torch.zeros(3, 8, 8), "RandomCrop")
    Traceback (most recent call last):
    ...
    ppml._checks.ShapeError: RandomCrop: x must be a batch tensor of shape (N, C, H, W), got shape (3, 8, 8); add a batch dimension with x[None]
    """
    check_images(x, "x", who, allow_empty=True, min_size=0, value_range=None)


def check_finite(x: torch.Tensor, name: str, who: str = "") -> torch.Tensor:
    """``x`` itself if every value is finite, else :class:`RangeError` counting the bad ones."""
    if x.is_floating_point() or x.is_complex():
        bad = int((~torch.isfinite(x.detach())).sum())
        if bad:
            raise RangeError(f"{_at(who, name)} must be finite, got {bad} non-finite value(s) (NaN or ±inf); "
                             f"check what produced it (e.g. a diverged model) or use torch.nan_to_num(x)")
    return x


def check_range(x: torch.Tensor, name: str, who: str = "", value_range: tuple[float, float] = (0.0, 1.0), *,
                tol: float = 0.0, fix: str = "pass uint8 images or scale floats to [0, 1] (x / 255)") -> torch.Tensor:
    """``x`` itself if it is finite and lies in ``value_range`` (± ``tol``), else :class:`RangeError`."""
    if x.numel() == 0:
        return x
    check_finite(x, name, who)
    lo, hi = float(value_range[0]), float(value_range[1])
    mn, mx = float(x.detach().min()), float(x.detach().max())
    if mn < lo - tol or mx > hi + tol:
        raise RangeError(f"{_at(who, name)} must lie in [{lo:g}, {hi:g}], got values in [{mn:.4g}, {mx:.4g}]; {fix}")
    return x


def check_same_length(sized: Mapping[str, Any], who: str = "", *, why: str = "") -> int:
    """The common length of the named sequences / batches, or :class:`ShapeError` naming them all.

    >>> check_same_length({"members": [1, 2], "weights": [1]}, "mix", why="one weight per member")
    Traceback (most recent call last):
    ...
    ppml._checks.ShapeError: mix: members, weights must have the same length (one weight per member), got 2, 1
    """
    lengths = {k: len(v) for k, v in sized.items()}
    if len(set(lengths.values())) > 1:
        names = ", ".join(lengths)
        got = ", ".join(str(n) for n in lengths.values())
        because = f" ({why})" if why else ""
        raise ShapeError(f"{_at(who, names)} must have the same length{because}, got {got}")
    return next(iter(lengths.values()), 0)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_int(v: Any, name: str, who: str = "", *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``int(v)`` if ``v`` is an integer (not a bool) in ``[minimum, maximum]``; ``TypeError``
    for another type, :class:`RangeError` out of range."""
    bounds = (f" >= {minimum}" if maximum is None else f" in {minimum}..{maximum}") if minimum is not None \
        else (f" <= {maximum}" if maximum is not None else "")
    if not _is_int(v):
        raise TypeError(f"{_at(who, name)} must be an int{bounds}, got {type(v).__name__} {v!r}")
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise RangeError(f"{_at(who, name)} must be an int{bounds}, got {v!r}")
    return int(v)


def check_positive_int(v: Any, name: str, who: str = "") -> int:
    """``int(v)`` if ``v`` is an int >= 1 (see :func:`check_int`)."""
    return check_int(v, name, who, minimum=1)


def check_probability(p: Any, name: str = "p", who: str = "") -> float:
    """``float(p)`` if ``p`` is a real number in [0, 1]; ``TypeError`` for another type,
    :class:`RangeError` outside [0, 1] or NaN."""
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"{_at(who, name)} must be a probability (a number in [0, 1]), got {type(p).__name__} {p!r}")
    if not (0.0 <= float(p) <= 1.0):  # also rejects NaN
        raise RangeError(f"{_at(who, name)} must be a probability in [0, 1], got {p!r}")
    return float(p)


def check_choice(value: Any, name: str, choices: Sequence[Any], who: str = "") -> Any:
    """``value`` if it is one of ``choices``, else ``ValueError`` listing them."""
    if value not in choices:
        prefix = f"{who}: " if who else ""
        raise ValueError(f"{prefix}unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}")
    return value


def generator_device(generator: torch.Generator | None) -> torch.device:
    """The device random numbers are drawn on: the generator's, CPU for torch's global RNG."""
    return generator.device if generator is not None else torch.device("cpu")


def seed_sequence(seed: Any) -> np.random.SeedSequence:
    """``seed`` as a :class:`numpy.random.SeedSequence`: ``None`` → fresh OS entropy, an int or
    a tuple/list of ints → that entropy, a SeedSequence → itself."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if seed is None:
        return np.random.SeedSequence(None)
    words = list(seed) if isinstance(seed, (tuple, list)) else [seed]
    if not all(_is_int(v) for v in words):
        raise ValueError(f"seed must be None (OS entropy), a non-negative int, a tuple of them or a numpy "
                         f"SeedSequence, got {seed!r}")
    if any(int(v) < 0 for v in words):
        raise ValueError(f"seed entropy must be non-negative integers, got {seed!r}")
    return np.random.SeedSequence([int(v) for v in words])


def seed_generator(seed: Any, *, mixing: str = "concat") -> torch.Generator:
    """A CPU ``torch.Generator`` from ``seed`` (see :func:`seed_sequence`); ``mixing`` chooses how
    the two state words become torch's seed (see the module docstring)."""
    if mixing not in MIXINGS:
        raise ValueError(f"mixing must be one of {', '.join(MIXINGS)}, got {mixing!r}")
    s0, s1 = (int(v) for v in seed_sequence(seed).generate_state(2, dtype=np.uint32))
    value = (s0 << 32 | s1) if mixing == "concat" else (s0 << 31) ^ s1
    return torch.Generator().manual_seed(value)
