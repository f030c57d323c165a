"""FR-, GAN- and ITN-Attack on several encryption schemes under one threat model (paper 002,
Sec. III-C and Figs. 6/8): a ciphertext-only attacker who knows the data distribution.

For every scheme, one victim key encrypts the victim's images; the attacks then get:

* FR-Attack (:func:`ppml.attacks.fr.fr_attack`): the victim's encrypted images only (plus the
  attacker's plain images as a channel-mean reference);
* GAN-Attack (:func:`ppml.attacks.gan.gan_attack`): the attacker's own plain images and the
  victim's encrypted *training* images, unpaired;
* ITN-Attack (:func:`ppml.attacks.itn.itn_attack`): exact plain/encrypted pairs of the
  attacker's images made with ``attack_keys`` *other* keys of the same scheme.

Every reconstruction is scored against the victim's plain images with SSIM; ``floor`` is the
SSIM of the attacker's mean plain image, i.e. what no ciphertext at all gives.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ppml.ciphers import cipher_for
from ppml.data import EncryptBatch
from ppml.keys import Key
from ppml.metrics import ssim

from .fr import fr_attack
from .gan import gan_attack
from .itn import itn_attack

__all__ = ["AttackResults", "run_attacks", "ATTACKS"]

ATTACKS = ("FR-Attack", "GAN-Attack", "ITN-Attack")


@dataclass
class AttackResults:
    """``recon[scheme][row]`` (uint8 images; rows "Encrypted" and each attack), ``ssim[scheme][row]``
    (per victim image, numpy), ``cpu_seconds[f"{attack} {scheme}"]`` and the no-attack ``floor``."""

    recon: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    ssim: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    floor: float = float("nan")

    def mean_ssim(self) -> dict[str, dict[str, float]]:
        """Mean SSIM per scheme and row."""
        return {sc: {a: float(v.mean()) for a, v in d.items()} for sc, d in self.ssim.items()}


def run_attacks(victim: torch.Tensor, victim_train: torch.Tensor, attacker_plain: torch.Tensor,
                make_key: Mapping[str, Callable[[int], Key]], *, attacks: tuple[str, ...] = ATTACKS,
                gan_block: Mapping[str, int] | None = None, gan_input: Mapping[str, str] | None = None,
                gan_epochs: int = 4, attack_keys: int = 4, itn_kwargs: Mapping[str, Any] | None = None,
                seed: int = 0) -> AttackResults:
    """Attack every scheme of ``make_key`` (name → ``seed -> Key``) and score with SSIM.

    The victim's key is ``make_key[s](seed + 1000)``; the ITN attacker's keys are
    ``make_key[s](seed + 2000 + i)`` for ``i < attack_keys`` (one drawn per image). ``gan_block``
    / ``gan_input``: the GAN generator's input block size and representation per scheme
    (default: block 4, ``"bytes"``). ``itn_kwargs`` go to :func:`itn_attack` (epochs, width, …).
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
    for scheme, mk in make_key.items():
        victim_key = cipher_for(mk(seed + 1000))  # the victim's secret key
        victim_enc = victim_key(victim)
        rec = {"Encrypted": victim_enc}
        if "FR-Attack" in attacks:
            rec["FR-Attack"] = fr_attack(victim_enc, reference=attacker_plain)
        if "GAN-Attack" in attacks:
            t0 = time.process_time()
            rec["GAN-Attack"] = gan_attack(attacker_plain, victim_key(victim_train), victim_enc,
                                           block_size=(gan_block or {}).get(scheme, 4),
                                           input=(gan_input or {}).get(scheme, "bytes"), epochs=gan_epochs, seed=seed)
            out.cpu_seconds[f"GAN {scheme}"] = round(time.process_time() - t0, 1)
        if "ITN-Attack" in attacks:
            t0 = time.process_time()  # exact pairs made with other keys of the scheme
            atk_enc = EncryptBatch([mk(seed + 2000 + i) for i in range(attack_keys)])(attacker_plain, g)
            rec["ITN-Attack"] = itn_attack(atk_enc, attacker_plain, victim_enc, seed=seed, **dict(itn_kwargs or {}))
            out.cpu_seconds[f"ITN {scheme}"] = round(time.process_time() - t0, 1)
        out.recon[scheme] = rec
        out.ssim[scheme] = {k: ssim(v, victim).numpy() for k, v in rec.items()}
    return out
