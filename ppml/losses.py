"""Training losses shared by the notebooks: the self-teaching (KL-to-mean) loss of
ScrambleMix and the feature-reconstruction loss of the transformation network."""

from __future__ import annotations
