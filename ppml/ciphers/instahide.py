"""InstaHide (Huang, Song, Li & Arora 2020): mix k images, then flip the sign of every value.

An encoding of image ``x_1`` (the one it protects) is::

    e = σ ⊙ Σ_j λ_j · x̃_j,     x̃ = 2x − 1 ∈ [−1, 1],

with ``x_2 … x_k`` random partners (other images of the batch, re-drawn at every call, so
every epoch), weights ``λ = |g| / Σ|g|``, ``g ~ N(0, I_k)``, re-drawn until ``max λ ≤ 0.65``
(as in the authors' code), and an independent random sign ``σ ∈ {−1, +1}`` per value (pixel
and channel). The labels are mixed with the same weights (soft targets). "Inside-dataset"
InstaHide mixes private images only (the default); ``public=`` adds ``k − k_private``
partners from a public image pool whose labels are not mixed (their "cross-dataset" mode).
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
    targets: torch.Tensor | None  #: (N, K) mixed one-hot labels, or None without labels
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
    """

    def __init__(self, k: int = 4, *, max_weight: float = 0.65, public: torch.Tensor | None = None,
                 k_private: int | None = None) -> None:
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
        self.register_buffer("public", public if public is not None else torch.empty(0), persistent=False)

    def sample_weights(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, k)`` weights ``|g|/Σ|g|``, rows re-drawn until ``max ≤ max_weight`` (float32, CPU).

        >>> w = InstaHide(k=4).sample_weights(1000, torch.Generator().manual_seed(0))
        >>> bool(torch.allclose(w.sum(1), torch.ones(1000))), bool(w.max() <= 0.65)
        (True, True)
        """
        w = torch.empty(n, self.k, dtype=torch.float64)
        todo = torch.arange(n)
        while todo.numel():  # rejection rounds over the batch, never a loop over images
            g = torch.randn(todo.numel(), self.k, generator=generator, dtype=torch.float64).abs()
            cand = g / g.sum(1, keepdim=True)
            ok = (cand.max(1).values <= self.max_weight) if self.k > 1 else torch.ones(len(cand), dtype=torch.bool)
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
            cols += [-1 - torch.randint(0, len(self.public), (n,), generator=generator) for _ in range(n_pub)]
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
            targets = sum(priv[:, j:j + 1] * yt[partners[:, j].to(dev)] for j in range(self.k_private))
            targets = targets / priv.sum(1, keepdim=True)  # public partners carry no label (their code)
        return InstaHideBatch(signs * mix, targets, partners, lam, signs)

    def views(self, x: torch.Tensor, generator: torch.Generator | None = None, *, num_views: int = 1) -> torch.Tensor:
        """``num_views`` independent encodings of every image, ``(N, T, C, H, W)`` (for
        :func:`ppml.ciphers.scramblemix.predict_views`; partners are other images of ``x``)."""
        return torch.stack([self.encode(x, generator).images for _ in range(int(num_views))], 1)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Encodings only (no labels): ``encode(x, generator).images``."""
        return self.encode(x, generator).images

    def extra_repr(self) -> str:
        return f"k={self.k}, k_private={self.k_private}, max_weight={self.max_weight}, public={len(self.public)}"


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
