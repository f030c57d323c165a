"""PyramidNet with ShakeDrop: the "ShakeDrop" network of the ScrambleMix tables.

PyramidNet (Han, Kim & Kim 2017): basic residual blocks ``BN-conv3×3-BN-ReLU-conv3×3-BN``
whose width grows linearly by ``α/N`` per block (``N = 3n`` blocks, ``n = (depth − 2)/6``),
starting from 16 channels; the shortcut is the identity, zero-padded to the new width and
average-pooled when the block downsamples. PyramidNet-110 with ``α = 270`` is the network of
the ShakeDrop paper's CIFAR table and of the authors' ScrambleMix code.

ShakeDrop (Yamada, Iwamura, Akiba & Kise 2019) regularises the residual branch ``F(x)`` of
block ``l``: in training ``x + (b + α − bα)·F(x)`` forward and ``x + (b + β − bβ)·∂`` backward,
with ``b ~ Bernoulli(p_l)`` per sample, ``α ~ U[−1, 1]``, ``β ~ U[0, 1]`` per sample and the
linear-decay rule ``p_l = 1 − (l/L)(1 − p_L)``, ``p_L = 0.5``; at test ``x + E[b + α − bα]·F(x)
= x + p_l·F(x)``. (The authors' code, after a popular port, draws one gate ``b`` per *batch*;
``per_sample=False`` reproduces that.)

>>> import torch
>>> m = pyramidnet_shakedrop(depth=8, alpha=12, num_classes=10)
>>> m(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ppml._checks import check_probability

from . import register_model

__all__ = ["PyramidNet", "ShakeDrop", "pyramidnet_shakedrop"]


class _ShakeDropFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gate, alpha, beta):  # gate/alpha/beta: (N, 1, 1, 1)
        ctx.save_for_backward(gate, beta)
        return x * (gate + alpha - gate * alpha)

    @staticmethod
    def backward(ctx, grad):
        gate, beta = ctx.saved_tensors
        return grad * (gate + beta - gate * beta), None, None, None


class ShakeDrop(nn.Module):
    """The ShakeDrop scaling of a residual branch with survival probability ``p``.

    >>> sd = ShakeDrop(p=0.8).eval()
    >>> round(float(sd(torch.ones(1, 1, 1, 1))), 6)  # test time: E[b + α − bα] = p
    0.8
    """

    def __init__(self, p: float = 0.5, alpha_range: tuple[float, float] = (-1.0, 1.0),
                 beta_range: tuple[float, float] = (0.0, 1.0), per_sample: bool = True) -> None:
        super().__init__()
        check_probability(p, "p", "ShakeDrop")
        self.p, self.alpha_range, self.beta_range, self.per_sample = float(p), alpha_range, beta_range, per_sample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x * self.p
        n = x.shape[0] if self.per_sample else 1
        shape = (n, 1, 1, 1)
        gate = torch.bernoulli(torch.full(shape, self.p, device=x.device, dtype=x.dtype))
        a0, a1 = self.alpha_range
        b0, b1 = self.beta_range
        alpha = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).uniform_(a0, a1)
        beta = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).uniform_(b0, b1)
        return _ShakeDropFn.apply(x, gate.expand(x.shape[0], 1, 1, 1), alpha, beta)

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}, per_sample={self.per_sample}"


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, p: float, per_sample: bool) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shake = ShakeDrop(p, per_sample=per_sample)
        self.stride, self.pad = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.shake(self.branch(x))
        s = F.avg_pool2d(x, 2) if self.stride == 2 else x
        if self.pad:
            s = F.pad(s, (0, 0, 0, 0, 0, self.pad))  # zero-padded channels (PyramidNet's shortcut)
        return h + s


class PyramidNet(nn.Module):
    """PyramidNet (basic blocks) with ShakeDrop on every residual branch."""

    def __init__(self, depth: int = 110, alpha: float = 270, num_classes: int = 10, in_chans: int = 3,
                 p_last: float = 0.5, per_sample: bool = True) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"PyramidNet depth must be 6n + 2 with n >= 1 (e.g. 110), got {depth}")
        n = (depth - 2) // 6
        total = 3 * n
        self.stem = nn.Sequential(nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        blocks, width, cin = [], 16.0, 16
        for i in range(total):
            width += alpha / total
            cout = int(round(width))
            stride = 2 if i in (n, 2 * n) else 1
            p = 1.0 - (i + 1) / total * (1.0 - p_last)  # linear decay rule
            blocks.append(_Block(cin, cout, stride, p, per_sample))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(cin, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


@register_model
def pyramidnet_shakedrop(*, depth: int = 110, alpha: float = 270, num_classes: int = 10, in_chans: int = 3,
                         p_last: float = 0.5, per_sample: bool = True) -> PyramidNet:
    """PyramidNet-``depth`` (α = ``alpha``) with ShakeDrop; defaults: PyramidNet-110, α = 270,
    p_L = 0.5 (the ShakeDrop network of ScrambleMix's paper-scale runs).

    >>> m = pyramidnet_shakedrop()
    >>> round(sum(p.numel() for p in m.parameters()) / 1e6, 1)  # 28.5 M in the ShakeDrop paper's table
    28.5
    """
    return PyramidNet(depth=depth, alpha=alpha, num_classes=num_classes, in_chans=in_chans, p_last=p_last,
                      per_sample=per_sample)
