"""Input validation shared by every layer, and the one seed → ``torch.Generator`` function.

Imports nothing from ``ppml``, so any module may use it.

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

from typing import Any

import numpy as np
import torch

__all__ = ["check_batch", "generator_device", "seed_sequence", "seed_generator", "MIXINGS"]

#: the ways of folding SeedSequence's two state words into torch's seed (see the module docstring)
MIXINGS = ("concat", "xor31")


def check_batch(x: Any, who: str) -> None:
    """Raise ``ValueError`` unless ``x`` is a batch tensor ``(N, C, H, W)`` of uint8 or floats.

    >>> check_batch(torch.zeros(3, 8, 8), "RandomCrop")
    Traceback (most recent call last):
    ...
    ValueError: RandomCrop expects a batch tensor (N, C, H, W); got (3, 8, 8) — add a batch dimension with x.unsqueeze(0)
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who} expects a batch tensor (N, C, H, W); got {shape} — "
                         f"add a batch dimension with x.unsqueeze(0)")
    if not (x.dtype == torch.uint8 or x.is_floating_point()):
        raise ValueError(f"{who} expects uint8 or floating-point images, got {x.dtype}")


def generator_device(generator: torch.Generator | None) -> torch.device:
    """The device random numbers are drawn on: the generator's, CPU for torch's global RNG."""
    return generator.device if generator is not None else torch.device("cpu")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


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
