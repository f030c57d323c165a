"""Jigsaw-puzzle solver attack on block-scrambled and EtC images (ciphertext only).

Papers 02 and 03 argue that block scrambling and EtC resist jigsaw-puzzle solvers when the
blocks are small relative to the image (Chuman, Kurihara & Kiya, ICME 2017, whose "extended
jigsaw puzzle solver" also handles rotated, flipped, negative–positive transformed and
colour-shuffled pieces). This module measures that claim with a solver of that kind:

**Compatibility** — Gallagher's Mahalanobis gradient compatibility (MGC, CVPR 2012): for a
seam between a left piece ``i`` and a right piece ``j``, the gradients across the seam are
scored by the Mahalanobis distance to the distribution of gradients just inside ``i``'s right
edge (mean and covariance over the edge's ``B`` rows, covariance + ``reg·I`` because ``B`` is
small), plus the same from ``j``'s side. The sum over the seam expands into a dot product of
per-edge feature vectors, so the dissimilarity of *all* pairs is one matrix product
(:func:`mgc_dissimilarity`): no loop over pixels or pairs.

**Unknown piece transforms (EtC)** — every piece may be rotated/flipped (8 dihedral codes,
:mod:`ppml.ciphers.etc` convention), negative–positive transformed (``v ↦ 255 − v``) and
colour-shuffled (6 channel orders). As in the extended solver, these are found by
compatibility, every state being a candidate: with ``features="full"`` a seam is scored in
RGB against all 8 × 12 transforms of the right piece (geometry, negative–positive state and
channel order are placed together); with ``features="sorted"`` (6× cheaper; the default
beyond 256 pieces) on each pixel's channel values sorted, which no channel order changes and
which a negative–positive transform negates and reverses (8 × 2 transforms), the channel
order (and a last check of the negative–positive state) then being resolved per piece in full
colour against its placed neighbours: a confidence-ordered propagation from the most
colourful piece (a Prim-like spanning tree over the 12 colour labels), then iterated
conditional modes.

**Placement** — a Kruskal-like merge of piece groups (as in Gallagher's tree-based
reassembly): candidate seams — for every piece edge, the ``k`` most compatible other pieces,
each in its best transform — are taken in order of confidence (dissimilarity over the
smaller second-best dissimilarity of the two edges involved, Gallagher's normalisation); a
merge joins two groups, each in its own frame (cells and piece transforms), if no two
pieces overlap and the merged bounding box still fits the known grid ``H/B × W/B`` (in either
orientation when pieces can rotate). When no merge is left, the same seams are replayed
between the largest group and the others, placing the part of the other group that lands on
free cells inside the grid (trimming the rest into single pieces); last, the largest group
is grown greedily (the empty cell with most placed neighbours gets the piece and transform of
least total dissimilarity) until the grid is full. Loops run over merge and placement steps
only; all dissimilarities are batched matrix products.

**Scores** (:func:`score`) — *direct comparison* (fraction of pieces at the right cell with
the right orientation), *neighbour comparison* (fraction of the original image's adjacent
pairs that are adjacent in the solution with the same relative position and orientation),
*largest correct component* (the largest set of pieces connected by correct adjacencies,
over all pieces), *colour* (EtC: pieces with the right negative–positive state and channel
order), and SSIM (:func:`ppml.metrics.ssim`) of the assembled image.

**Global symmetry** — with unknown orientations, a rotation or flip of the whole solution (and,
for EtC, a global negative–positive transform or channel order) is as compatible as the
solution itself: no ciphertext-only solver can tell them apart. Following the jigsaw
literature, the solution is scored up to that symmetry: direct comparison is the maximum
over the whole-image transforms that keep the grid's shape (8 for a square grid, 4
otherwise; only the identity can match a block-scrambled solution, whose pieces are never
rotated), colour the maximum over the 12 global colour transforms, and SSIM is computed on
the solution brought back by the transforms that maximise those two. Neighbour comparison
and the largest component are invariant to it by construction.

>>> import torch
>>> from ppml.ciphers import EtC
>>> from ppml.keys import EtCKey
>>> x = smooth_test_image(32, seed=0)[None]
>>> key = EtCKey.generate(image_size=32, block_size=8, seed=1)
>>> y = EtC(key=key)(x)
>>> sol = solve(y, 8, scheme="EtC")
>>> s = score(sol, true_arrangement(key), original=x, encrypted=y, block_size=8)
>>> s["direct"], s["neighbour"], s["colour"]
(1.0, 1.0, 1.0)
"""


from __future__ import annotations

from .pieces import (  # noqa: F401
    SCHEMES, _apply_d, _dihedral_tables, _COMP8, _INV8, _LIN8, _TO_RIGHT, _colour_tables,
    Arrangement, _grid, to_pieces, _from_pieces, _negate, assemble, true_arrangement)
from .dissimilarity import (  # noqa: F401
    _edge_features, mgc_dissimilarity, _to_work, _invariant)
from .solver import (  # noqa: F401
    _norm_scheme, _Puzzle, _solve_one, _fill, _resolve_colour, solve)
from .scoring import (  # noqa: F401
    _check_pair, _truth_for, _global_direct, direct_comparison, _correct_pairs,
    neighbour_comparison, largest_component, _colour_score, _apply_colour, aligned_reconstruction,
    score, _float01, smooth_test_image)
from .attack import (  # noqa: F401
    SCORE_KEYS, jigsaw_attack, JigsawResults, _summ, jigsaw_sweep)

__all__ = ["Arrangement", "SCHEMES", "to_pieces", "assemble", "true_arrangement", "mgc_dissimilarity",
           "solve", "score", "direct_comparison", "neighbour_comparison", "largest_component",
           "aligned_reconstruction", "jigsaw_attack", "JigsawResults", "jigsaw_sweep",
           "smooth_test_image"]
