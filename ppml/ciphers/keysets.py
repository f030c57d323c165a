"""A key set cached beside the single-key ciphers it stacks (per device, never in a state dict).

Transforms that hold one cipher per key (:class:`ppml.transforms.EncryptBatch`,
:class:`ppml.encoders.ScrambleMix`) keep those modules as their public, checkpointed state
and encrypt through one key set built from them (:func:`~ppml.ciphers.blocks.stack_ciphers`):
one gather for a batch whose images use different keys. :func:`cached_key_set` builds it
once per device and rebuilds it when a cipher is swapped or the owner moves.

>>> import torch
>>> from torch import nn
>>> from ppml.ciphers import EtC
>>> from ppml.keys import EtCKey
>>> owner = nn.Module()
>>> owner.ms = nn.ModuleList(EtC(key=k) for k in EtCKey.generate_many(2, image_size=8, block_size=4, seed=0))
>>> ks = cached_key_set(owner, owner.ms)
>>> ks.num_keys, cached_key_set(owner, owner.ms) is ks, "_key_sets" in owner.state_dict()
(2, True, False)
"""

from __future__ import annotations

from typing import Callable, Iterable

from torch import nn

from ppml.ciphers.blocks import stack_ciphers

__all__ = ["cached_key_set"]


def cached_key_set(owner: nn.Module, modules: Iterable[nn.Module],
                   build: Callable[[tuple[nn.Module, ...]], nn.Module | None] = stack_ciphers) -> nn.Module | None:
    """The key set of ``modules`` (``build(modules)``; None where they cannot be stacked),
    cached on ``owner`` per device and rebuilt when the modules change or move."""
    mods = tuple(modules)
    dev = next((b.device for b in mods[0].buffers()), None) if mods else None
    cache = owner.__dict__.setdefault("_key_sets", {})  # (an owner unpickled from before it existed)
    cached = cache.get(dev)
    if cached is None or len(cached[0]) != len(mods) or any(a is not b for a, b in zip(cached[0], mods)):
        cached = cache[dev] = (mods, build(mods))
    return cached[1]
