"""The attack of Carlini et al. (2021) on InstaHide, reimplemented in a simplified form.

Carlini, Deng, Garg, Jha, Mahloujifar, Mahmoody, Song, Thakurta & Tramèr, "Is Private
Learning Possible with Instance Encoding?" (IEEE S&P 2021) recover InstaHide's private
images from the encodings alone, in steps that this module follows:

1. **Remove the sign mask**: take absolute values. With values centred on 0, ``|σ ⊙ Σλx̃|
   = |Σλx̃|`` — the random signs are gone.
2. **Similarity** of encodings that share an original: the paper trains a network on
   simulated encodings; here (documented simplification) the Pearson correlation of the
   absolute values after subtracting their per-pixel mean over all encodings.
3. **Grouping** of the encodings that share an original (the paper: clique finding on the
   similarity graph): spectral clustering of a symmetrised k-nearest-neighbour graph into as
   many groups as there are originals (the attacker is assumed to know that number, as in
   the InstaHide challenge).
4. **Reconstruction** by solving the mixing system on absolute values: ``|e_i| ≈ Σ_g W_ig
   |x̃_g|`` with non-negative, row-sparse weights (at most ``k`` per encoding), solved by
   non-negative matrix factorisation started from the group means (``iters=0``: group
   means only, i.e. averaging).
5. **Colour fix**: absolute values lose the sign of every centred value (dark and bright
   look alike); the paper corrects colours with a learned model. Here a small CNN is trained
   on *public* images (never the private ones) to map ``|x̃|`` back to ``x``.

The same steps apply to any encoder's outputs: ``value_range`` says how the encodings are
sent ((−1, 1) for InstaHide, (0, 1) for ScrambleMix views) and ``centre=True`` makes the
attacker centre that range before step 1 — for ScrambleMix this is an *adaptive* variant:
PE's negation ``v → 1 − v`` becomes a sign flip after centring, which step 1 removes.

Reconstructions are scored with :func:`match_reconstructions` (Hungarian matching of
originals to reconstructions by MSE) and :mod:`ppml.metrics`.

**The faithful attack** (second half of this module; entry points :func:`attack_report`,
:func:`instahide_challenge`, :func:`carlini_attack`): steps 1–5 above fit ``|e| ≈ Σλ|x̃|``,
which is not the model (``|Σλx̃| ≠ Σλ|x̃|``); they stay as the simple baseline. The faithful
version follows Carlini et al. on the InstaHide Challenge configuration, scaled down
(:func:`make_challenge`): membership by clique growth on a similarity graph and sparse coding
of the encodings' high-pass energy with one atom per private image, re-seeded where cliques
merge or miss images (:func:`find_membership`; hand-made features instead of their trained
network; class sizes from the label mass, :func:`class_counts`), weights read off the mixed
labels (:func:`weights_from_labels`), signed images fitted to ``|Σλx + O|`` per pixel
(:func:`reconstruct_signed`: alternating sign guesses / one shared least-squares solve,
restarts; in the cross-dataset mode the public partners are found in the attacker's public pool
(:func:`public_partners`) and their mix is a known offset plus noise, handled by
expectation-maximisation over the signs), membership once more from the reconstructions
(:func:`recode_members`) and a second fit, then the one sign per pixel position shared by all
images (:func:`align_pixel_signs`) and the global sign (:func:`global_sign`). Scores: per-image
SSIM and the Challenge's max-/mean-SSIM (:func:`challenge_scores`).
"""

from __future__ import annotations

from .baseline import (  # noqa: F401
    abs_features, encoding_similarity, group_encodings, reconstruct_groups, ColourFix,
    train_colour_fix, AttackResult, instahide_attack, match_reconstructions)
from .reconstruction import (  # noqa: F401
    _flat_unit, _centred, highpass_features, mixing_matrix, reconstruct_signed, _sign_graph,
    align_pixel_signs, global_sign)
from .membership import (  # noqa: F401
    grow_cliques, _grow, class_counts, find_membership, recode_members, reassign_members,
    weights_from_labels)
from .carlini import (  # noqa: F401
    Challenge, make_challenge, public_offset, public_partners, CarliniResult, carlini_attack, sign_accuracy,
    challenge_scores)
from .report import (  # noqa: F401
    PRIVATE_SOURCES, PUBLIC_SOURCES, labelled_photo_crops, instahide_challenge,
    scramblemix_challenge, attack_report)

__all__ = ["abs_features", "encoding_similarity", "group_encodings", "reconstruct_groups", "ColourFix",
           "train_colour_fix", "instahide_attack", "match_reconstructions", "AttackResult",
           # the attack on the true forward model (Carlini et al.'s steps, faithful)
           "highpass_features", "mixing_matrix", "reconstruct_signed", "align_pixel_signs", "global_sign",
           "grow_cliques", "class_counts", "find_membership", "recode_members", "reassign_members", "weights_from_labels", "Challenge",
           "make_challenge", "public_offset", "public_partners", "CarliniResult", "carlini_attack", "sign_accuracy",
           "challenge_scores", "labelled_photo_crops", "instahide_challenge", "scramblemix_challenge",
           "attack_report", "PRIVATE_SOURCES", "PUBLIC_SOURCES"]
