"""ScrambleMix (Madono, Tanaka & Onishi): mix two scramblings of an image under a key pair.

A key set holds ``P`` key **pairs** ``(k_a, k_b)`` of a scrambling cipher ``S`` (pixel-based
encryption, PE, by default, as in the authors' code; LE or EtC selectable). One *view* of an
image ``x`` under pair ``p`` is (slides "ScrambleMix (Proposed)")::

    v = (1 - m) · S(x; k_a) + m · S(x; k_b),      m ~ Beta(α, α)

with images in [0, 1]. The authors' code uses ``P = 4`` pairs and ``α = 5e-3``, so ``m`` is
almost always within 1e-2 of 0 or 1 and a view is essentially one of the ``2P`` scramblings.
Training uses ``D`` views per image per step (one per pair, :meth:`ScrambleMix.views`); the
edge sends one view at inference (``T = 1``, :meth:`ScrambleMix.sample`) or ``T`` views whose
posteriors the server averages (:func:`ppml.train.predict_views`, slides "Inference").

This is a *randomised encoder*, not a cipher: ``m`` is fresh for every view and is not sent,
so there is no ``inverse``. Randomness comes from an explicit ``torch.Generator`` (CPU), as
for every batch transform of :mod:`ppml.loader`, so runs are reproducible.

Deviations of the authors' code (REFERENCE_FACTS.md), available as options:
``compat="reference"`` applies their PE channel shuffle, which assigns numpy views in
sequence and so duplicates a channel for 5 of the 6 codes (not invertible; derived here by
simulating that assignment, :func:`reference_channel_map`); they also fed the network values
in [0, 255] — not reproduced (a scale factor the first BatchNorm absorbs).

>>> import torch
>>> sm = ScrambleMix.generate(num_pairs=2, image_size=8, seed=0)
>>> x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
>>> v = sm.views(x, torch.Generator().manual_seed(0))
>>> v.shape, v.dtype, bool(v.min() >= 0) and bool(v.max() <= 1)
(torch.Size([5, 2, 3, 8, 8]), torch.float32, True)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from ppml.keys import EtCKey, Key, LEKey, PEKey, channel_permutations

__all__ = ["ScrambleMix", "ReferencePE", "reference_channel_map", "SCHEMES"]

#: scrambling schemes selectable by name in :meth:`ScrambleMix.generate`
SCHEMES = ("pe", "le", "etc")
_KEYS: dict[str, type[Key]] = {"pe": PEKey, "le": LEKey, "etc": EtCKey}


def reference_channel_map(channels: int = 3) -> np.ndarray:
    """What the authors' PE channel shuffle really computes, per permutation code: ``(C!, C)``.

    Their code writes ``img[:,:,0], img[:,:,1], img[:,:,2] = img[:,:,p0], img[:,:,p1], img[:,:,p2]``
    on a numpy array; the right-hand side holds *views*, so a channel already overwritten is
    read back. This simulates exactly that assignment on an image whose channel ``c`` holds
    the value ``c`` and returns, for each code, the source channel of every output channel.
    Only the identity stays a permutation.

    >>> reference_channel_map().tolist()
    [[0, 1, 2], [0, 2, 2], [1, 1, 2], [1, 2, 1], [2, 2, 2], [2, 1, 2]]
    """
    out = []
    for perm in channel_permutations(channels):
        img = np.arange(channels).reshape(1, 1, channels).copy()
        views = [img[:, :, int(p)] for p in perm]  # views, evaluated before the writes
        for c, v in enumerate(views):
            img[:, :, c] = v
        out.append(img[0, 0].copy())
    return np.stack(out)


class ReferencePE(nn.Module):
    """PE as the ScrambleMix code computes it (duplicating channel shuffle; not invertible).

    Negation first (``v -> 255 - v`` where ``key.negpos`` is 1), then output channel ``j``
    takes channel ``reference_channel_map()[code][j]`` of the negated pixel. uint8 → uint8;
    float in [0, 1] → float (quantised to 8 bits like :class:`~ppml.ciphers.PE`).

    ``ReferencePE(keys=[k0, …])`` (or :meth:`from_keys`) holds K keys of one image size as
    stacked ``(K, C, H, W)`` buffers; ``forward(x, key_ids)`` scrambles image ``n`` with key
    ``key_ids[n]`` (int64 ``(N,)`` on ``x``'s device) in the same two gathers.

    >>> k = PEKey(negpos=np.zeros((3, 1, 1), dtype=np.int64), channel_perm=np.array([[1]]))
    >>> ReferencePE(k)(torch.tensor([10, 20, 30], dtype=torch.uint8).view(1, 3, 1, 1)).flatten().tolist()
    [10, 30, 30]
    >>> ks = [k, PEKey(negpos=np.ones((3, 1, 1), dtype=np.int64), channel_perm=np.array([[0]]))]
    >>> x = torch.tensor([10, 20, 30], dtype=torch.uint8).view(1, 3, 1, 1).repeat(2, 1, 1, 1)
    >>> ReferencePE.from_keys(ks)(x, key_ids=torch.tensor([1, 0])).flatten().tolist()
    [245, 235, 225, 10, 30, 30]
    """

    def __init__(self, key: PEKey | None = None, *, keys: Sequence[PEKey] | None = None) -> None:
        super().__init__()
        if (key is None) == (keys is None):
            raise ValueError("ReferencePE: pass exactly one of key= (one key) or keys= (a key set)")
        key_list = [key] if key is not None else list(keys)  # type: ignore[arg-type]
        bad = next((k for k in key_list if not isinstance(k, PEKey)), None)
        if bad is not None or not key_list:
            raise TypeError(f"ReferencePE needs PEKeys, got {type(bad).__name__ if key_list else 'no keys'}")
        shape = key_list[0].negpos.shape
        if any(k.negpos.shape != shape for k in key_list):
            raise ValueError(f"ReferencePE: every key of a set must have the shape {shape} (C, H, W) of key 0")
        if key is not None:
            self.key = key  # a plain attribute, as ever (a run fingerprint hashes it)
        else:
            self.keys = tuple(key_list)
        perm = np.stack([k.channel_perm for k in key_list])  # (K, H, W)
        src = np.moveaxis(reference_channel_map(shape[0])[perm], -1, 1)  # (K, C, H, W)
        neg = np.stack([k.negpos for k in key_list]).astype(bool)
        if key is not None:  # one key: (C, H, W) buffers
            src, neg = src[0], neg[0]
        self.register_buffer("src", torch.from_numpy(np.ascontiguousarray(src)))
        self.register_buffer("neg", torch.from_numpy(np.ascontiguousarray(neg)))

    @classmethod
    def from_keys(cls, keys: Sequence[PEKey]) -> "ReferencePE":
        """The scrambler of a key set: ``forward(x, key_ids)`` uses ``keys[key_ids[n]]`` for image ``n``."""
        return cls(keys=keys)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, key_ids: torch.Tensor | None = None) -> torch.Tensor:
        shape, k = tuple(self.neg.shape[-3:]), self.num_keys
        if x.dim() != 4 or tuple(x.shape[1:]) != shape:
            raise ValueError(f"ReferencePE: expected (N, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
        neg, src = self.neg, self.src
        if k > 1 or key_ids is not None:
            fix = f"an int64 tensor of shape ({x.shape[0]},) on {x.device} with values in 0..{k - 1}"
            if not isinstance(key_ids, torch.Tensor) or key_ids.dtype != torch.int64 \
                    or tuple(key_ids.shape) != (x.shape[0],) or key_ids.device != x.device:
                raise ValueError(f"ReferencePE holds {k} key(s): key_ids must be {fix}")
            if x.shape[0] and (int(key_ids.min()) < 0 or int(key_ids.max()) >= k):
                raise ValueError(f"ReferencePE: key_ids must lie in 0..{k - 1}")
            if k > 1:  # each image's own rows
                neg, src = neg.index_select(0, key_ids), src.index_select(0, key_ids)
        q = x if x.dtype == torch.uint8 else (x.float() * 255).round().to(torch.uint8)
        y = torch.where(neg, 255 - q, q)
        y = torch.gather(y, 1, src.expand_as(y))
        return y if x.dtype == torch.uint8 else y.to(x.dtype) / 255

    @property
    def num_keys(self) -> int:
        """K, the number of keys (1 for a single-key scrambler)."""
        return 1 if self.neg.dim() == 3 else int(self.neg.shape[0])

    def extra_repr(self) -> str:
        who = f"key={self.key.fingerprint!r}" if self.num_keys == 1 else f"num_keys={self.num_keys}"
        return f"image_size={tuple(self.neg.shape[-2:])}, {who}"


def _key_set(scramblers: Sequence[nn.Module]) -> nn.Module | None:
    """One key set of all the scramblers (``key_ids`` picks one per image), or None."""
    if scramblers and all(type(m) is ReferencePE and m.num_keys == 1 for m in scramblers):
        devices = {m.neg.device for m in scramblers}
        shapes = {m.neg.shape for m in scramblers}
        if len(devices) == 1 and len(shapes) == 1:
            return ReferencePE.from_keys([m.key for m in scramblers]).to(devices.pop())
        return None
    from ppml.ciphers import stack_ciphers
    return stack_ciphers(scramblers)


def _scrambler(k: Any, compat: str) -> nn.Module:
    if isinstance(k, nn.Module):
        return k
    if isinstance(k, Key):
        if compat == "reference" and isinstance(k, PEKey):
            return ReferencePE(k)
        from ppml.ciphers import cipher_for
        return cipher_for(k)
    raise TypeError(f"a key pair must hold ppml keys or cipher modules, got {type(k).__name__}")


class ScrambleMix(nn.Module):
    """The ScrambleMix encoder: ``P`` key pairs of a scrambling cipher, mixed with ``m ~ Beta(α, α)``.

    Args:
        pairs: a sequence of ``(k_a, k_b)``: ppml keys (turned into ciphers) or cipher modules.
        alpha: the Beta parameter (5e-3 in the authors' code).
        mix_ratio: a fixed ``m`` instead of sampling (e.g. 0 = always ``k_a``: plain scrambling).
        compat: ``"paper"`` (invertible PE) or ``"reference"`` (the code's duplicating PE
            channel shuffle, :class:`ReferencePE`); only affects PE keys.

    All outputs are float32 in [0, 1] on the input's device. When the ``2P`` scramblers are
    ppml ciphers of one scheme and geometry (or all :class:`ReferencePE`), :meth:`encode` runs
    through one key set of all of them (``key_ids = 2·pair`` and ``2·pair + 1``: one gather
    for each of the two scramblings of the whole batch); other modules, one call per pair.
    """

    def __init__(self, pairs: Sequence[tuple[Any, Any]], *, alpha: float = 5e-3, mix_ratio: float | None = None,
                 compat: str = "paper") -> None:
        super().__init__()
        pairs = list(pairs)
        if not pairs or any(not isinstance(p, (tuple, list)) or len(p) != 2 for p in pairs):
            raise ValueError("pairs must be a non-empty sequence of (key_a, key_b) pairs; "
                             "use ScrambleMix.generate(num_pairs=...) to draw them")
        if compat not in ("paper", "reference"):
            raise ValueError(f"compat must be 'paper' or 'reference', got {compat!r}")
        if mix_ratio is None and not (isinstance(alpha, (int, float)) and alpha > 0):
            raise ValueError(f"alpha must be > 0 (or give a fixed mix_ratio), got {alpha!r}")
        if mix_ratio is not None and not 0.0 <= float(mix_ratio) <= 1.0:
            raise ValueError(f"mix_ratio must lie in [0, 1], got {mix_ratio!r}")
        self.alpha = float(alpha)
        self.mix_ratio = None if mix_ratio is None else float(mix_ratio)
        self.compat = compat
        self.scramblers = nn.ModuleList(_scrambler(k, compat) for p in pairs for k in p)  # 2p, 2p+1
        # all 2P scramblers as one key set, by their device (built on first use; not a
        # submodule, so state_dict and checkpoints hold the tables once, as before)
        self._key_sets: dict[Any, tuple[tuple[nn.Module, ...], nn.Module | None]] = {}

    @classmethod
    def generate(cls, *, num_pairs: int = 4, scheme: str = "pe", image_size: Any = 32, block_size: int = 4,
                 seed: int | None = None, **kw: Any) -> "ScrambleMix":
        """A fresh key set of ``num_pairs`` pairs of ``scheme`` keys (``"pe"``, ``"le"``, ``"etc"``).

        ``seed`` makes the keys reproducible (key ``i`` uses seed ``(seed, i)``); ``None``
        draws them from OS entropy. ``block_size`` is ignored for PE.

        >>> ScrambleMix.generate(num_pairs=3, image_size=8, seed=1).num_pairs
        3
        """
        if scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}; valid: {', '.join(SCHEMES)}")
        if int(num_pairs) < 1:
            raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
        keys = []
        for i in range(2 * int(num_pairs)):
            s = None if seed is None else np.random.SeedSequence([int(seed), i])
            if scheme == "pe":
                keys.append(PEKey.generate(image_size=image_size, seed=s))
            else:
                keys.append(_KEYS[scheme].generate(image_size=image_size, block_size=block_size, seed=s))
        return cls([(keys[2 * i], keys[2 * i + 1]) for i in range(int(num_pairs))], **kw)

    @property
    def num_pairs(self) -> int:
        """Number of key pairs ``P``."""
        return len(self.scramblers) // 2

    def sample_m(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` mixing ratios ``m ~ Beta(α, α)`` (float64, CPU), or the fixed ``mix_ratio``.

        Drawn as ``G_b / (G_a + G_b)`` with Gamma(α) variables from ``generator`` (so
        reproducible), computed in log space: for α = 5e-3 the Gammas themselves underflow.

        >>> m = ScrambleMix.generate(num_pairs=1, image_size=4, seed=0).sample_m(10000, torch.Generator().manual_seed(0))
        >>> round(float(((m > 0.01) & (m < 0.99)).double().mean()), 2)  # about 2 % of draws are mixed
        0.02
        """
        if self.mix_ratio is not None:
            return torch.full((n,), self.mix_ratio, dtype=torch.float64)
        # Gamma(α) via Marsaglia–Tsang's boost: G(α) = G(α + 1) · U^(1/α); in log space, since
        # U^(1/α) underflows for α = 5e-3.
        a = torch.full((2, n), self.alpha, dtype=torch.float64)
        g1 = torch._standard_gamma(a + 1, generator=generator)
        logu = torch.rand((2, n), generator=generator, dtype=torch.float64).clamp_min(1e-300).log()
        logg = g1.log() + logu / self.alpha
        return torch.sigmoid(logg[1] - logg[0])  # G_b / (G_a + G_b)

    def encode(self, x: torch.Tensor, pair: torch.Tensor | int, m: torch.Tensor | float) -> torch.Tensor:
        """Views of ``x`` (uint8, or float in [0, 1]) under pair index ``pair`` (one per image or
        one for all) with ratio ``m`` (the same): float32 ``(N, C, H, W)`` in [0, 1].

        >>> sm = ScrambleMix.generate(num_pairs=1, image_size=4, seed=0)
        >>> x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
        >>> torch.equal(sm.encode(x, 0, 0.0), sm.scramblers[0](x).float() / 255)
        True
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"ScrambleMix: expected a batch (N, C, H, W), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        n = x.shape[0]
        pair = torch.as_tensor(pair, dtype=torch.int64).expand(n).cpu() if not torch.is_tensor(pair) or pair.dim() == 0 \
            else pair.to("cpu", torch.int64)
        if pair.shape != (n,):
            raise ValueError(f"pair must be one index or one per image ({n}), got shape {tuple(pair.shape)}")
        if n and (int(pair.min()) < 0 or int(pair.max()) >= self.num_pairs):
            raise ValueError(f"pair indices must lie in [0, {self.num_pairs})")
        m = torch.as_tensor(m, dtype=torch.float32).expand(n) if not torch.is_tensor(m) or m.dim() == 0 \
            else m.to(torch.float32)
        if m.shape != (n,):
            raise ValueError(f"m must be one ratio or one per image ({n}), got shape {tuple(m.shape)}")
        m = m.to(x.device).view(n, 1, 1, 1)
        key_set = self._key_set()
        if key_set is not None:  # both scramblings of every image, one gather each
            ids = 2 * pair.to(x.device)
            a, b = key_set(x, key_ids=ids).float(), key_set(x, key_ids=ids + 1).float()
            if x.dtype == torch.uint8:
                a, b = a / 255, b / 255
            return (1 - m) * a + m * b
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        for p in torch.unique(pair).tolist():  # other modules: a loop over key pairs, never over images
            idx = torch.nonzero(pair == p).reshape(-1).to(x.device)
            part = x.index_select(0, idx)
            a = self.scramblers[2 * p](part).float()
            b = self.scramblers[2 * p + 1](part).float()
            if x.dtype == torch.uint8:
                a, b = a / 255, b / 255
            mp = m.index_select(0, idx)
            out[idx] = (1 - mp) * a + mp * b
        return out

    def _key_set(self) -> nn.Module | None:
        """The key set of the 2P scramblers (None for other modules), rebuilt when they change or move."""
        from ppml.ciphers.keysets import cached_key_set

        return cached_key_set(self, self.scramblers, _key_set)

    def views(self, x: torch.Tensor, generator: torch.Generator | None = None, *,
              num_views: int | None = None) -> torch.Tensor:
        """``num_views`` views per image (default ``P``, one per pair): ``(N, V, C, H, W)``.

        View ``t`` uses pair ``t mod P`` and its own fresh ``m`` (so ``V > P`` repeats pairs
        with new ratios; with α = 5e-3 that reaches the other key of the pair).
        """
        v = self.num_pairs if num_views is None else int(num_views)
        if v < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        n = x.shape[0]
        pair = (torch.arange(v) % self.num_pairs).repeat_interleave(n)
        m = self.sample_m(v * n, generator)
        xs = x.unsqueeze(0).expand(v, *x.shape).reshape(v * n, *x.shape[1:])
        return self.encode(xs, pair, m).view(v, n, *x.shape[1:]).transpose(0, 1)

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One view per image with a uniformly drawn pair (what the edge sends at ``T = 1``)."""
        pair = torch.randint(0, self.num_pairs, (x.shape[0],), generator=generator)
        return self.encode(x, pair, self.sample_m(x.shape[0], generator))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Batch transform for :class:`~ppml.loader.BatchLoader`: the ``D = P`` training views
        ``(N, D, C, H, W)`` (pair with :func:`ppml.losses.scramblemix_loss_hook`)."""
        return self.views(x, generator)

    def extra_repr(self) -> str:
        r = f"mix_ratio={self.mix_ratio}" if self.mix_ratio is not None else f"alpha={self.alpha}"
        return f"num_pairs={self.num_pairs}, {r}, compat={self.compat!r}"
