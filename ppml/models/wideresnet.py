"""Wide residual networks (Zagoruyko & Komodakis, BMVC 2016, "Wide Residual Networks").

WRN-d-k: a 3×3 conv with 16 channels, three groups of n = (d − 4) / 6 pre-activation basic
blocks (BN-ReLU-conv3×3-BN-ReLU-dropout-conv3×3) with 16k, 32k and 64k channels (strides 1,
2, 2), then BN-ReLU, global average pooling and a linear layer. As in the authors' code, a
block that changes the channel count or resolution uses a 1×1 conv shortcut applied to the
block's pre-activated input, and dropout sits between the two convolutions. ScrambleMix's
paper-scale runs use WRN-40-10 (depth 40, widen_factor 10).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register_model

__all__ = ["WideBasic", "WideResNet", "wideresnet"]


class WideBasic(nn.Module):
    """Pre-activation wide basic block with dropout between the convolutions.

    >>> WideBasic(16, 32, stride=2)(torch.zeros(1, 16, 8, 8)).shape
    torch.Size([1, 32, 4, 4])
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        # The projection shares the pre-activation with the residual branch (authors' code).
        res = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = self.conv2(self.dropout(F.relu(self.bn2(o))))
        return o + res


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` for small images (see the module docstring).

    >>> WideResNet(depth=10, widen_factor=1)(torch.zeros(2, 3, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(self, *, depth: int = 40, widen_factor: int = 10, dropout: float = 0.0,
                 num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1 (10, 16, 28, 40), got {depth}")
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be >= 1, got {widen_factor}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        groups = []
        in_planes = widths[0]
        for g, stride in enumerate((1, 2, 2)):
            blocks = []
            for j in range(n):
                blocks.append(WideBasic(in_planes, widths[g + 1], stride if j == 0 else 1, dropout))
                in_planes = widths[g + 1]
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.Sequential(*groups)
        self.bn = nn.BatchNorm2d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes)
        self.num_classes = num_classes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features, shape (N, 64·widen_factor)."""
        x = self.groups(self.conv1(x))
        x = F.relu(self.bn(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


@register_model
def wideresnet(*, depth: int = 40, widen_factor: int = 10, dropout: float = 0.0,
               num_classes: int = 10, in_chans: int = 3) -> WideResNet:
    """WRN-d-k of Zagoruyko & Komodakis 2016; the defaults are WRN-40-10 as in ScrambleMix's
    paper-scale runs (smoke runs pass e.g. ``depth=10, widen_factor=1``).

    >>> sum(p.numel() for p in wideresnet(depth=16, widen_factor=1).parameters())
    175066
    """
    return WideResNet(depth=depth, widen_factor=widen_factor, dropout=dropout,
                      num_classes=num_classes, in_chans=in_chans)
