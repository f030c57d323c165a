"""ConvMixer (Trockman & Kolter, TMLR 2023 / arXiv 2201.09792, "Patches Are All You Need?").

An isotropic network: a patch embedding (conv with kernel = stride = ``patch_size``), GELU,
BN, then ``depth`` blocks of [residual depthwise conv (``kernel_size``, "same" padding),
GELU, BN] followed by a pointwise 1×1 conv, GELU, BN; global average pooling and a linear
head. Because the patch embedding never mixes pixels across patches, a block-wise EtC image
with block size = patch size is seen as a fixed re-mapping of each patch — the property the
isotropic-network paper (MaungMaung & Kiya) relies on. ConvMixer-256/8 with patch 1 and
kernel 9 is its CIFAR-10 model.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from . import register_model

__all__ = ["ConvMixer", "convmixer", "convmixer_256_8"]


class _Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class ConvMixer(nn.Sequential):
    """ConvMixer-``dim``/``depth`` with the given depthwise kernel and patch size.

    Parameter count (10 classes, 3 input channels):
    ``3·p²·dim + 3·dim + depth·(dim·k² + dim² + 6·dim) + 10·dim + 10``.

    >>> ConvMixer(dim=16, depth=2, kernel_size=3, patch_size=4)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(self, *, dim: int = 256, depth: int = 8, kernel_size: int = 9, patch_size: int = 1,
                 num_classes: int = 10, in_chans: int = 3) -> None:
        if min(dim, depth, kernel_size, patch_size) < 1:
            raise ValueError("dim, depth, kernel_size and patch_size must all be >= 1")
        blocks = [nn.Sequential(
            _Residual(nn.Sequential(
                nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same"),
                nn.GELU(), nn.BatchNorm2d(dim))),
            nn.Conv2d(dim, dim, 1), nn.GELU(), nn.BatchNorm2d(dim)) for _ in range(depth)]
        super().__init__(
            nn.Conv2d(in_chans, dim, patch_size, stride=patch_size), nn.GELU(), nn.BatchNorm2d(dim),
            *blocks,
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(dim, num_classes))
        self.patch_size = patch_size
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.patch_size or x.shape[-2] % self.patch_size:
            raise ValueError(f"ConvMixer: input size {tuple(x.shape[-2:])} is not divisible by "
                             f"patch_size={self.patch_size}; pad or resize the images")
        return super().forward(x)


@register_model
def convmixer(*, dim: int = 256, depth: int = 8, kernel_size: int = 9, patch_size: int = 1,
              num_classes: int = 10, in_chans: int = 3) -> ConvMixer:
    """ConvMixer-dim/depth (Trockman & Kolter); defaults are ConvMixer-256/8, k=9, p=1.

    >>> sum(p.numel() for p in convmixer(dim=128, depth=4, kernel_size=5, patch_size=4).parameters())
    89226
    """
    return ConvMixer(dim=dim, depth=depth, kernel_size=kernel_size, patch_size=patch_size,
                     num_classes=num_classes, in_chans=in_chans)


@register_model
def convmixer_256_8(*, num_classes: int = 10, in_chans: int = 3, kernel_size: int = 9,
                    patch_size: int = 1) -> ConvMixer:
    """ConvMixer-256/8 (kernel 9, patch 1), the isotropic-network paper's CIFAR-10 model."""
    return convmixer(dim=256, depth=8, kernel_size=kernel_size, patch_size=patch_size,
                     num_classes=num_classes, in_chans=in_chans)
