"""Attacks on encrypted images: each takes encrypted images (and what the threat model
allows the attacker) and returns reconstructions, to be scored with :mod:`ppml.metrics`.

Modules: ``fr`` (FR-Attack, Chang & Case 2020), ``itn`` (inverse-transformation network,
a U-Net trained on plain/protected pairs), ``gan`` (SIA-GAN-style GAN-Attack),
``instahide`` (Carlini et al. 2021's attack on InstaHide, also applied to ScrambleMix);
``suite.run_attacks`` runs FR/GAN/ITN on several schemes under one threat model;
``le_stats`` (this project's own ciphertext-only key recovery for LE, not from the papers).
"""

from __future__ import annotations
from .itn import itn_attack  # noqa: E402,F401
from . import instahide  # noqa: E402,F401  (Carlini et al.'s attack on InstaHide, notebook 01)
from .fr import fold, fr_attack  # noqa: E402,F401  (FR-Attack, notebook 03)
from .gan import gan_attack  # noqa: E402,F401  (SIA-GAN-style GAN-Attack, notebook 03)
from .suite import ATTACKS, AttackResults, run_attacks  # noqa: E402,F401  (Figs. 6/8 of notebook 03)
from .le_stats import LEStatsResult, le_statistics_attack, le_stats_curve  # noqa: E402,F401  (this project's LE key recovery)
from . import jigsaw  # noqa: E402,F401  (jigsaw-puzzle solver on block-scrambled / EtC images, notebooks 02 and 03)
