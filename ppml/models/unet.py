"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015, "U-Net: Convolutional Networks for
Biomedical Image Segmentation").

An encoder of ``depth`` down-sampling steps (2×2 max-pool) and a mirrored decoder
(2×2 transposed "up-convolutions" that halve the channels), joined by skip connections
that concatenate encoder features; each level applies two 3×3 convs. Channels at level i are
``width·2^i``: the paper scale (``width=64, depth=4``) gives 64-128-256-512-1024, the size
used for the transformation network h_θ (Ito, Kinoshita & Kiya) and for the ITN-Attack.

Deviations from the 2015 paper, as in most image-to-image uses: convs are padded ("same"
size, so the output has the input's size and no cropping is needed), and each conv is
followed by BatchNorm (``batch_norm=False`` restores plain conv-ReLU). ``sigmoid=True``
squashes the output to [0, 1] for image outputs.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from . import register_model

__all__ = ["UNet", "unet", "transformation_network"]


def _double_conv(cin: int, cout: int, bn: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in ((cin, cout), (cout, cout)):
        layers.append(nn.Conv2d(a, b, 3, padding=1, bias=not bn))
        if bn:
            layers.append(nn.BatchNorm2d(b))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """U-Net mapping (N, in_chans, H, W) to (N, out_chans, H, W); H and W must be divisible
    by 2**depth.

    >>> UNet(width=4, depth=2)(torch.zeros(1, 3, 8, 8)).shape
    torch.Size([1, 3, 8, 8])
    """

    def __init__(self, *, in_chans: int = 3, out_chans: int = 3, width: int = 64, depth: int = 4,
                 batch_norm: bool = True, sigmoid: bool = True) -> None:
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"width and depth must be >= 1, got width={width}, depth={depth}")
        ch = [width * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.down = nn.ModuleList([_double_conv(in_chans, ch[0], batch_norm)]
                                  + [_double_conv(ch[i], ch[i + 1], batch_norm) for i in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2) for i in reversed(range(depth))])
        self.dec = nn.ModuleList([_double_conv(2 * ch[i], ch[i], batch_norm) for i in reversed(range(depth))])
        self.head = nn.Conv2d(ch[0], out_chans, 1)
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = 2**self.depth
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"UNet: input size {tuple(x.shape[-2:])} must be divisible by 2**depth = {m}; "
                             "pad the images or lower depth")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()  # the bottleneck output is x itself
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([skips.pop(), up(x)], dim=1))
        x = self.head(x)
        return torch.sigmoid(x) if self.sigmoid else x


@register_model
def unet(*, in_chans: int = 3, out_chans: int = 3, width: int = 64, depth: int = 4,
         batch_norm: bool = True, sigmoid: bool = True) -> UNet:
    """U-Net (Ronneberger et al. 2015); defaults are the paper scale (64…1024 channels).

    >>> m = unet(width=8, depth=2)
    >>> m(torch.rand(2, 3, 16, 16)).shape
    torch.Size([2, 3, 16, 16])
    """
    return UNet(in_chans=in_chans, out_chans=out_chans, width=width, depth=depth,
                batch_norm=batch_norm, sigmoid=sigmoid)


@register_model
def transformation_network(*, width: int = 64, depth: int = 4, batch_norm: bool = True) -> UNet:
    """h_θ of Ito, Kinoshita & Kiya ("Image transformation network for privacy-preserving
    DNNs", §III-A): a U-Net from RGB to RGB with a sigmoid output, so protected images lie in
    [0, 1]. ``width=64, depth=4`` is the paper's 64…1024-channel network; smaller widths and
    depths are for CPU smoke runs. (The ITN-Attack of ``ppml.attacks.itn`` uses the same
    network to invert h_θ.)

    >>> h = transformation_network(width=4, depth=2)
    >>> y = h(torch.rand(2, 3, 16, 16)); y.shape, bool(y.min() >= 0 and y.max() <= 1)
    (torch.Size([2, 3, 16, 16]), True)
    """
    return UNet(in_chans=3, out_chans=3, width=width, depth=depth, batch_norm=batch_norm, sigmoid=True)
