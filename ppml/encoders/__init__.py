"""Randomised encoders without an inverse: ScrambleMix and its baselines InstaHide and DataMix
(notebook 01).

Unlike the ciphers of :mod:`ppml.ciphers`, an encoder draws fresh randomness at every call
(mixing weights, partners, signs) that is never sent, so nothing decrypts an encoding. Each
sits last in a loader's transforms and comes with the loss hook that trains on what it
emits: :func:`ppml.losses.scramblemix_loss_hook` (self-teaching loss over ScrambleMix's
views), :func:`~ppml.encoders.instahide.instahide_loss_hook`,
:func:`~ppml.encoders.datamix.datamix_loss_hook`. All randomness comes from an explicit
``torch.Generator``.

* :class:`ScrambleMix`: mix two scramblings of an image under a key pair;
  :func:`ppml.train.predict_views` / :func:`ppml.train.evaluate_views` average the
  posteriors of T views (inference lives in :mod:`ppml.train`, the higher layer);
* :class:`InstaHide`: mix k images, then flip the sign of every value;
* :class:`DataMix`: mix two images in pixel space, then PE-encrypt (documented variant).

>>> import torch
>>> from ppml.keys import PEKey
>>> dm = DataMix(PEKey.generate(image_size=4, seed=0), lam_min=1.0)
>>> hasattr(dm, "inverse"), hasattr(InstaHide(k=2), "inverse")
(False, False)
"""

from __future__ import annotations

from ppml.encoders.datamix import DataMix, datamix_loss_hook
from ppml.encoders.instahide import InstaHide, instahide_loss_hook
from ppml.encoders.scramblemix import ScrambleMix

__all__ = ["ScrambleMix", "InstaHide", "DataMix", "instahide_loss_hook", "datamix_loss_hook"]
