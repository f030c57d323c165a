"""GAN-Attack in the style of SIA-GAN (Madono, Tanaka, Onishi & Ogawa, IEEE Access 2021).

Paper 002 (Sec. III-G, Figs. 6 and 8) runs it "with a synthetic dataset and encrypted
images": the attacker holds plain images of the known distribution and the victim's
encrypted images, and trains a generator that maps encrypted → plain. What is implemented:

* **Generator** (:class:`BlockInversionGenerator`): the first layer acts on each block on
  its own — a convolution with kernel = stride = block size, i.e. one linear map shared by
  every block, which can express any fixed within-block permutation/negation (LE with a
  shared key; EtC/PE/ELE vary per block or pixel, so it cannot) — then
  ``PixelShuffle(block)`` puts its ``block_features`` values per pixel back at full
  resolution, followed by a 1×1 conv to ``width`` channels, ``depth`` 3×3 conv + BatchNorm +
  ReLU layers and a 3×3 conv with a sigmoid output. ``input="nibbles"`` feeds the
  2·C planes of low and high 4-bit nibbles (values / 15) instead of bytes, the natural input
  for LE/ELE, whose keys act on nibbles.
* **Discriminator** (:class:`Discriminator`): a small strided CNN with spectral norm,
  trained with the **hinge loss** (``relu(1 − D(real)) + relu(1 + D(fake))``; generator
  term ``−D(fake)``).
* **Losses.** ``paired=False`` (default — the ciphertext-only setting of paper 002):
  ``train_plain`` and ``train_enc`` are unrelated sets; the generator gets the adversarial
  loss only. ``paired=True``: ``train_enc[i]`` is the encryption of ``train_plain[i]``
  (known-plaintext pairs, a stronger attacker), and a pix2pix-style pixel loss
  ``pixel_weight · L1`` is added.

SIA-GAN's own paper was not available offline to check every detail; the block-wise first
layer and the adversarial set-up follow paper 002's description and the brief, the
loss weights and layer sizes are this project's choices (documented defaults). Adam
(``lr`` 1e-3, β = (0.5, 0.999); a short smoke run needs the larger rate) for both
networks; batch 64. Deterministic under ``seed`` on CPU
(the global RNG is left untouched).

>>> import torch
>>> x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
>>> rec = gan_attack(x, x, x[:4], block_size=4, epochs=1, seed=0, width=4, batch_size=8)
>>> rec.shape, rec.dtype
(torch.Size([4, 3, 8, 8]), torch.uint8)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ppml.utils import progress

__all__ = ["BlockInversionGenerator", "Discriminator", "gan_attack", "to_input"]

_INPUTS = ("bytes", "nibbles")


def to_input(y: torch.Tensor, input: str = "bytes") -> torch.Tensor:
    """Generator input from uint8 images: bytes / 255 ``(N, C, H, W)``, or nibble planes
    ``[low nibbles, high nibbles] / 15`` ``(N, 2C, H, W)``.

    >>> import torch
    >>> to_input(torch.tensor([[[[0x5A]]]], dtype=torch.uint8), "nibbles").flatten().tolist()
    [0.6666666865348816, 0.3333333432674408]
    """
    if input == "bytes":
        return y.to(torch.float32) / 255
    if input == "nibbles":
        return torch.cat([(y & 15), (y >> 4)], dim=1).to(torch.float32) / 15
    raise ValueError(f"unknown input {input!r}; expected one of {', '.join(_INPUTS)}")


class BlockInversionGenerator(nn.Module):
    """Per-block linear layer → PixelShuffle → 3×3 conv layers → sigmoid image in [0, 1].

    >>> import torch
    >>> g = BlockInversionGenerator(block_size=4, in_channels=3, width=8)
    >>> g(torch.rand(2, 3, 16, 16)).shape
    torch.Size([2, 3, 16, 16])
    """

    def __init__(self, *, block_size: int, in_channels: int = 3, out_channels: int = 3, width: int = 32,
                 depth: int = 2, block_features: int = 8) -> None:
        super().__init__()
        b = block_size
        # one linear map per block, shared by all blocks (kernel = stride = block size), giving
        # `block_features` values per pixel: enough to express an exact within-block inverse
        self.block = nn.Conv2d(in_channels, block_features * b * b, kernel_size=b, stride=b)
        self.unblock = nn.PixelShuffle(b)
        layers: list[nn.Module] = [nn.Conv2d(block_features, width, 1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        layers += [nn.Conv2d(width, out_channels, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(self.unblock(self.block(x))))


class Discriminator(nn.Module):
    """Strided CNN critic with spectral norm; one score per image (hinge loss).

    >>> import torch
    >>> Discriminator(channels=3, width=8)(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2])
    """

    def __init__(self, *, channels: int = 3, width: int = 32) -> None:
        super().__init__()
        sn = nn.utils.spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(channels, width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True),
            sn(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True),
            sn(nn.Conv2d(2 * width, 4 * width, 3, stride=1, padding=1)), nn.LeakyReLU(0.2, inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), sn(nn.Linear(4 * width, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1).squeeze(1)


def _check_images(x: Any, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"gan_attack: {name} must be a torch.Tensor (N, C, H, W), got {type(x).__name__}")
    if x.dtype != torch.uint8:
        raise ValueError(f"gan_attack: {name} must be uint8 images, got {x.dtype}; "
                         f"convert float [0, 1] with (x * 255).round().to(torch.uint8)")
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"gan_attack: {name} must be a non-empty batch (N, C, H, W), got shape {tuple(x.shape)}")


def _int(v: Any, name: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"gan_attack: {name} must be an int >= {minimum}, got {v!r}")
    return v


def gan_attack(train_plain: torch.Tensor, train_enc: torch.Tensor, test_enc: torch.Tensor, *,
               block_size: int, epochs: int = 5, seed: int = 0, paired: bool = False,
               pixel_weight: float = 100.0, input: str = "bytes", width: int = 32, depth: int = 2,
               block_features: int = 8, batch_size: int = 64, lr: float = 1e-3, return_history: bool = False):
    """Train a SIA-GAN-style generator (encrypted → plain) and reconstruct ``test_enc``.

    Args:
        train_plain: plain uint8 images of the known distribution ``(M, C, H, W)``.
        train_enc: encrypted uint8 images ``(M', C_in, H, W)`` (the victim's key); with
            ``paired=True`` they must be the encryptions of ``train_plain``, in order.
        test_enc: encrypted uint8 images to reconstruct ``(N, C_in, H, W)``.
        block_size: the block size of the per-block first layer (the scheme's block size;
            1 for PE). Must divide H and W.
        epochs, seed, batch_size, lr, width, depth, block_features: training set-up (see the
            module docstring).
        paired: whether the training sets are aligned pairs (adds ``pixel_weight · L1``).
        input: ``"bytes"`` or ``"nibbles"`` (for LE/ELE).
        return_history: also return ``{"d_loss", "g_adv", "pixel"}``, per-epoch means.

    Returns:
        uint8 reconstructions ``(N, C, H, W)`` on ``test_enc``'s device (and the history).
    """
    for v, name in ((train_plain, "train_plain"), (train_enc, "train_enc"), (test_enc, "test_enc")):
        _check_images(v, name)
    b = _int(block_size, "block_size")
    epochs, batch_size, width = _int(epochs, "epochs"), _int(batch_size, "batch_size"), _int(width, "width")
    depth = _int(depth, "depth", 0)
    block_features = _int(block_features, "block_features")
    if input not in _INPUTS:
        raise ValueError(f"gan_attack: unknown input {input!r}; expected one of {', '.join(_INPUTS)}")
    h, w = train_enc.shape[2:]
    if train_plain.shape[2:] != (h, w) or test_enc.shape[1:] != train_enc.shape[1:]:
        raise ValueError(f"gan_attack: image sizes differ: train_plain {tuple(train_plain.shape[1:])}, "
                         f"train_enc {tuple(train_enc.shape[1:])}, test_enc {tuple(test_enc.shape[1:])}; "
                         f"expected the same H×W everywhere and the same channels in train_enc and test_enc")
    if h % b or w % b:
        raise ValueError(f"gan_attack: image size {h}x{w} is not divisible by block_size {b}; "
                         f"pass the encryption's block size (1 for PE)")
    if paired and train_plain.shape[0] != train_enc.shape[0]:
        raise ValueError(f"gan_attack: paired=True needs as many plain as encrypted training images, "
                         f"got {train_plain.shape[0]} and {train_enc.shape[0]}")
    device = train_enc.device
    c_out = train_plain.shape[1]
    c_in = train_enc.shape[1] * (2 if input == "nibbles" else 1)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        gen = BlockInversionGenerator(block_size=b, in_channels=c_in, out_channels=c_out, width=width,
                                      depth=depth, block_features=block_features).to(device)
        disc = Discriminator(channels=c_out, width=width).to(device)
        opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
        g = torch.Generator(device="cpu").manual_seed(seed)
        m_enc, m_plain = train_enc.shape[0], train_plain.shape[0]
        steps = max(1, -(-m_enc // batch_size))
        history: dict[str, list[float]] = {"d_loss": [], "g_adv": [], "pixel": []}
        bar = progress(total=epochs * steps, desc="GAN-Attack", leave=False)
        for _ in range(epochs):
            order = torch.randperm(m_enc, generator=g)
            order_plain = order if paired else torch.randint(m_plain, (m_enc,), generator=g)
            sums = torch.zeros(3)
            gen.train()
            disc.train()
            for i in range(steps):
                idx = order[i * batch_size:(i + 1) * batch_size]
                enc = to_input(train_enc[idx.to(device)], input)
                real = train_plain[order_plain[i * batch_size:(i + 1) * batch_size].to(device)].to(torch.float32) / 255
                fake = gen(enc)
                # discriminator: hinge loss
                d_loss = F.relu(1 - disc(real)).mean() + F.relu(1 + disc(fake.detach())).mean()
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                # generator: adversarial hinge term (+ pixel loss when pairs are known)
                g_adv = -disc(fake).mean()
                pix = F.l1_loss(fake, real) if paired else fake.new_zeros(())
                g_loss = g_adv + (pixel_weight * pix if paired else 0)
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                sums += torch.tensor([d_loss.item(), g_adv.item(), pix.item()])
                bar.update(1)
            for k, v in zip(history, (sums / steps).tolist()):
                history[k].append(v)
        bar.close()
        gen.eval()
        outs = []
        with torch.no_grad():
            for i in range(0, test_enc.shape[0], 256):
                outs.append((gen(to_input(test_enc[i:i + 256], input)) * 255).round().to(torch.uint8))
    rec = torch.cat(outs)
    return (rec, history) if return_history else rec
