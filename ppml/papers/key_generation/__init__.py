"""Paper 05 (notebook ``05_key_generation``): Madono, Tanaka, Onishi & Ogawa, "Scrambling
Parameter Generation to Improve Perceptual Information Hiding".

* :mod:`~ppml.papers.key_generation.keysearch`: LPIPS-guided key selection (Algorithm 1) and
  the intensity-inversion keys of the metric study;
* :mod:`~ppml.papers.key_generation.reported`: the numbers the paper prints.
"""

from ppml.papers.key_generation import keysearch, reported

__all__ = ["keysearch", "reported"]
