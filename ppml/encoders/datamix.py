"""DataMix baseline (after Liu et al. 2020, as the ScrambleMix slides describe it): mix images, then encrypt.

Variant implemented (documented choice): **pixel-space two-image mixing followed by a fixed
secret pixel-based encryption (PE)**. An image ``x`` with label ``y`` is sent as::

    e = S( λ·x + (1 − λ)·x' ; k ),      λ ~ U[λ_min, 1),

with ``x'`` a partner image (another image of the batch in training; a labelled image the
edge owns at inference) and ``S`` the PE cipher under one key. Training targets are mixed
the same way (mixup). At inference the edge knows ``λ`` and the partner's label ``y'`` and
*decodes* the returned posterior, ``p̂ − (1 − λ)·onehot(y')``, before the argmax — so a
prediction needs two images, the drawback the slides name.

Why this variant: Liu et al.'s DataMix mixes *features* of a batch after the first layers
on the edge and un-mixes after the last layers, which needs a split network; the slides
summarise the baseline as "mix images and encrypt images", and the ScrambleMix table's
DataMix row is a pixel-space baseline trained like the others. Numbers from this variant are
not comparable to Liu et al.'s own.

>>> import torch
>>> from ppml.keys import PEKey
>>> dm = DataMix(PEKey.generate(image_size=4, seed=0), lam_min=1.0)   # λ = 1: PE only
>>> x = torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8)
>>> torch.equal(dm.encode(x, torch.Generator().manual_seed(0)).images, dm.cipher(x).float() / 255)
True
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ppml.keys import Key

__all__ = ["DataMix", "DataMixBatch", "datamix_loss_hook"]


class DataMixBatch(NamedTuple):
    """What :meth:`DataMix.encode` returns."""

    images: torch.Tensor          #: (N, C, H, W) encrypted mixtures, float in [0, 1]
    targets: torch.Tensor | None  #: (N, K) mixed one-hot labels (with labels)
    partners: torch.Tensor        #: (N,) partner index
    lam: torch.Tensor             #: (N,) weight of the image itself


class DataMix(nn.Module):
    """Mix each image with one partner (weight ``λ ~ U[lam_min, 1)`` on the image), then PE-encrypt.

    Args:
        key: the secret key of the scrambling cipher (a :class:`~ppml.keys.PEKey` in the
            notebook; any ppml key works) or a cipher module; ``None``: no encryption.
        lam_min: lower end of λ (default 0.5, so the image dominates its mixture).
    """

    def __init__(self, key: Key | nn.Module | None, *, lam_min: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= lam_min <= 1.0:
            raise ValueError(f"lam_min must lie in [0, 1], got {lam_min}")
        self.lam_min = float(lam_min)
        if key is None or isinstance(key, nn.Module):
            self.cipher = key
        else:
            from ppml.ciphers import cipher_for
            self.cipher = cipher_for(key)

    def sample_lam(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` weights ``λ ~ U[lam_min, 1)`` (float32, CPU)."""
        return self.lam_min + (1 - self.lam_min) * torch.rand(n, generator=generator)

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None, *, y: torch.Tensor | None = None,
               num_classes: int | None = None, partner_images: torch.Tensor | None = None) -> DataMixBatch:
        """Encode a batch; partners are drawn from ``partner_images`` if given, else from ``x``
        (a random permutation). With labels ``y`` also the mixed targets (partners from ``x``)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError("DataMix.encode: expected a batch (N, C, H, W)")
        u = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        n, dev = u.shape[0], u.device
        pool = u if partner_images is None else (partner_images.float() / 255 if partner_images.dtype == torch.uint8
                                                 else partner_images.float()).to(dev)
        partners = torch.randperm(n, generator=generator) if partner_images is None \
            else torch.randint(0, len(pool), (n,), generator=generator)
        lam = self.sample_lam(n, generator)
        lv = lam.to(dev).view(n, 1, 1, 1)
        mix = lv * u + (1 - lv) * pool[partners.to(dev)]
        # Quantise to 8 bits before the byte cipher: the edge sends an 8-bit image.
        q = (mix * 255).round().to(torch.uint8)
        enc = (self.cipher(q) if self.cipher is not None else q).float() / 255
        targets = None
        if y is not None:
            if partner_images is not None:
                raise ValueError("DataMix.encode: mixed targets need partners from the batch (no partner_images)")
            yt = y.to(dev)
            if yt.ndim == 1:
                if num_classes is None:
                    raise ValueError("DataMix.encode: class-index labels need num_classes=")
                yt = F.one_hot(yt.long(), num_classes).float()
            lt = lam.to(dev).view(n, 1)
            targets = lt * yt + (1 - lt) * yt[partners.to(dev)]
        return DataMixBatch(enc, targets, partners, lam)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Encodings only, partners from the batch."""
        return self.encode(x, generator).images


def datamix_loss_hook(datamix: DataMix, num_classes: int):
    """Loss hook for :func:`ppml.train.fit`: encode the batch (torch's global generator, seeded
    by ``fit``) and train on the mixed soft targets; returns ``(loss, logits)``."""

    def datamix_hook(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        b = datamix.encode(x, y=y, num_classes=num_classes)
        logits = model(b.images)
        return F.cross_entropy(logits.float(), b.targets), logits

    datamix_hook.__qualname__ = "datamix_hook"
    return datamix_hook
