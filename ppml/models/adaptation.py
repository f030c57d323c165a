"""Adaptation networks for block-wise scrambled images (LE and ELE), and a classifier wrapper.

An adaptation network sits before the classifier and learns to undo what a fixed key does
to each block, so an ordinary classifier can be trained on scrambled images (paper 05,
Fig. 1; Tanaka 2018; Madono et al. 2020).

Input representation. The LE and ELE ciphers permute and invert 4-bit *nibbles*, not
bytes: a byte of the scrambled image is ``16·hi + lo`` where ``hi`` and ``lo`` usually come
from different source bytes (and either may be a source's low nibble). Tanaka therefore
feeds the network the nibble planes, ``2C`` channels ``[x & 15 | x >> 4] / 15`` (all
channels' low nibbles, then all high nibbles) — :func:`nibble_planes`. On those planes each
block of LE is a fixed permutation + sign flip of its ``2·B·B·C`` inputs, which one
``B×B``-stride-``B`` convolution can undo exactly. ``representation="bytes"`` feeds the
scrambled image itself (``C`` channels in [0, 1]) instead, as the ELE authors' PyTorch code
does (its per-block convolutions take 3 channels).

Networks (inputs are uint8 or float in [0, 1], as :class:`ppml.loader.BatchLoader` yields):

* :class:`LEAdaptation` (Tanaka 2018, as REFERENCE_FACTS records it): one convolution with
  kernel = stride = block size shared by every block (LE uses one key for all blocks),
  BN + LeakyReLU, 1×1 convolutions, then ``PixelShuffle(B)`` back to full resolution with
  ``out_chans`` channels.
* :class:`ELEAdaptation` (Madono et al. 2020): a *separate* convolution per block position
  (ELE's key differs per block; implemented as one grouped convolution), BN + LeakyReLU,
  a learnable ``n×n`` block-mixing matrix that can undo ELE's block shuffle, then
  ``PixelShuffle(B)``. The authors' code also wraps the per-block convolutions in spectral
  normalisation; that is not reproduced here.
* :class:`AdaptedClassifier`: adaptation network + any registry classifier (built with
  ``in_chans = out_chans``).

Registered models: ``le_adaptation``, ``ele_adaptation`` (image → ``out_chans``-channel
image) and ``adapted_classifier`` (adaptation ``"le"``, ``"ele"`` or ``"none"`` + a
classifier by registry name).

>>> import torch
>>> from ppml.models import create_model
>>> m = create_model("adapted_classifier", adaptation="le", classifier="resnet20", num_classes=10)
>>> m(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from ppml._checks import ShapeError, check_images

from . import create_model, register_model

__all__ = ["nibble_planes", "NibblePlanes", "LEAdaptation", "ELEAdaptation", "AdaptedClassifier",
           "le_adaptation", "ele_adaptation", "adapted_classifier", "REPRESENTATIONS"]

#: input representations an adaptation network accepts
REPRESENTATIONS = ("nibbles", "bytes")


def _as_bytes(x: torch.Tensor, who: str) -> torch.Tensor:
    """uint8 as is; float in [0, 1] → ``round(x·255)`` (exact for images made as k/255)."""
    check_images(x, "x", who, allow_empty=True, min_size=0, value_range=None)
    if x.dtype == torch.uint8:
        return x
    return (x.detach().float() * 255).round_().clamp_(0, 255).to(torch.uint8)


def nibble_planes(x: torch.Tensor) -> torch.Tensor:
    """The ``2C`` nibble planes of an image batch: ``cat([x & 15, x >> 4]) / 15``, float32.

    Channel ``c`` holds the low nibbles of input channel ``c``, channel ``C + c`` the high
    nibbles, each scaled to [0, 1]. Float input in [0, 1] is first quantised to 8 bits.

    >>> import torch
    >>> x = torch.tensor([0x3A, 0xF0, 0x01], dtype=torch.uint8).view(1, 3, 1, 1)
    >>> (nibble_planes(x) * 15).flatten().tolist()
    [10.0, 0.0, 1.0, 3.0, 15.0, 0.0]
    """
    b = _as_bytes(x, "nibble_planes")
    return torch.cat([b & 15, b >> 4], dim=1).float().div_(15)


class NibblePlanes(nn.Module):
    """:func:`nibble_planes` as a module (``C`` → ``2C`` channels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nibble_planes(x)


def _represent(x: torch.Tensor, representation: str) -> torch.Tensor:
    if representation == "nibbles":
        return nibble_planes(x)
    return _as_bytes(x, "adaptation network").float().div_(255) if x.dtype == torch.uint8 else x.float()


def _check_rep(representation: str) -> str:
    if representation not in REPRESENTATIONS:
        raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {representation!r}")
    return representation


def _check_geometry(image_size: Any, block_size: int, who: str) -> tuple[int, int]:
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if block_size < 1 or h % block_size or w % block_size:
        raise ShapeError(f"{who}: image size {h}x{w} is not divisible by block_size={block_size}; "
                         f"use the cipher's block size (4 for LE/ELE on 32×32)")
    return int(h), int(w)


class LEAdaptation(nn.Module):
    """Tanaka's adaptation network for LE: a block-wise convolution shared by all blocks.

    ``representation`` (see the module docstring) → Conv(k = s = ``block_size``, ``hidden``
    channels) → BN → LeakyReLU(0.1) → (``depth`` − 1) × [1×1 Conv → BN → LeakyReLU] →
    1×1 Conv to ``B²·out_chans`` → ``PixelShuffle(B)``: output ``(N, out_chans, H, W)``.
    ``hidden`` defaults to ``B²·16`` (256 for B = 4, as in the authors' code).

    >>> import torch
    >>> m = LEAdaptation(block_size=4)
    >>> m(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 16, 32, 32])
    >>> m.conv.in_channels, m.conv.kernel_size, m.conv.stride  # nibble planes: 2C channels
    (6, (4, 4), (4, 4))
    """

    def __init__(self, *, in_chans: int = 3, block_size: int = 4, out_chans: int = 16, hidden: int | None = None,
                 depth: int = 2, representation: str = "nibbles") -> None:
        super().__init__()
        if min(in_chans, block_size, out_chans, depth) < 1:
            raise ValueError("in_chans, block_size, out_chans and depth must all be >= 1")
        self.representation = _check_rep(representation)
        self.block_size = int(block_size)
        b = self.block_size
        hidden = hidden or b * b * 16
        cin = 2 * in_chans if representation == "nibbles" else in_chans
        self.in_chans, self.out_chans = in_chans, out_chans
        self.conv = nn.Conv2d(cin, hidden, b, stride=b, bias=False)
        layers: list[nn.Module] = [nn.BatchNorm2d(hidden), nn.LeakyReLU(0.1)]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(hidden, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.LeakyReLU(0.1)]
        layers += [nn.Conv2d(hidden, b * b * out_chans, 1), nn.PixelShuffle(b)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"LEAdaptation: expected (N, {self.in_chans}, H, W), got {tuple(x.shape)}")
        _check_geometry(tuple(x.shape[-2:]), self.block_size, "LEAdaptation")
        return self.body(self.conv(_represent(x, self.representation)))


class ELEAdaptation(nn.Module):
    """Madono et al.'s adaptation network for ELE: per-block convolutions + block mixing.

    Blocks are numbered row-major. Block ``i``'s pixels (in the chosen representation) go
    through their own Conv(k = s = ``block_size``) to ``features = B²·out_chans`` values
    (one grouped convolution over all blocks), BN, LeakyReLU(0.2); then the block axis is
    mixed by a learnable ``n×n`` matrix ``M`` (``h'[:, :, j] = Σ_i h[:, :, i] · M[i, j]``,
    no bias), able to express ELE's block shuffle; each block's features are laid out at
    its grid position and ``PixelShuffle(B)`` gives ``(N, out_chans, H, W)``.

    >>> import torch
    >>> m = ELEAdaptation(image_size=32, block_size=4)
    >>> m(torch.rand(2, 3, 32, 32)).shape, tuple(m.mix.shape)
    (torch.Size([2, 16, 32, 32]), (64, 64))
    """

    def __init__(self, *, image_size: Any = 32, block_size: int = 4, in_chans: int = 3, out_chans: int = 16,
                 representation: str = "bytes") -> None:
        super().__init__()
        if min(block_size, in_chans, out_chans) < 1:
            raise ValueError("block_size, in_chans and out_chans must all be >= 1")
        self.representation = _check_rep(representation)
        self.block_size = b = int(block_size)
        self.image_size = _check_geometry(image_size, b, "ELEAdaptation")
        h, w = self.image_size
        self.grid = (h // b, w // b)
        n = self.grid[0] * self.grid[1]
        self.n_blocks = n
        self.in_chans, self.out_chans = in_chans, out_chans
        cin = 2 * in_chans if representation == "nibbles" else in_chans
        self.features = b * b * out_chans
        self.conv = nn.Conv2d(n * cin, n * self.features, b, groups=n, bias=False)
        self.bn = nn.BatchNorm2d(n * self.features)
        self.act = nn.LeakyReLU(0.2)
        # The authors initialise their 64×64 mixing matrix like nn.Linear (Kaiming uniform).
        self.mix = nn.Parameter(torch.empty(n, n).uniform_(-1 / n ** 0.5, 1 / n ** 0.5))
        self.shuffle = nn.PixelShuffle(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_chans or tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(f"ELEAdaptation: expected (N, {self.in_chans}, {self.image_size[0]}, "
                             f"{self.image_size[1]}) (the block grid is fixed), got {tuple(x.shape)}")
        r = _represent(x, self.representation)
        nb, c, b = r.shape[0], r.shape[1], self.block_size
        gh, gw = self.grid
        # (N, c, gh·b, gw·b) → (N, n·c, b, b): block i's channels are group i of the conv
        blocks = r.view(nb, c, gh, b, gw, b).permute(0, 2, 4, 1, 3, 5).reshape(nb, gh * gw * c, b, b)
        h = self.act(self.bn(self.conv(blocks)))                       # (N, n·F, 1, 1)
        h = h.view(nb, self.n_blocks, self.features).transpose(1, 2)    # (N, F, n)
        h = h @ self.mix                                                # mix blocks
        return self.shuffle(h.reshape(nb, self.features, gh, gw))


class AdaptedClassifier(nn.Module):
    """``classifier(adaptation(x))``; ``adaptation=None`` passes images through unchanged.

    >>> import torch
    >>> m = AdaptedClassifier(LEAdaptation(out_chans=3), nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 5)))
    >>> m(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 5])
    """

    def __init__(self, adaptation: nn.Module | None, classifier: nn.Module) -> None:
        super().__init__()
        self.adaptation = adaptation if adaptation is not None else nn.Identity()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.adaptation, nn.Identity) and x.dtype == torch.uint8:
            x = x.float().div(255)
        return self.classifier(self.adaptation(x))


# ----------------------------------------------------------------------------- registry
@register_model
def le_adaptation(*, in_chans: int = 3, block_size: int = 4, out_chans: int = 16, hidden: int | None = None,
                  depth: int = 2, representation: str = "nibbles") -> LEAdaptation:
    """Tanaka's LE adaptation network (image → ``out_chans``-channel image); see :class:`LEAdaptation`."""
    return LEAdaptation(in_chans=in_chans, block_size=block_size, out_chans=out_chans, hidden=hidden,
                        depth=depth, representation=representation)


@register_model
def ele_adaptation(*, image_size: Any = 32, block_size: int = 4, in_chans: int = 3, out_chans: int = 16,
                   representation: str = "bytes") -> ELEAdaptation:
    """Madono et al.'s ELE adaptation network; see :class:`ELEAdaptation`."""
    return ELEAdaptation(image_size=image_size, block_size=block_size, in_chans=in_chans, out_chans=out_chans,
                         representation=representation)


ADAPTATIONS = ("le", "ele", "none")


@register_model
def adapted_classifier(*, adaptation: str = "le", classifier: str = "resnet20", num_classes: int = 10,
                       in_chans: int = 3, image_size: Any = 32, block_size: int = 4, out_chans: int = 16,
                       representation: str | None = None, adaptation_kwargs: Mapping[str, Any] | None = None,
                       classifier_kwargs: Mapping[str, Any] | None = None) -> AdaptedClassifier:
    """An adaptation network (``"le"``, ``"ele"`` or ``"none"``) before a registry classifier.

    The classifier is ``create_model(classifier, num_classes=..., in_chans=out_chans,
    **classifier_kwargs)`` (``in_chans`` for ``"none"``). ``representation`` defaults to each
    network's own (LE: nibble planes, ELE: bytes, as in the authors' code).

    >>> m = adapted_classifier(adaptation="ele", classifier="convmixer",
    ...                        classifier_kwargs={"dim": 16, "depth": 1, "patch_size": 4})
    >>> type(m.adaptation).__name__, m.classifier[0].in_channels
    ('ELEAdaptation', 16)
    """
    kw = dict(adaptation_kwargs or {})
    if representation is not None:
        kw["representation"] = representation
    if adaptation == "le":
        adapt: nn.Module | None = LEAdaptation(in_chans=in_chans, block_size=block_size, out_chans=out_chans, **kw)
    elif adaptation == "ele":
        adapt = ELEAdaptation(image_size=image_size, block_size=block_size, in_chans=in_chans,
                              out_chans=out_chans, **kw)
    elif adaptation == "none":
        if kw:
            raise ValueError("adaptation='none' takes no representation or adaptation_kwargs")
        adapt = None
    else:
        raise ValueError(f"adaptation must be one of {ADAPTATIONS}, got {adaptation!r}")
    net = create_model(classifier, num_classes=num_classes,
                       in_chans=in_chans if adapt is None else out_chans, **dict(classifier_kwargs or {}))
    return AdaptedClassifier(adapt, net)
