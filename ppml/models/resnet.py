"""Residual networks for 32×32 inputs (He et al., CVPR 2016, "Deep Residual Learning for
Image Recognition").

Two families, both built from the same :class:`BasicBlock`:

* ``resnet18_cifar`` — the ImageNet ResNet-18 layout (64-128-256-512 channels, [2, 2, 2, 2]
  basic blocks, projection shortcuts) with the stem adapted to 32×32 images: one 3×3 conv,
  stride 1, and no max-pool. This is the common CIFAR adaptation used by the block
  scrambling + augmentation paper (11,173,962 parameters for 10 classes).
* ``resnet20`` / ``resnet_cifar`` — the CIFAR-10 networks of He et al. 2016, §4.2: a 3×3 conv
  with 16 channels, then three stages of n basic blocks with 16, 32 and 64 channels
  (depth = 6n + 2), global average pooling and a linear layer. The paper uses **option A**
  shortcuts there (identity; when the shape changes, stride-2 subsampling plus zero-padding of
  the new channels, so no extra parameters): ResNet-20 has 269,722 parameters for 10 classes
  ("0.27M" in the paper's Table 6). Option B (1×1 conv + BN projection when the shape
  changes) is available with ``shortcut="B"``.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register_model

__all__ = ["BasicBlock", "ResNet", "resnet18_cifar", "resnet20", "resnet_cifar"]

Shortcut = Literal["A", "B"]


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with a residual connection (He et al. 2016, Fig. 2 left).

    ``shortcut`` chooses how the residual path changes shape: ``"A"`` subsamples and
    zero-pads channels (parameter-free), ``"B"`` uses a 1×1 conv + BN projection.

    >>> BasicBlock(16, 32, stride=2)(torch.zeros(1, 16, 8, 8)).shape
    torch.Size([1, 32, 4, 4])
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: Shortcut = "B") -> None:
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.mode = shortcut
        self.stride = stride
        self.pad = planes - in_planes
        self.proj: nn.Module | None = None
        if shortcut == "B" and (stride != 1 or in_planes != planes):
            self.proj = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is not None:
            return self.proj(x)
        if self.mode == "A" and (self.stride != 1 or self.pad):
            # Option A: keep every stride-th pixel and append zero channels (He et al. §3.3).
            x = x[:, :, :: self.stride, :: self.stride]
            if self.pad:
                x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self._shortcut(x))


class ResNet(nn.Module):
    """A stack of :class:`BasicBlock` stages with a 3×3 stem, for small (e.g. 32×32) images.

    ``widths[i]`` channels and ``blocks[i]`` blocks in stage i; the first stage keeps the
    resolution, each later stage halves it.

    >>> ResNet([16, 32], [1, 1], num_classes=5)(torch.zeros(2, 3, 8, 8)).shape
    torch.Size([2, 5])
    """

    def __init__(self, widths: Sequence[int], blocks: Sequence[int], *, num_classes: int = 10,
                 in_chans: int = 3, shortcut: Shortcut = "B") -> None:
        super().__init__()
        if len(widths) != len(blocks) or not widths:
            raise ValueError("widths and blocks must be non-empty and of equal length")
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages: list[nn.Module] = []
        in_planes = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            layers = []
            for j in range(n):
                layers.append(BasicBlock(in_planes, w, 2 if (i > 0 and j == 0) else 1, shortcut))
                in_planes = w
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_planes, num_classes)
        self.num_classes = num_classes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He et al. 2015 ("Delving deep into rectifiers") initialisation, as in the paper.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features, shape (N, widths[-1])."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stages(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


@register_model
def resnet18_cifar(*, num_classes: int = 10, in_chans: int = 3) -> ResNet:
    """CIFAR ResNet-18 (He et al. 2016): 3×3 stem without max-pool, [2, 2, 2, 2] blocks of
    64/128/256/512 channels, projection (option B) shortcuts. 11,173,962 parameters for 10
    classes.

    >>> sum(p.numel() for p in resnet18_cifar().parameters())
    11173962
    """
    return ResNet([64, 128, 256, 512], [2, 2, 2, 2], num_classes=num_classes, in_chans=in_chans, shortcut="B")


@register_model
def resnet_cifar(*, depth: int = 20, num_classes: int = 10, in_chans: int = 3, shortcut: Shortcut = "A") -> ResNet:
    """He et al. 2016 §4.2 CIFAR ResNet of ``depth`` = 6n + 2 (20, 32, 44, 56, 110, …):
    16/32/64 channels, n blocks per stage, option-A shortcuts by default.

    >>> sum(p.numel() for p in resnet_cifar(depth=32).parameters())
    464154
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110), got {depth}")
    n = (depth - 2) // 6
    return ResNet([16, 32, 64], [n, n, n], num_classes=num_classes, in_chans=in_chans, shortcut=shortcut)


@register_model
def resnet20(*, num_classes: int = 10, in_chans: int = 3, shortcut: Shortcut = "A") -> ResNet:
    """ResNet-20 (He et al. 2016 §4.2; the classifier ψ of the transformation-network paper):
    option-A shortcuts by default, 269,722 parameters for 10 classes (0.27M).

    >>> sum(p.numel() for p in resnet20().parameters())
    269722
    """
    return resnet_cifar(depth=20, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut)
