"""InstaHide (Huang, Song, Li & Arora 2020): mix k images, then flip the sign of every value.

An encoding of image ``x_1`` (the one it protects) is::

    e = σ ⊙ Σ_j λ_j · x̃_j,     x̃ = 2x − 1 ∈ [−1, 1],

with ``x_2 … x_k`` random partners (other images of the batch, re-drawn at every call, so
every epoch), weights ``λ = |g| / Σ|g|``, ``g ~ N(0, I_k)``, re-drawn until ``max λ ≤ 0.65``
(as in the authors' code), and an independent random sign ``σ ∈ {−1, +1}`` per value (pixel
and channel). The labels are mixed with the same weights (soft targets). "Inside-dataset"
InstaHide mixes private images only (the default; the authors' ``train_inside.py``).
``public=`` adds ``k − k_private`` partners from a public image pool whose labels are not
mixed: the "cross-dataset" mode of the authors' ``train_cross.py`` (README: ``--klam 6
--pair --dom 0.3``, i.e. ``k=6, k_private=2``), which differs in three ways, all followed
here: weights are re-drawn while ``max λ > 0.65`` **or** ``λ_0 + λ_1 < 0.3`` (the private
share, their ``dom``/"c2"); the mixed targets are **not** renormalised (they sum to the
private weights, ``λ_0 + λ_1``); and the public partners of one call (one epoch: their
``generate_sample`` encodes the whole training set at once) come from a fresh permutation
``P`` of the public pool, public slot ``j`` taking ``P[π_j]`` with ``π_j`` a permutation of
the batch (so the ``n`` public images ``P[:n]`` of that epoch each appear once per slot;
the pool must hold at least as many images as the batch).
Images are centred to [−1, 1] before mixing (InstaHide normalises its inputs; without
centring ``|e|`` would equal the plain mixture and the sign mask would hide nothing).

At inference the edge encodes each test image ``T`` times with fresh partners (other test
images of the batch), weights and signs; the server averages the ``T`` posteriors (slides:
"InstaHide, T = 10").

A randomised encoder, not a cipher: nothing here inverts an encoding.

>>> import torch
>>> ih = InstaHide(k=1)
>>> x = torch.rand(4, 3, 8, 8)
>>> out = ih.encode(x, torch.Generator().manual_seed(0))
>>> torch.equal(out.images.abs(), (2 * x - 1).abs())   # k = 1: the sign mask only
True
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["InstaHide", "InstaHideBatch", "instahide_loss_hook"]


class InstaHideBatch(NamedTuple):
    """What :meth:`InstaHide.encode` returns (everything per encoding, batch order)."""

    images: torch.Tensor    #: (N, C, H, W) encodings, float in [−1, 1]
    targets: torch.Tensor | None  #: (N, K) mixed one-hot labels (sum to the private weights), or None
    partners: torch.Tensor  #: (N, k) source index of each mixed image (column 0: the image itself); −1 − i for public image i
    weights: torch.Tensor   #: (N, k) mixing weights λ (rows sum to 1)
    signs: torch.Tensor     #: (N, C, H, W) the ±1 mask σ


def _as_unit(x: torch.Tensor, who: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"{who}: expected a batch (N, C, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.dtype == torch.uint8:
        return x.float() / 255
    if not x.is_floating_point():
        raise ValueError(f"{who}: expected uint8 or float images in [0, 1], got {x.dtype}")
    return x.float()


class InstaHide(nn.Module):
    """The InstaHide encoder.

    Args:
        k: images per encoding (4 in the reference facts; 1 = sign mask only).
        max_weight: weights are re-drawn until every λ ≤ this (0.65 in the authors' code).
        public: optional public images ``(M, C, H, W)`` (uint8 or float [0, 1]) for cross-dataset
            mixing; then ``k_private`` of the ``k`` images come from the batch.
        k_private: private images per encoding with ``public`` (default ``k``: inside-dataset).
        min_private_share: weights are also re-drawn while ``λ_0 + λ_1`` is below this (the
            authors' ``--dom``, "c2"; their rule reads the first two slots, the two private
            images of ``--pair``). Default ``None``: 0.3 with a public pool (cross-dataset, their
            default), 0 without (``train_inside.py`` has no such bound).
    """

    def __init__(self, k: int = 4, *, max_weight: float = 0.65, public: torch.Tensor | None = None,
                 k_private: int | None = None, min_private_share: float | None = None) -> None:
        super().__init__()
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if k > 1 and not 1.0 / k <= max_weight <= 1.0:
            raise ValueError(f"max_weight must lie in [1/k, 1] = [{1 / k:.3f}, 1] (else no weights qualify), "
                             f"got {max_weight}")
        self.k = int(k)
        self.max_weight = float(max_weight)
        self.k_private = self.k if k_private is None else int(k_private)
        if not 1 <= self.k_private <= self.k:
            raise ValueError(f"k_private must lie in [1, k={self.k}], got {k_private}")
        if self.k_private < self.k and public is None:
            raise ValueError("k_private < k needs a public image pool: pass public=(M, C, H, W) images")
        if public is not None:
            public = _as_unit(public, "InstaHide(public=)")
            if len(public) == 0:
                raise ValueError("InstaHide(public=): the public image pool is empty")
        dom = (0.3 if public is not None else 0.0) if min_private_share is None else float(min_private_share)
        top2 = min(2, self.k) * self.max_weight if self.k > 1 else 1.0
        if self.k > 1 and not 0.0 <= dom < min(1.0, top2):
            raise ValueError(f"min_private_share must lie in [0, {min(1.0, top2):.3f}) (λ_0 + λ_1 ≤ "
                             f"min(1, 2·max_weight)), got {min_private_share}")
        self.min_private_share = dom if self.k > 1 else 0.0
        self.register_buffer("public", public if public is not None else torch.empty(0), persistent=False)

    def sample_weights(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, k)`` weights ``|g|/Σ|g|``, rows re-drawn while ``max > max_weight`` or
        ``λ_0 + λ_1 < min_private_share`` (float32, CPU).

        >>> w = InstaHide(k=4).sample_weights(1000, torch.Generator().manual_seed(0))
        >>> bool(torch.allclose(w.sum(1), torch.ones(1000))), bool(w.max() <= 0.65)
        (True, True)
        """
        w = torch.empty(n, self.k, dtype=torch.float64)
        todo = torch.arange(n)
        while todo.numel():  # rejection rounds over the batch, never a loop over images
            g = torch.randn(todo.numel(), self.k, generator=generator, dtype=torch.float64).abs()
            cand = g / g.sum(1, keepdim=True)
            if self.k > 1:  # the authors' loop condition, negated: keep a row once it holds
                ok = (cand.max(1).values <= self.max_weight) & (cand[:, :2].sum(1) >= self.min_private_share)
            else:
                ok = torch.ones(len(cand), dtype=torch.bool)
            w[todo[ok]] = cand[ok]
            todo = todo[~ok]
        return w.float()

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None, *, y: torch.Tensor | None = None,
               num_classes: int | None = None) -> InstaHideBatch:
        """One encoding per image of the batch ``x`` (uint8 or float [0, 1]); with labels ``y``
        (class indices, needs ``num_classes``; or soft ``(N, K)``) also the mixed targets."""
        u = _as_unit(x, "InstaHide.encode")
        n, dev = u.shape[0], u.device
        cols = [torch.arange(n)]
        cols += [torch.randperm(n, generator=generator) for _ in range(self.k_private - 1)]
        n_pub = self.k - self.k_private
        if n_pub:
            if n > len(self.public):
                raise ValueError(f"InstaHide.encode: cross-dataset mode draws each epoch's public partners from a "
                                 f"permutation of the pool (as the authors' train_cross.py), so the pool needs at least "
                                 f"as many images as the batch: {len(self.public)} public < {n}; pass more public images "
                                 "or encode smaller batches")
            perm_pub = torch.randperm(len(self.public), generator=generator)  # the epoch's permutation of the pool
            cols += [-1 - perm_pub[torch.randperm(n, generator=generator)] for _ in range(n_pub)]
        partners = torch.stack(cols, 1)  # (n, k)
        lam = self.sample_weights(n, generator)
        signs = (torch.randint(0, 2, u.shape, generator=generator, dtype=torch.int8) * 2 - 1).to(dev)
        centred = 2 * u - 1
        mix = torch.zeros_like(centred)
        for j in range(self.k):  # loop over the k mixed slots
            idx = partners[:, j]
            src = centred[idx.clamp_min(0).to(dev)] if j < self.k_private else (2 * self.public[(-1 - idx).to(dev)] - 1)
            mix += lam[:, j].to(dev).view(n, 1, 1, 1) * src
        targets = None
        if y is not None:
            yt = y.to(dev)
            if yt.ndim == 1:
                if num_classes is None:
                    raise ValueError("InstaHide.encode: class-index labels need num_classes= to build the mixed targets")
                yt = F.one_hot(yt.long(), num_classes).float()
            priv = lam[:, :self.k_private].to(dev)
            # public partners carry no label and the rest is not renormalised (their mixup_criterion)
            targets = sum(priv[:, j:j + 1] * yt[partners[:, j].to(dev)] for j in range(self.k_private))
        return InstaHideBatch(signs * mix, targets, partners, lam, signs)

    def views(self, x: torch.Tensor, generator: torch.Generator | None = None, *, num_views: int = 1) -> torch.Tensor:
        """``num_views`` independent encodings of every image, ``(N, T, C, H, W)`` (for
        :func:`ppml.encoders.scramblemix.predict_views`; partners are other images of ``x``)."""
        return torch.stack([self.encode(x, generator).images for _ in range(int(num_views))], 1)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Encodings only (no labels): ``encode(x, generator).images``."""
        return self.encode(x, generator).images

    def extra_repr(self) -> str:
        return (f"k={self.k}, k_private={self.k_private}, max_weight={self.max_weight}, "
                f"min_private_share={self.min_private_share}, public={len(self.public)}")


def instahide_loss_hook(instahide: InstaHide, num_classes: int):
    """Loss hook ``loss(model, x, y)`` for :func:`ppml.train.fit`: encode the batch (partners
    from the batch, drawn from torch's global generator, which ``fit`` seeds and checkpoints),
    cross-entropy against the mixed soft targets; returns ``(loss, logits)``.

    >>> m = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> loss, logits = instahide_loss_hook(InstaHide(k=2), 3)(m, torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0]))
    >>> loss.ndim, logits.shape
    (0, torch.Size([4, 3]))
    """

    def instahide_hook(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        b = instahide.encode(x, y=y, num_classes=num_classes)
        logits = model(b.images)
        return F.cross_entropy(logits.float(), b.targets), logits

    instahide_hook.__qualname__ = f"instahide_hook(k={instahide.k})"
    return instahide_hook
