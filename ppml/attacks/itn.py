"""ITN-Attack — the inverse-transformation-network attack (Ito, Kinoshita & Kiya, §II-C and
§III-B; also MaungMaung & Kiya's security evaluation of EtC images, paper 03).

Threat model: the attacker has pairs (protected image, plain image) of the same kind of data
— for the transformation network because h_θ is public (the attacker protects images of
their own), for key-based encryption because images of the known distribution can be
encrypted with keys of the attacker's own. The attacker trains an inverse network on those
pairs with the mean squared error and applies it to the victim's protected images; the
estimates are scored with PSNR (``ppml.metrics.psnr``) against the true plain images.

The inverse network is the U-Net of the paper (``ppml.models.UNet``, 64…1024 channels at
paper scale, sigmoid output), trained with :func:`ppml.train.fit` (checkpoints, resume,
progress, multi-GPU all apply). The paper does not give the attack's optimiser ("all
networks were trained for 200 epochs" with SGD lr 0.1 is the only recipe stated); the
default here is AdamW 1e-3 with a cosine schedule, which fits an MSE image-to-image network
faster — the attacker is free to choose the strongest training, so a faster-converging
optimiser makes the evaluation stricter, not weaker. Pass ``optimizer="sgd", lr=0.1,
schedule="multistep", milestones=[60, 120, 160], gamma=0.2`` for the paper's recipe.

**LE under paper 03's threat model.** Paper 03 trains the ITN on "exact pairs of plain
images and encrypted ones with different multiple keys" (Sec. III-G) and prints SSIM 0.281
for LE in Fig. 6 — the SSIM of *one example image*, with "partial results taken from" Ito et
al. (IEEE Access 2021); the means are only in the box plot of Fig. 8. With keys other than
the victim's, what a block-local network can use is what every LE key leaves unchanged: the
multiset of a block's nibbles up to ``v → 15 − v``. Measured on 32-px photo crops (400
attacker / 200 victim images): the best affine map from a block's *sorted folded nibbles*
(all such invariants) to its pixels, fitted in closed form, scores SSIM 0.189 — below the
no-attack floor of 0.211 (the attacker's mean image); the U-Net (width 16, depth 2) with 4
attacker keys stays at 0.09–0.17 over 105 steps. So under this threat model the ITN-Attack
does not beat the floor on LE at CPU scale; a network would have to infer the victim's key
from the cross-block statistics of each image (what :mod:`ppml.attacks.le_stats` does
explicitly). Given pairs under the *victim's* key instead (known plaintext, a stronger
attacker) the same U-Net learns LE's decryption quickly: SSIM 0.27 / 0.45 / 0.55 after
21 / 42 / 63 steps.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
import torch.nn as nn

from ppml._checks import ShapeError, check_images, check_positive_int, check_same_length
from ppml.losses import image_mse_loss as inverse_network_loss  # the ITN-Attack's loss: MSE to the plain image
from ppml.models.unet import UNet
from ppml.train import fit

__all__ = ["itn_attack", "inverse_network_loss"]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


def itn_attack(*, train_plain: torch.Tensor, train_protected: torch.Tensor, test_protected: torch.Tensor,
               epochs: int = 20, width: int = 64, depth: int = 4, seed: int = 0, batch_size: int = 128,
               optimizer: str = "adamw", lr: float = 1e-3, weight_decay: float = 0.0, schedule: str = "cosine",
               milestones: list[int] | None = None, gamma: float = 0.1, device: torch.device | str | None = None,
               progress: bool = True, checkpoint_dir: str | None = None, return_model: bool = False,
               eval_every: int | None = None, eval_fn: Callable[[torch.Tensor], float] | None = None,
               return_history: bool = False, **fit_kwargs: Any) -> Any:
    """Train a U-Net (``width``·2^i channels, ``depth`` levels, sigmoid output) with MSE to map
    ``train_protected`` → ``train_plain`` for ``epochs`` epochs, then return its estimates of
    the plain images behind ``test_protected``.

    Inputs are batches (N, C, H, W), each uint8 or float in [0, 1] (kinds may differ);
    H and W must be divisible by 2**depth; the number of channels may differ between
    protected and plain images (e.g. 6-channel nibble planes → RGB). The output has
    ``test_protected``'s kind: uint8 (rounded) for uint8 input, else float in [0, 1] with its
    dtype; it lies on the CPU. ``return_model=True`` also returns the trained network (eval
    mode). Other keyword arguments go to :func:`ppml.train.fit` (e.g. ``momentum``).

    ``eval_every`` / ``eval_fn``: every ``eval_every`` optimisation steps (and after the last)
    the network, in eval mode, estimates ``test_protected`` and ``eval_fn(estimates)`` (e.g.
    mean SSIM against the victims' plain images) is recorded; ``return_history=True`` appends
    ``{"step", "eval", "cpu_seconds"}`` (training CPU seconds so far) to the returned values.

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=g)
    >>> est = itn_attack(train_plain=x, train_protected=255 - x, test_protected=255 - x[:4], epochs=1, width=4,
    ...                  depth=1, batch_size=8, progress=False)
    >>> est.shape, est.dtype
    (torch.Size([4, 3, 8, 8]), torch.uint8)
    """
    who = "itn_attack"
    for x, name in ((train_plain, "train_plain"), (train_protected, "train_protected"),
                    (test_protected, "test_protected")):
        check_images(x, name, who)
    check_same_length({"train_plain": train_plain, "train_protected": train_protected}, who,
                      why="they are pairs")
    if train_protected.shape[2:] != train_plain.shape[2:]:
        raise ShapeError(f"itn_attack: protected and plain training images differ in size: "
                         f"{tuple(train_protected.shape[2:])} vs {tuple(train_plain.shape[2:])}")
    if test_protected.shape[1:] != train_protected.shape[1:]:
        raise ShapeError(f"itn_attack: test_protected images {tuple(test_protected.shape[1:])} differ from the "
                         f"training ones {tuple(train_protected.shape[1:])}")
    check_positive_int(width, "width", who)
    check_positive_int(depth, "depth", who)
    h, w = train_protected.shape[2:]
    m = 2**depth
    if h % m or w % m:
        raise ShapeError(f"itn_attack: image size {h}×{w} is not divisible by 2**depth = {m}; "
                         f"use depth <= {min((h & -h), (w & -w)).bit_length() - 1} or pad the images")

    if eval_every is not None:
        check_positive_int(eval_every, "eval_every", who)
        if eval_fn is None:
            raise ValueError("itn_attack: eval_every needs eval_fn (estimates -> a number, e.g. mean SSIM)")

    torch.manual_seed(seed)
    net = UNet(in_chans=train_protected.shape[1], out_chans=train_plain.shape[1], width=width, depth=depth,
               sigmoid=True)
    history: dict[str, list[float]] = {"step": [], "eval": [], "cpu_seconds": []}
    clock = {"step": 0, "cpu": 0.0, "t": time.process_time()}

    def record(model: nn.Module) -> None:
        clock["cpu"] += time.process_time() - clock["t"]
        history["step"].append(clock["step"])
        history["eval"].append(float(eval_fn(_estimate(model, test_protected))))
        history["cpu_seconds"].append(round(clock["cpu"], 2))
        clock["t"] = time.process_time()

    def loss_hook(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if eval_every is not None and clock["step"] and clock["step"] % eval_every == 0 \
                and (not history["step"] or history["step"][-1] != clock["step"]):
            record(model)
        clock["step"] += 1
        return inverse_network_loss(model, x, y)

    fit(net, (train_protected, train_plain), epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
        weight_decay=weight_decay, schedule=schedule, milestones=milestones, gamma=gamma,
        loss=loss_hook, seed=seed, device=device, progress=progress, checkpoint_dir=checkpoint_dir,
        **fit_kwargs)
    if eval_fn is not None:
        record(net)
    net.eval()
    est = _estimate(net, test_protected)
    out: tuple[Any, ...] = (est,) + ((net,) if return_model else ()) + ((history,) if return_history else ())
    return out[0] if len(out) == 1 else out


def _estimate(net: nn.Module, test_protected: torch.Tensor) -> torch.Tensor:
    """The network's estimates of ``test_protected``'s plain images (eval mode, then restored)."""
    was = net.training
    net.eval()
    dev = next(net.parameters()).device
    outs = []
    with torch.no_grad():
        for i in range(0, len(test_protected), 256):
            outs.append(net(_unit(test_protected[i:i + 256].to(dev))).float().clamp(0, 1).cpu())
    net.train(was)
    est = torch.cat(outs)
    if test_protected.dtype == torch.uint8:
        return (est * 255).round().to(torch.uint8)
    return est.to(test_protected.dtype)
