"""FR-, GAN- and ITN-Attack on several encryption schemes under one threat model (paper 03,
Sec. III-C and Figs. 6/8): a ciphertext-only attacker who knows the data distribution.

For every scheme, one victim key encrypts the victim's images; the attacks then get:

* FR-Attack (:func:`ppml.attacks.fr.fr_attack`): the victim's encrypted images only (plus the
  attacker's plain images as a channel-mean reference);
* GAN-Attack (:func:`ppml.attacks.gan.gan_attack`, SIA-GAN): the attacker's own plain images
  and the victim's encrypted *training* images, unpaired;
* ITN-Attack (:func:`ppml.attacks.itn.itn_attack`): exact plain/encrypted pairs of the
  attacker's images made with ``attack_keys`` *other* keys of the same scheme.

Every reconstruction is scored against the victim's plain images with SSIM; ``floor`` is the
SSIM of the attacker's mean plain image, i.e. what no ciphertext at all gives. With
``eval_every`` the GAN and ITN reconstructions are also scored during training (the victims'
plain images are used only to *measure* the attack, never to train it), giving SSIM against
training steps and CPU seconds in ``AttackResults.curves``.

GAN settings: SIA-GAN's own sizes (widths 64/128, batch 128 + 128, Adam 2e-4) are
:func:`~ppml.attacks.gan.gan_attack`'s defaults; ``run_attacks`` starts from
:data:`GAN_CPU` (narrower networks, batch 32, Adam 1e-3 for both networks, output polarity
fixed after training) so that a few hundred steps fit in CPU-minutes; ``gan_kwargs`` (all
schemes) and ``gan_scheme_kwargs`` (per scheme) override it.

Measured on a CPU (400 attacker / 400 victim-training / 200 victim 32-px photo crops, batch
32, 13 steps an epoch; SSIM floor 0.211; CPU seconds of one core including the evaluations):
with ``gan_kwargs=dict(body=False, shared_blocks=True)`` (a per-block affine generator shared
by all blocks, on nibble planes for LE) LE rises 0.09 → 0.26 → 0.40 → 0.44 → 0.47 → 0.50 at
26 / 78 / 130 / 156 / 208 / 325 steps (6 / 18 / 30 / 36 / 48 / 75 training CPU seconds), while
EtC (block 16) stays at 0.01–0.02 over 104 steps. The SIA-GAN generator with its
convolutional body, per-position front end and bytes (widths 16, Adam 2e-4) is at 0.04–0.09
after 130 steps. A figure in ~80 CPU seconds::

    run_attacks(victim, victim_train, attacker_plain, make_key, gan_epochs=4,
                gan_block={"LE": 4, "ELE": 4, "PE": 1, "EtC": 16}, gan_input={"LE": "nibbles", "ELE": "nibbles"},
                gan_kwargs=dict(body=False, shared_blocks=True), gan_scheme_kwargs={"LE": {"epochs": 12}},
                eval_every=13, ...)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ppml.ciphers import cipher_for
from ppml.transforms import EncryptBatch
from ppml.keys import Key
from ppml.metrics import ssim

from .fr import fr_attack
from .gan import gan_attack
from .itn import itn_attack

__all__ = ["AttackResults", "run_attacks", "ATTACKS", "GAN_CPU"]

ATTACKS = ("FR-Attack", "GAN-Attack", "ITN-Attack")

#: run_attacks' starting GAN settings: SIA-GAN's architecture at CPU widths (see ppml.attacks.gan)
GAN_CPU: dict[str, Any] = dict(width=16, d_width=16, block_features=16, n_res=3, batch_size=32, lr=1e-3, lr_d=1e-3,
                               fix_polarity=True)


@dataclass
class AttackResults:
    """``recon[scheme][row]`` (uint8 images; rows "Encrypted" and each attack), ``ssim[scheme][row]``
    (per victim image, numpy), ``cpu_seconds[f"{attack} {scheme}"]``, the no-attack ``floor`` and,
    with ``eval_every``, ``curves[f"{attack} {scheme}"] = {"step", "ssim", "cpu_seconds"}`` (mean
    SSIM on the victims against training steps and training CPU seconds)."""

    recon: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    ssim: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    floor: float = float("nan")
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def mean_ssim(self) -> dict[str, dict[str, float]]:
        """Mean SSIM per scheme and row."""
        return {sc: {a: float(v.mean()) for a, v in d.items()} for sc, d in self.ssim.items()}


def run_attacks(victim: torch.Tensor, victim_train: torch.Tensor, attacker_plain: torch.Tensor,
                make_key: Mapping[str, Callable[[int], Key]], *, attacks: tuple[str, ...] = ATTACKS,
                gan_block: Mapping[str, int] | None = None, gan_input: Mapping[str, str] | None = None,
                gan_epochs: int = 4, gan_kwargs: Mapping[str, Any] | None = None,
                gan_scheme_kwargs: Mapping[str, Mapping[str, Any]] | None = None, attack_keys: int = 4,
                itn_kwargs: Mapping[str, Any] | None = None, eval_every: int | None = None,
                seed: int = 0) -> AttackResults:
    """Attack every scheme of ``make_key`` (name → ``seed -> Key``) and score with SSIM.

    The victim's key is ``make_key[s](seed + 1000)``; the ITN attacker's keys are
    ``make_key[s](seed + 2000 + i)`` for ``i < attack_keys`` (one drawn per image). ``gan_block``
    / ``gan_input``: the GAN generator's block size and input representation per scheme
    (default: block 4, ``"bytes"``); the GAN trains ``gan_epochs`` epochs with :data:`GAN_CPU`
    updated by ``gan_kwargs`` then ``gan_scheme_kwargs[scheme]`` (any
    :func:`~ppml.attacks.gan.gan_attack` argument, ``epochs`` included). ``itn_kwargs`` go to :func:`itn_attack`
    (epochs, width, …). ``eval_every``: record SSIM curves every that many training steps of
    the GAN and the ITN (``AttackResults.curves``).
    """
    unknown = set(attacks) - set(ATTACKS)
    if unknown:
        raise ValueError(f"unknown attacks {sorted(unknown)}: choose from {', '.join(ATTACKS)}")
    if victim.shape[1:] != attacker_plain.shape[1:] or victim.shape[1:] != victim_train.shape[1:]:
        raise ValueError(f"victim {tuple(victim.shape)}, victim_train {tuple(victim_train.shape)} and attacker_plain "
                         f"{tuple(attacker_plain.shape)} must share (C, H, W)")
    out = AttackResults()
    mean_img = attacker_plain.float().mean(0, keepdim=True).round().to(torch.uint8).expand_as(victim)
    out.floor = float(ssim(mean_img, victim).mean())
    g = torch.Generator().manual_seed(seed)

    def mean_ssim(rec: torch.Tensor) -> float:
        return float(ssim(rec, victim).mean())

    def curve(name: str, hist: dict[str, list[float]]) -> None:
        out.curves[name] = {"step": hist["step"], "ssim": hist["eval"], "cpu_seconds": hist["cpu_seconds"]}

    track = dict(eval_every=eval_every, eval_fn=mean_ssim, return_history=True) if eval_every else {}
    for scheme, mk in make_key.items():
        victim_key = cipher_for(mk(seed + 1000))  # the victim's secret key
        victim_enc = victim_key(victim)
        rec = {"Encrypted": victim_enc}
        if "FR-Attack" in attacks:
            rec["FR-Attack"] = fr_attack(test_protected=victim_enc, train_plain=attacker_plain)
        if "GAN-Attack" in attacks:
            t0 = time.process_time()
            kw = {**GAN_CPU, "epochs": gan_epochs, "block_size": (gan_block or {}).get(scheme, 4),
                  "input": (gan_input or {}).get(scheme, "bytes"), **dict(gan_kwargs or {}),
                  **dict((gan_scheme_kwargs or {}).get(scheme, {}))}
            r = gan_attack(train_plain=attacker_plain, train_protected=victim_key(victim_train),
                           test_protected=victim_enc, seed=seed, **kw, **track)
            if eval_every:
                r, hist = r
                curve(f"GAN {scheme}", hist)
            rec["GAN-Attack"] = r
            out.cpu_seconds[f"GAN {scheme}"] = round(time.process_time() - t0, 1)
        if "ITN-Attack" in attacks:
            t0 = time.process_time()  # exact pairs made with other keys of the scheme
            atk_enc = EncryptBatch([mk(seed + 2000 + i) for i in range(attack_keys)])(attacker_plain, g)
            r = itn_attack(train_plain=attacker_plain, train_protected=atk_enc, test_protected=victim_enc, seed=seed,
                           **{**dict(itn_kwargs or {}), **track})
            if eval_every:
                r, hist = r
                curve(f"ITN {scheme}", hist)
            rec["ITN-Attack"] = r
            out.cpu_seconds[f"ITN {scheme}"] = round(time.process_time() - t0, 1)
        out.recon[scheme] = rec
        out.ssim[scheme] = {k: ssim(v, victim).numpy() for k, v in rec.items()}
    return out
