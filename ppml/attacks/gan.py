"""GAN-Attack: SIA-GAN (Madono, Tanaka, Onishi & Ogawa, "SIA-GAN: Scrambling Inversion Attack
Using Generative Adversarial Network", IEEE Access 2021), the GAN-Attack of paper 03.

Paper 03 (Sec. III-G, Figs. 6 and 8) runs it "with a synthetic dataset and encrypted
images": the attacker holds plain images of the known distribution and the victim's
encrypted images, and trains a generator G (encrypted → plain) against a discriminator D
that only ever sees the attacker's *unrelated* plain images as "real".

What the authors' code (github MADONOKOUKI/SIA-GAN, ``generator.py``, ``dcgan_spec_acgan.py``,
``gan_attack.py``) does, and what is matched here:

* **Generator** (:class:`SIAGANGenerator`). A *block-wise front end*: one linear map
  (a conv with kernel = stride = block size, no bias, spectral norm) **per block position**
  (64 of them on 32×32 with 4×4 blocks), each followed by BatchNorm and LeakyReLU(0.1),
  giving ``block_features·b·b`` (16·16) values per block; ``PixelShuffle(b)`` puts them back
  at full resolution as ``block_features`` (16) channels — the "feature" map. Then a 3×3 conv
  to ``width`` (64) channels + BN + LeakyReLU, ``n_res`` (3) residual blocks
  (conv-BN-LReLU-conv-BN, skip, LReLU), a 3×3 conv + BN + LReLU, a 3×3 conv to RGB and tanh.
  All convs without bias and spectrally normalised. Matched (the tanh output is mapped to
  [0, 1] as ``(t + 1) / 2``, exactly what their evaluation does).
* **Discriminator** (:class:`SIAGANDiscriminator`): SAGAN-style; three stages of
  (3×3 conv s1, LReLU(0.1), 4×4 conv s2, LReLU(0.1)) with ``d_width``·(1, 2, 4) channels
  (theirs: ndf/8 = 128, 256, 512), self-attention, a 3×3 conv to 8·``d_width`` (1024),
  self-attention, a linear layer to one score; spectral norm on every conv and linear layer
  but not inside self-attention. Input in [−1, 1]. Matched.
* **Losses**: hinge loss for D (``relu(1 − D(real)) + relu(1 + D(fake))``), ``−D(fake)`` for
  G, plus — only when ``labels`` of the encrypted training images are given —
  ``class_weight · CE(C(G(z)), y)`` with a classifier C trained jointly with G by G's
  optimiser (their auxiliary-classifier term). Their ``gan_attack_alpha_10.py`` variant adds
  ``1e-3 · TV(feature[:, :3])`` (``tv_weight``; off by default as in ``gan_attack.py``).
* **Schedule** (``gan_attack.py``): Adam for G (+ C), lr 2e-4, betas (0.9, 0.999); Adam for D,
  lr 2e-4, betas (0.5, 0.999); one D step then one G step per batch; batches of 128 real + 128
  encrypted images (their loader's 256 split in halves); 100 epochs of CIFAR-10. The
  defaults here are these values; the number of epochs is the caller's.

Differences (each deliberate, each an argument):

1. ``input="nibbles"`` (not in SIA-GAN, which feeds bytes in [−1, 1]): for LE/ELE the key
   acts on 4-bit nibbles, so an encrypted *byte* joins a high and a low nibble of two
   unrelated plain values and the decryption is not linear in bytes; on the 2·C nibble planes
   it is linear, i.e. exactly representable by the front end (see the tests). Default
   ``"bytes"`` (SIA-GAN).
2. ``shared_blocks=True`` (not in SIA-GAN): one front-end map shared by all block positions
   (BatchNorm over positions too). LE uses one key for every block, so this is the right
   parametrisation for LE — 64× fewer front-end weights and every block of every image is a
   training sample for the same map. ELE/EtC need the per-position maps (default ``False``).
3. The classifier of the CE term is a small CNN (theirs: ShakeDrop PyramidNet-110), and the
   term is off unless ``labels`` are given: paper 03's attacker holds unlabelled images, and
   ``ppml.attacks.run_attacks`` passes none.
4. Augmentation (``augment=True``): random crop (pad 4) and horizontal flip on the attacker's
   **plain** images only. SIA-GAN augments before encrypting (it encrypts CIFAR-10 itself);
   the attacker of paper 03 holds ciphertexts, and flipping/cropping an encrypted image
   does not commute with a block cipher.
5. Spectral norm uses ``torch.nn.utils.spectral_norm`` (one persistent power iteration per
   step; the authors' ``SpectralNorm`` restarts its power iteration and rescales the stored
   weight in place) and a batched equivalent for the per-position front end.
6. Widths are arguments (``width`` 64, ``block_features`` 16, ``d_width`` 128 are SIA-GAN's);
   on a CPU use smaller ones (``ppml.attacks.run_attacks`` documents the settings used).
7. ``paired=True`` adds ``pixel_weight · L1(G(z), x)`` for known-plaintext pairs (a stronger
   attacker than SIA-GAN's; not used by paper 03).
8. ``fix_polarity=True`` (not in SIA-GAN): after training (and at each evaluation) each output
   channel is kept or replaced by ``1 − x`` (:func:`polarity`: positive colour-channel
   correlations, then means/skewnesses against the attacker's images). LE's inversion bits
   make a photographic negative exactly as smooth as the positive, and a generator whose
   front end is batch-normalised cannot turn one into the other without passing through zero
   contrast, so a short run can settle on the negative, or on a negative in one channel
   (measured: SSIM −0.22 on LE at smoke scale, a clear *structure* leak that SSIM scores as
   negative).
9. ``body=False`` (not in SIA-GAN): the generator is the front end alone (no activation,
   ``out_channels`` features, tanh) — a per-block affine map, which can express LE's
   decryption on nibbles but cannot hallucinate texture; far cheaper per step on a CPU.

What it takes on LE (measured on 32-px photo crops, 400 + 400 training images, CPU): the
best *shared affine* block map from encrypted bytes to plain pixels (fitted on pairs, an
oracle) already reaches SSIM 0.94, on nibble planes it decrypts exactly — so SIA-GAN's front
end can express LE's decryption, and the attack is limited by how fast the adversarial game
finds it. A short run of the full generator (convolutional body, 64 per-position maps, bytes,
Adam 2e-4) stays near SSIM 0.05–0.08 after 78 steps; the front end alone, shared and on
nibbles (``body=False, shared_blocks=True, input="nibbles"``, Adam 1e-3) passes the no-attack
floor (0.21) after ~60 steps and reaches 0.46 after 182 — once the polarity is fixed: the raw
output of the same run was a partly negative image scoring 0.10.

``eval_every`` / ``eval_fn`` record the attack's progress: every ``eval_every`` generator
steps (and after the last) ``eval_fn(reconstructions of test_protected)`` is stored with the step
and the CPU seconds spent training so far, e.g. mean SSIM against the victims' plain images —
the curve of SSIM against training steps. Deterministic under ``seed`` on CPU (the global
RNG is left untouched).

>>> import torch
>>> x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
>>> rec = gan_attack(train_plain=x, train_protected=x, test_protected=x[:4], block_size=4, epochs=1, seed=0,
...                  width=4, d_width=4, block_features=4, batch_size=8)
>>> rec.shape, rec.dtype
(torch.Size([4, 3, 8, 8]), torch.uint8)
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ppml._checks import ShapeError, check_choice, check_images, check_int, check_positive_int, check_same_length
from ppml.utils import atomic_write, progress

__all__ = ["SIAGANGenerator", "SIAGANDiscriminator", "BlockFrontEnd", "gan_attack", "polarity", "to_input"]

_INPUTS = ("bytes", "nibbles")


def to_input(y: torch.Tensor, input: str = "bytes") -> torch.Tensor:
    """Generator input from uint8 images: bytes / 255 ``(N, C, H, W)``, or nibble planes
    ``[low nibbles, high nibbles] / 15`` ``(N, 2C, H, W)`` (both in [0, 1]).

    >>> import torch
    >>> to_input(torch.tensor([[[[0x5A]]]], dtype=torch.uint8), "nibbles").flatten().tolist()
    [0.6666666865348816, 0.3333333432674408]
    """
    if input == "bytes":
        return y.to(torch.float32) / 255
    if input == "nibbles":
        return torch.cat([(y & 15), (y >> 4)], dim=1).to(torch.float32) / 15
    raise ValueError(f"unknown input {input!r}; expected one of {', '.join(_INPUTS)}")


def _sn(m: nn.Module, on: bool) -> nn.Module:
    return nn.utils.spectral_norm(m) if on else m


class BlockFrontEnd(nn.Module):
    """SIA-GAN's block-wise front end: a linear map of each ``b×b`` block's ``C·b·b`` values
    to ``features·b·b`` values (one map per block position, or one ``shared`` map), BatchNorm,
    LeakyReLU(0.1) (``activation=False``: none), then ``PixelShuffle(b)`` back to
    ``(N, features, H, W)``.

    ``weight`` has shape ``(P, features·b·b, C·b·b)`` (P = number of block positions, 1 when
    shared); input index ``c·b·b + r·b + s`` is channel c at (r, s) of the block, output index
    ``f·b·b + r·b + s`` lands on feature f at (r, s).

    >>> import torch
    >>> BlockFrontEnd(block_size=4, in_channels=6, features=3, image_size=(8, 8))(torch.rand(2, 6, 8, 8)).shape
    torch.Size([2, 3, 8, 8])
    """

    def __init__(self, *, block_size: int, in_channels: int, features: int, image_size: tuple[int, int],
                 shared: bool = False, spectral_norm: bool = True, activation: bool = True) -> None:
        super().__init__()
        b = block_size
        self.activation = activation
        h, w = image_size
        self.b, self.grid, self.shared, self.sn = b, (h // b, w // b), shared, spectral_norm
        p = 1 if shared else (h // b) * (w // b)
        d_in, d_out = in_channels * b * b, features * b * b
        self.weight = nn.Parameter(torch.empty(p, d_out, d_in))
        bound = d_in ** -0.5  # nn.Conv2d's default (kaiming-uniform, a = sqrt(5)) bound
        nn.init.uniform_(self.weight, -bound, bound)
        self.bn = nn.BatchNorm2d(d_out) if shared else nn.BatchNorm1d(d_out * p)
        if spectral_norm:  # one persistent power-iteration vector per position
            u = F.normalize(torch.randn(p, d_out), dim=1)
            self.register_buffer("u", u)

    def effective_weight(self) -> torch.Tensor:
        """The weight divided by its spectral norm (per position) when ``spectral_norm``."""
        w = self.weight
        if not self.sn:
            return w
        with torch.no_grad():
            if self.training:  # one power iteration per forward, as torch's spectral_norm
                v = F.normalize(torch.einsum("pod,po->pd", w, self.u), dim=1)
                self.u.copy_(F.normalize(torch.einsum("pod,pd->po", w, v), dim=1))
            v = F.normalize(torch.einsum("pod,po->pd", w, self.u), dim=1)
        sigma = torch.einsum("po,pod,pd->p", self.u, w, v)
        return w / sigma[:, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        gh, gw = self.grid
        blocks = F.pixel_unshuffle(x, self.b).flatten(2)  # (N, C·b·b, P)
        w = self.effective_weight()
        out = torch.einsum("nip,poi->nop", blocks, w) if not self.shared else torch.einsum("nip,oi->nop", blocks, w[0])
        if self.shared:
            out = self.bn(out.reshape(n, -1, gh, gw))
        else:
            out = self.bn(out.reshape(n, -1)).reshape(n, -1, gh, gw)
        return F.pixel_shuffle(F.leaky_relu(out, 0.1) if self.activation else out, self.b)


class _Res(nn.Module):
    def __init__(self, ch: int, sn: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(_sn(nn.Conv2d(ch, ch, 3, padding=1, bias=False), sn), nn.BatchNorm2d(ch),
                                  nn.LeakyReLU(0.1),
                                  _sn(nn.Conv2d(ch, ch, 3, padding=1, bias=False), sn), nn.BatchNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.body(x) + x, 0.1)


class SIAGANGenerator(nn.Module):
    """SIA-GAN's generator: :class:`BlockFrontEnd` → 3×3 conv → ``n_res`` residual blocks →
    3×3 conv → 3×3 conv → tanh, returned as an image in [0, 1].

    ``features(x)`` is the front end's output (SIA-GAN's "feature", the TV term's input).

    >>> import torch
    >>> g = SIAGANGenerator(block_size=4, image_size=(16, 16), width=8, block_features=4)
    >>> g(torch.rand(2, 3, 16, 16)).shape
    torch.Size([2, 3, 16, 16])
    """

    def __init__(self, *, block_size: int, image_size: tuple[int, int], in_channels: int = 3, out_channels: int = 3,
                 width: int = 64, n_res: int = 3, block_features: int = 16, shared_blocks: bool = False,
                 spectral_norm: bool = True, body: bool = True) -> None:
        super().__init__()
        sn = spectral_norm
        if not body:
            block_features = out_channels
        self.front = BlockFrontEnd(block_size=block_size, in_channels=in_channels, features=block_features,
                                   image_size=image_size, shared=shared_blocks, spectral_norm=sn, activation=body)
        self.body = nn.Identity() if not body else nn.Sequential(
            _sn(nn.Conv2d(block_features, width, 3, padding=1, bias=False), sn), nn.BatchNorm2d(width),
            nn.LeakyReLU(0.1), *[_Res(width, sn) for _ in range(n_res)],
            _sn(nn.Conv2d(width, width, 3, padding=1, bias=False), sn), nn.BatchNorm2d(width), nn.LeakyReLU(0.1),
            _sn(nn.Conv2d(width, out_channels, 3, padding=1, bias=False), sn))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.front(x)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        f = self.front(x)
        out = (torch.tanh(self.body(f)) + 1) / 2
        return (out, f) if return_features else out


class _SelfAttn(nn.Module):
    """SAGAN self-attention (query/key to C/8 channels, value to C, learnt gate from 0)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        k = max(1, ch // 8)
        self.q, self.k, self.v = nn.Conv2d(ch, k, 1), nn.Conv2d(ch, k, 1), nn.Conv2d(ch, ch, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.q(x).flatten(2), self.k(x).flatten(2), self.v(x).flatten(2)
        att = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (N, HW, HW)
        return self.gamma * (v @ att.transpose(1, 2)).view(n, c, h, w) + x


class SIAGANDiscriminator(nn.Module):
    """SIA-GAN's discriminator (SAGAN-style, spectral norm); one score per image in [0, 1]
    (rescaled to [−1, 1] inside). ``image_size`` must be divisible by 8.

    >>> import torch
    >>> SIAGANDiscriminator(width=4, image_size=(16, 16))(torch.rand(2, 3, 16, 16)).shape
    torch.Size([2])
    """

    def __init__(self, *, channels: int = 3, width: int = 128, image_size: tuple[int, int] = (32, 32),
                 spectral_norm: bool = True) -> None:
        super().__init__()
        sn = spectral_norm

        def stage(a: int, b: int) -> list[nn.Module]:
            return [_sn(nn.Conv2d(a, b, 3, 1, 1), sn), nn.LeakyReLU(0.1), _sn(nn.Conv2d(b, b, 4, 2, 1), sn),
                    nn.LeakyReLU(0.1)]

        w = width
        self.net = nn.Sequential(*stage(channels, w), *stage(w, 2 * w), *stage(2 * w, 4 * w), _SelfAttn(4 * w),
                                 _sn(nn.Conv2d(4 * w, 8 * w, 3, 1, 1), sn), _SelfAttn(8 * w), nn.Flatten())
        self.linear = _sn(nn.Linear(8 * w * (image_size[0] // 8) * (image_size[1] // 8), 1), sn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.net(x * 2 - 1)).squeeze(1)


class _Classifier(nn.Module):
    """Small CNN for SIA-GAN's auxiliary CE term (theirs: ShakeDrop PyramidNet-110)."""

    def __init__(self, channels: int, classes: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(nn.Conv2d(channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


def _tv(x: torch.Tensor) -> torch.Tensor:
    """Their ``total_variation_norm`` (β = 2) on the first three feature channels, per pixel."""
    x = x[:, :3]
    d = (x[:, :, :-1, :-1] - x[:, :, 1:, :-1]) ** 2 + (x[:, :, :-1, :-1] - x[:, :, :-1, 1:]) ** 2
    return d.sum() / (x.shape[1] * x.shape[2] * x.shape[3])


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding 4 and random horizontal flip (torchvision's recipe)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1).to(x.device), x.flip(3), x)
    pad = F.pad(x, (4, 4, 4, 4))
    dy, dx = torch.randint(0, 9, (n,), generator=g), torch.randint(0, 9, (n,), generator=g)
    rows = (dy.view(n, 1) + torch.arange(h)).to(x.device)
    cols = (dx.view(n, 1) + torch.arange(w)).to(x.device)
    idx = torch.arange(n, device=x.device).view(n, 1, 1)
    return pad.permute(0, 2, 3, 1)[idx, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)


def polarity(rec: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-channel signs ``(C,)`` in {1, −1} that make reconstructions ``rec`` look like the plain
    ``reference`` images (both ``(N, C, H, W)``, any range; −1 means "use 1 − x").

    Step 1 (up to one global sign): maximise the sum of signed correlations between channels
    (natural images have positively correlated colour channels). Step 2: of the two signs
    left, keep the one whose mean and skewness of all values (channels pooled, so a
    reconstruction with swapped colours is judged right) are closer to ``reference``'s
    (the mean in units of the reference's spread). Cheap, ciphertext-only (``rec`` are
    reconstructions of ciphertexts, ``reference`` the attacker's own images).

    >>> import torch
    >>> x = torch.rand(8, 3, 4, 4) ** 2  # positively skewed, correlated channels
    >>> x = x.mean(1, keepdim=True).expand(-1, 3, -1, -1) + 0.05 * torch.rand(8, 3, 4, 4)
    >>> polarity(torch.stack([x[:, 0], 1 - x[:, 1], x[:, 2]], 1), x).tolist()
    [1.0, -1.0, 1.0]
    """
    c = rec.shape[1]
    r = rec.transpose(0, 1).reshape(c, -1).double()
    ref = reference.transpose(0, 1).reshape(c, -1).double()
    r, ref = r / max(float(r.max()), 1e-12), ref / max(float(ref.max()), 1e-12)
    corr = torch.nan_to_num(torch.corrcoef(r)) if c > 1 else torch.ones(1, 1, dtype=torch.float64)
    combos = torch.cartesian_prod(*[torch.tensor([1.0, -1.0], dtype=torch.float64)] * c).reshape(-1, c)
    best = combos[torch.argmax(torch.einsum("ki,ij,kj->k", combos, corr, combos))]

    def moments(x: torch.Tensor) -> torch.Tensor:
        x = x.flatten()
        m, sd = x.mean(), x.std().clamp_min(1e-12)
        return torch.stack([m / spread, (((x - m) / sd) ** 3).mean()])

    spread = ref.std().clamp_min(1e-12)
    target = moments(ref)
    scores = [float((moments(torch.where(s[:, None] > 0, r, 1 - r)) - target).abs().sum()) for s in (best, -best)]
    return (best if scores[0] <= scores[1] else -best).float()


def _reconstruct(gen: nn.Module, test_enc: torch.Tensor, input: str,
                 signs: torch.Tensor | None = None) -> torch.Tensor:
    was = gen.training
    gen.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, test_enc.shape[0], 256):
            out = gen(to_input(test_enc[i:i + 256], input))
            if signs is not None:
                out = torch.where(signs.to(out.device).view(1, -1, 1, 1) > 0, out, 1 - out)
            outs.append((out * 255).round().to(torch.uint8))
    gen.train(was)
    return torch.cat(outs)


def gan_attack(*, train_plain: torch.Tensor, train_protected: torch.Tensor, test_protected: torch.Tensor,
               block_size: int, epochs: int = 5, seed: int = 0, input: str = "bytes", width: int = 64,
               n_res: int = 3, block_features: int = 16, d_width: int = 128, shared_blocks: bool = False,
               body: bool = True, spectral_norm: bool = True, batch_size: int = 128, lr: float = 2e-4, lr_d: float | None = None,
               betas: tuple[float, float] = (0.9, 0.999), betas_d: tuple[float, float] = (0.5, 0.999),
               labels: torch.Tensor | None = None, class_weight: float = 1.0, tv_weight: float = 0.0,
               augment: bool = True, fix_polarity: bool = False, paired: bool = False, pixel_weight: float = 100.0,
               eval_every: int | None = None, eval_fn: Callable[[torch.Tensor], float] | None = None,
               checkpoint: str | os.PathLike | None = None, return_history: bool = False):
    """Train SIA-GAN (encrypted → plain; see the module docstring) and reconstruct ``test_protected``.

    Args:
        train_plain: the attacker's plain uint8 images of the known distribution ``(M, C, H, W)``
            (the discriminator's "real" images).
        train_protected: encrypted uint8 images ``(M', C_in, H, W)`` under the victim's key; with
            ``paired=True`` the encryptions of ``train_plain``, in order.
        test_protected: encrypted uint8 images to reconstruct ``(N, C_in, H, W)``.
        block_size: block size of the front end (the scheme's block size; 1 for PE).
        epochs: passes over ``train_protected`` in batches of ``batch_size``.
        input: ``"bytes"`` (SIA-GAN) or ``"nibbles"`` (LE/ELE; difference 1).
        width, n_res, block_features, d_width: generator / discriminator sizes (SIA-GAN: 64, 3,
            16, 128).
        shared_blocks: one front-end map for all block positions (difference 2; for LE).
        lr, betas / lr_d, betas_d: Adam for G (and the classifier) / for D (``lr_d`` defaults
            to ``lr``).
        labels: class labels of ``train_protected`` (int64, ``(M',)``) to add the CE term.
        tv_weight: weight of the TV term on the front-end features (their variant: 1e-3).
        augment: crop + flip the plain (real) images.
        fix_polarity: choose each output channel's polarity (x or 1 − x) with :func:`polarity`
            on the reconstructions of ``train_protected`` against ``train_plain`` (difference 8).
        paired: ``train_protected[i]`` encrypts ``train_plain[i]``; adds ``pixel_weight · L1``.
        eval_every, eval_fn: record ``eval_fn(uint8 reconstructions of test_protected)`` every
            ``eval_every`` generator steps and after the last one (history ``"step"``,
            ``"eval"``, ``"cpu_seconds"``: training CPU seconds so far, evaluation excluded).
        checkpoint: a file written atomically after every epoch (networks, optimisers, RNG,
            history); if it exists, training resumes after its last epoch (call again with more
            ``epochs`` to extend a run). A checkpoint made with other data or settings raises.
        return_history: also return the history: per-epoch means ``"d_loss"``, ``"g_adv"``,
            ``"pixel"``, ``"ce"`` and the evaluation curve above.

    Returns:
        uint8 reconstructions ``(N, C, H, W)`` on ``test_protected``'s device (and the history).
    """
    who = "gan_attack"
    train_enc, test_enc = train_protected, test_protected
    for v, name in ((train_plain, "train_plain"), (train_protected, "train_protected"),
                    (test_protected, "test_protected")):
        check_images(v, name, who, dtype="uint8")
    b = check_positive_int(block_size, "block_size", who)
    epochs, batch_size = check_positive_int(epochs, "epochs", who), check_positive_int(batch_size, "batch_size", who)
    width = check_positive_int(width, "width", who)
    n_res = check_int(n_res, "n_res", who, minimum=0)
    block_features = check_positive_int(block_features, "block_features", who)
    d_width = check_positive_int(d_width, "d_width", who)
    check_choice(input, "input", _INPUTS, who)
    h, w = train_enc.shape[2:]
    if train_plain.shape[2:] != (h, w) or test_enc.shape[1:] != train_enc.shape[1:]:
        raise ShapeError(f"gan_attack: image sizes differ: train_plain {tuple(train_plain.shape[1:])}, "
                         f"train_protected {tuple(train_enc.shape[1:])}, test_protected {tuple(test_enc.shape[1:])}; "
                         f"expected the same H×W everywhere and the same channels in train_protected and "
                         f"test_protected")
    if h % b or w % b:
        raise ShapeError(f"gan_attack: image size {h}x{w} is not divisible by block_size {b}; "
                         f"pass the encryption's block size (1 for PE)")
    if h % 8 or w % 8:
        raise ShapeError(f"gan_attack: image size {h}x{w} must be divisible by 8 (the discriminator halves it 3 times)")
    if paired:
        check_same_length({"train_plain": train_plain, "train_protected": train_protected}, who,
                          why="paired=True: train_protected[i] encrypts train_plain[i]")
    if labels is not None and (not isinstance(labels, torch.Tensor) or labels.shape != (train_enc.shape[0],)):
        raise ValueError(f"gan_attack: labels must be a tensor of one class per encrypted training image "
                         f"({train_enc.shape[0]},), got {getattr(labels, 'shape', type(labels).__name__)}")
    if eval_every is not None:
        check_positive_int(eval_every, "eval_every", who)
        if eval_fn is None:
            raise ValueError("gan_attack: eval_every needs eval_fn (reconstructions -> a number, e.g. mean SSIM)")
    device = train_enc.device
    c_out = train_plain.shape[1]
    c_in = train_enc.shape[1] * (2 if input == "nibbles" else 1)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        gen = SIAGANGenerator(block_size=b, image_size=(h, w), in_channels=c_in, out_channels=c_out, width=width,
                              n_res=n_res, block_features=block_features, shared_blocks=shared_blocks,
                              spectral_norm=spectral_norm, body=body).to(device)
        disc = SIAGANDiscriminator(channels=c_out, width=d_width, image_size=(h, w),
                                   spectral_norm=spectral_norm).to(device)
        g_params = list(gen.parameters())
        clf = None
        if labels is not None:
            clf = _Classifier(c_out, int(labels.max()) + 1).to(device)
            g_params += list(clf.parameters())
            labels = labels.to(device)
        opt_g = torch.optim.Adam(g_params, lr=lr, betas=betas)
        opt_d = torch.optim.Adam(disc.parameters(), lr=lr if lr_d is None else lr_d, betas=betas_d)
        g = torch.Generator(device="cpu").manual_seed(seed)
        m_enc, m_plain = train_enc.shape[0], train_plain.shape[0]
        steps = max(1, -(-m_enc // batch_size))
        history: dict[str, list[float]] = {"d_loss": [], "g_adv": [], "pixel": [], "ce": [], "step": [], "eval": [],
                                           "cpu_seconds": []}
        cpu = 0.0

        def signs() -> torch.Tensor | None:
            if not fix_polarity:
                return None
            sub = train_enc[:512]
            return polarity(_reconstruct(gen, sub, input).float(), train_plain[:2048].float())

        def evaluate(step: int) -> None:
            history["step"].append(step)
            history["eval"].append(float(eval_fn(_reconstruct(gen, test_enc, input, signs()))))
            history["cpu_seconds"].append(round(cpu, 2))

        fingerprint = repr(dict(data=[(tuple(v.shape), int(v.sum())) for v in (train_plain, train_enc)],
                                labels=None if labels is None else int(labels.sum()), b=b, input=input, width=width,
                                n_res=n_res, block_features=block_features, d_width=d_width, shared=shared_blocks,
                                body=body, sn=spectral_norm, batch=batch_size, lr=(lr, lr_d, betas, betas_d),
                                weights=(class_weight, tv_weight, pixel_weight), augment=augment, paired=paired,
                                seed=seed))
        step, start = 0, 0
        if checkpoint is not None and os.path.exists(checkpoint):
            try:
                state = torch.load(checkpoint, map_location=device, weights_only=False)
                ok = state["fingerprint"] == fingerprint
            except Exception as e:  # noqa: BLE001 - any unreadable file is the same error for the user
                raise ValueError(f"gan_attack: checkpoint {checkpoint} is corrupt ({e}); delete it to start over") from e
            if not ok:
                raise ValueError(f"gan_attack: checkpoint {checkpoint} was made with other data or settings; "
                                 f"delete it or pass another path")
            gen.load_state_dict(state["gen"]); disc.load_state_dict(state["disc"])
            opt_g.load_state_dict(state["opt_g"]); opt_d.load_state_dict(state["opt_d"])
            if clf is not None:
                clf.load_state_dict(state["clf"])
            g.set_state(state["rng"]); torch.set_rng_state(state["torch_rng"])
            start, step, cpu, history = state["epoch"], state["step"], state["cpu"], state["history"]
        bar = progress(total=max(0, epochs - start) * steps, desc="GAN-Attack", leave=False)
        for epoch in range(start, epochs):
            order = torch.randperm(m_enc, generator=g)
            order_plain = order if paired else torch.randint(m_plain, (m_enc,), generator=g)
            sums = torch.zeros(4)
            gen.train()
            disc.train()
            for i in range(steps):
                t0 = time.process_time()
                idx = order[i * batch_size:(i + 1) * batch_size].to(device)
                enc = to_input(train_enc[idx], input)
                real = train_plain[order_plain[i * batch_size:(i + 1) * batch_size].to(device)].to(torch.float32) / 255
                if augment and not paired:
                    real = _augment(real, g)
                fake, feat = gen(enc, return_features=True)
                # discriminator: hinge loss
                d_loss = F.relu(1 - disc(real)).mean() + F.relu(1 + disc(fake.detach())).mean()
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                # generator: -D(fake) (+ CE of the joint classifier, TV of the features, pixel L1 for pairs)
                g_adv = -disc(fake).mean()
                g_loss = g_adv
                ce = pix = fake.new_zeros(())
                if clf is not None:
                    ce = F.cross_entropy(clf(fake), labels[idx])
                    g_loss = g_loss + class_weight * ce
                if tv_weight:
                    g_loss = g_loss + tv_weight * _tv(feat)
                if paired:
                    pix = F.l1_loss(fake, real)
                    g_loss = g_loss + pixel_weight * pix
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                sums += torch.tensor([d_loss.item(), g_adv.item(), pix.item(), ce.item()])
                step += 1
                cpu += time.process_time() - t0
                bar.update(1)
                if eval_every is not None and step % eval_every == 0:
                    evaluate(step)
            for k, v in zip(("d_loss", "g_adv", "pixel", "ce"), (sums / steps).tolist()):
                history[k].append(v)
            if checkpoint is not None:
                state = dict(fingerprint=fingerprint, epoch=epoch + 1, step=step, cpu=cpu, history=history,
                             gen=gen.state_dict(), disc=disc.state_dict(), opt_g=opt_g.state_dict(),
                             opt_d=opt_d.state_dict(), clf=None if clf is None else clf.state_dict(),
                             rng=g.get_state(), torch_rng=torch.get_rng_state())
                with atomic_write(checkpoint, "wb") as fh:
                    torch.save(state, fh)
        bar.close()
        if eval_fn is not None and (not history["step"] or history["step"][-1] != step):
            evaluate(step)
        rec = _reconstruct(gen, test_enc, input, signs())
    return (rec, history) if return_history else rec
