"""FR-Attack — feature-reconstruction attack (Chang & Case 2020, arXiv:2004.13263), ciphertext only.

Paper 03 (Sec. III-G, Figs. 6 and 8) uses it against LE, ELE, PE and EtC images, describing
it only as an attack "that exploits the local properties of an encrypted image"; the
project's summary of its basic form (REFERENCE_FACTS.md) is: a value above 127 is mapped to
``255 − v``, then neighbouring pixels are matched over colour-channel orders and signs. What
is implemented here, exactly:

**Stage 1 — fold** (:func:`fold`): every 8-bit value ``v`` becomes ``min(v, 255 − v)``
(``v > 127 → 255 − v``). Since ``fold(255 − v) = fold(v)``, the result does not depend on
any negative–positive key (PE's per-value bits, EtC's per-block bit): it is the plain
image folded about 127.5, whose edges and textures survive. This is the basic attack.

**Stage 2 — neighbour matching** (``stage="match"``, default): the attacker assumes each
pixel of the cipher image is its plain pixel up to an unknown per-pixel sign pattern (which
channels were replaced by ``255 − v``; ``2^C`` patterns) and an unknown channel order
(``C!``), i.e. 48 candidates per RGB pixel — PE's key space per pixel, which also contains
EtC's per-block sign and channel shuffle. It picks for every pixel the candidate that best
continues its neighbours (L1 distance over channels):

1. a wavefront sweep over anti-diagonals from the top-left pixel: each pixel is matched to
   its already-decided upper and left neighbours (all pixels of one anti-diagonal, of all
   images, at once); exact ties (and the seed pixel) prefer the darker candidate (the fold),
   then larger values in later channels — so, like the fold, the result is a function of
   the plain image alone, whatever the PE key;
2. ``sweeps`` rounds of iterated conditional modes on a checkerboard: each pixel re-picks
   its candidate against all four neighbours;
3. the result is still ambiguous up to one global sign per channel and one global channel
   order (48 global variants, which leave every neighbour distance unchanged). With
   ``reference`` (plain images of the known distribution — the threat model of paper 03,
   Sec. III-C, grants it) the variant whose channel means are closest to the reference's
   is chosen per image; without it, each channel is oriented so that its mean is ≤ 127.5
   and the channel order is the one the sweep found.

Not implemented: Chang & Case's chosen-plaintext attacks and their LE-specific nibble
analysis; any block rotation/flip or block-position search (that is a jigsaw-puzzle
solver, not this attack). So on EtC, whose blocks are moved, rotated and flipped, the
matched image keeps the blocks scrambled and SSIM stays low, as in the paper (Fig. 6: 0.042);
on PE the matching can undo signs and channel orders wherever neighbouring colours agree.
Fully vectorised over images and pixels (a loop over the ``H + W − 1`` anti-diagonals and
the sweeps only); runs on the input's device.

>>> import torch
>>> from ppml.ciphers import cipher_for
>>> from ppml.keys import PEKey
>>> x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
>>> pe = cipher_for(PEKey.generate(image_size=8, seed=0))
>>> torch.equal(fold(pe(x)).sort(dim=1).values, fold(x).sort(dim=1).values)  # no key needed
True
>>> fr_attack(test_protected=pe(x)).shape
torch.Size([2, 3, 8, 8])
"""

from __future__ import annotations

import itertools

import torch

from ppml._checks import ShapeError, check_choice, check_images, check_int, check_tensor
from ppml.utils import progress

__all__ = ["fold", "fr_attack", "candidate_table"]

_STAGES = ("fold", "match")


def fold(y: torch.Tensor) -> torch.Tensor:
    """Stage 1 of FR-Attack: ``v > 127 → 255 − v`` for every value; uint8, same shape.

    Invariant to any negative–positive transform: ``fold(255 − y) == fold(y)``.

    >>> import torch
    >>> fold(torch.tensor([[[[0, 127, 128, 255]]]], dtype=torch.uint8)).flatten().tolist()
    [0, 127, 127, 0]
    """
    check_images(y, "y", "fold", dtype="uint8", channels=(1, 2, 3, 4))
    return torch.minimum(y, 255 - y)


def candidate_table(channels: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The per-pixel hypotheses of stage 2: ``(perms, signs)``, shapes ``(K, C)`` each,
    ``K = C!·2^C``. Candidate ``k`` of a cipher pixel ``p`` has channel ``j`` equal to
    ``p[perms[k, j]]``, replaced by ``255 −`` it where ``signs[k, j] = 1``. Row 0 is the identity.

    >>> perms, signs = candidate_table(3)
    >>> perms.shape, signs.shape, perms[0].tolist(), signs[0].tolist()
    (torch.Size([48, 3]), torch.Size([48, 3]), [0, 1, 2], [0, 0, 0])
    """
    perms = list(itertools.permutations(range(channels)))
    signs = list(itertools.product((0, 1), repeat=channels))
    p = torch.tensor([q for q in perms for _ in signs], dtype=torch.long, device=device)
    s = torch.tensor([t for _ in perms for t in signs], dtype=torch.long, device=device)
    return p, s


def _values(y: torch.Tensor) -> torch.Tensor:
    """Both sign hypotheses of every value, float64 ``(N, C, 2, H, W)``: ``[v, 255 − v]``.

    float64 so that the tiny tie-breaking terms below stay exact beside integer L1 costs."""
    v = y.to(torch.float64)
    return torch.stack((v, 255 - v), dim=2)


class _Assign:
    """Best candidate per pixel from per-(source channel, sign, target channel) costs.

    A candidate's cost is a sum over target channels j of a term that depends only on
    (source channel ``perm[j]``, its sign, j) — L1 distances and the darkness prior both
    split that way — and the candidate set is every channel order times every sign pattern.
    So the best sign of each (source, target) pair can be chosen first (``C·C`` minima over
    2) and then the best channel order (``C!`` sums of C terms): exactly the argmin over all
    ``C!·2^C`` candidates, at a fraction of the work.
    """

    def __init__(self, channels: int, device: torch.device) -> None:
        self.perms = torch.tensor(list(itertools.permutations(range(channels))), dtype=torch.long, device=device)
        self.j = torch.arange(channels, device=device)

    def __call__(self, values: torch.Tensor, terms: torch.Tensor) -> torch.Tensor:
        """``values`` (N, Cq, 2, *S), ``terms`` (N, Cq, 2, Cj, *S) → chosen pixels (N, Cj, *S)."""
        best, sign = terms.min(dim=2)  # (N, Cq, Cj, *S)
        per_perm = best[:, self.perms, self.j].sum(dim=2)  # (N, P, *S): sum_j best[perm[j], j]
        k = per_perm.argmin(dim=1)  # (N, *S)
        q = self.perms[k].movedim(-1, 1)  # (N, Cj, *S): source channel of each target channel
        s = sign.gather(1, q.unsqueeze(1)).squeeze(1)  # (N, Cj, *S): sign[n, q[n, j], j]
        v = values.gather(1, q.unsqueeze(2).expand(-1, -1, 2, *q.shape[2:]))  # (N, Cj, 2, *S)
        return v.gather(2, s.unsqueeze(2)).squeeze(2)


def _terms(values: torch.Tensor, neighbours: list[tuple[torch.Tensor, torch.Tensor]], prior: float) -> torch.Tensor:
    """Cost terms (N, Cq, 2, Cj, *S): sum over neighbours of ``|value(q, s) − nb[j]|`` (where
    the neighbour exists) plus ``prior · value``."""
    v = values.unsqueeze(3)  # (N, Cq, 2, 1, *S)
    # tie-breakers, far below one unit of L1 cost: prefer darker values (the fold), then put
    # larger values in later channels — so exact ties never fall back on the cipher's channel
    # order and the result depends on the plain image alone
    j = torch.arange(values.shape[1], device=values.device, dtype=values.dtype)
    t = prior * v - _ORDER * v * j.view(1, 1, 1, -1, *([1] * (values.dim() - 3)))
    for nb, valid in neighbours:  # nb (N, Cj, *S); valid broadcastable to (N, *S)
        t = t + (v - nb[:, None, None]).abs() * valid.unsqueeze(1).unsqueeze(1).unsqueeze(1)
    return t.expand(*values.shape[:3], values.shape[1], *values.shape[3:]) if t.shape[3] == 1 else t


_PRIOR = 1e-4  # tiny preference for darker values (the fold) where neighbours cannot tell
_ORDER = 1e-8  # channel-order tie-break: at most 3·255·1e-8 < the smallest _PRIOR difference (1e-4)


def _wavefront(values: torch.Tensor, assign: _Assign) -> torch.Tensor:
    """Sweep anti-diagonals from the top-left pixel, matching each pixel to its decided upper
    and left neighbours. ``values`` (N, C, 2, H, W) → estimate (N, C, H, W)."""
    n, c, _, h, w = values.shape
    vpm = values.permute(3, 4, 0, 1, 2).reshape(h * w, n, c, 2)  # pixel-major: a diagonal is a row gather
    est = torch.zeros(h * w, n, c, dtype=values.dtype, device=values.device)
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ii, jj = ii.reshape(-1), jj.reshape(-1)
    for d in range(h + w - 1):  # pixels of one anti-diagonal depend only on the previous one
        sel = ((ii + jj) == d).nonzero().squeeze(1)
        r, s = ii[sel], jj[sel]
        idx = sel.to(values.device)
        m = idx.numel()
        vals = vpm[idx].reshape(m * n, c, 2)
        up = est[(idx - w).clamp(min=0)].reshape(m * n, c)
        left = est[(idx - 1).clamp(min=0)].reshape(m * n, c)
        up_ok = (r > 0).to(values.device).repeat_interleave(n).to(values.dtype)
        left_ok = (s > 0).to(values.device).repeat_interleave(n).to(values.dtype)
        terms = _terms(vals, [(up, up_ok), (left, left_ok)], _PRIOR)
        est[idx] = assign(vals, terms).reshape(m, n, c)
    return est.reshape(h, w, n, c).permute(2, 3, 0, 1).contiguous()


def _match(y: torch.Tensor, sweeps: int) -> torch.Tensor:
    n, c, h, w = y.shape
    values = _values(y)  # (N, C, 2, H, W)
    assign = _Assign(c, y.device)
    est = _wavefront(values, assign)
    ii, jj = torch.meshgrid(torch.arange(h, device=y.device), torch.arange(w, device=y.device), indexing="ij")
    parity = ((ii + jj) % 2).view(1, 1, h, w)
    nbs_valid = []
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        valid = torch.ones(h, w, dtype=values.dtype, device=y.device)
        if dy == 1:
            valid[0] = 0
        elif dy == -1:
            valid[-1] = 0
        if dx == 1:
            valid[:, 0] = 0
        elif dx == -1:
            valid[:, -1] = 0
        nbs_valid.append(((dy, dx), valid.expand(n, h, w)))
    for _ in range(sweeps):  # iterated conditional modes, checkerboard: one colour at a time
        for colour in (0, 1):
            nbs = [(torch.roll(est, shifts=sh, dims=(2, 3)), valid) for sh, valid in nbs_valid]  # est[y-dy, x-dx]
            est = torch.where(parity == colour, assign(values, _terms(values, nbs, _PRIOR)), est)
    return est


def _orient(est: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
    """Resolve the global per-channel sign and channel order (48 variants for RGB)."""
    n, c = est.shape[:2]
    perms, signs = candidate_table(c, est.device)
    means = est.mean(dim=(2, 3))  # (N, C)
    vm = means[:, perms]  # (N, K, C)
    vm = vm + signs[None].to(vm.dtype) * (255 - 2 * vm)
    if reference is None:
        # each channel oriented dark (mean <= 127.5), channel order kept: identity permutation only
        score = (vm - 127.5).clamp(min=0).sum(dim=2)
        score = score + (perms != torch.arange(c, device=est.device)).any(dim=1)[None].to(score.dtype) * 1e6
    else:
        score = (vm - reference[None, None]).pow(2).sum(dim=2)
    k = score.argmin(dim=1)  # (N,)
    p, s = perms[k], signs[k]  # (N, C)
    out = est.gather(1, p[:, :, None, None].expand_as(est))
    return torch.where(s[:, :, None, None].bool(), 255 - out, out)


def fr_attack(*, test_protected: torch.Tensor, train_plain: torch.Tensor | None = None, stage: str = "match",
              sweeps: int = 2, chunk: int = 256) -> torch.Tensor:
    """FR-Attack on encrypted uint8 images ``(N, C, H, W)``; returns uint8 reconstructions.

    Args:
        test_protected: encrypted images (PE, EtC, LE, ELE, … — the attack does not need the scheme).
        train_plain: optional plain images of the attacker's known distribution, uint8
            ``(M, C, H', W')`` (any size), or their per-channel means ``(C,)``; used to pick
            the global orientation of each reconstruction. None: the darker orientation.
        stage: ``"fold"`` (basic attack: ``v > 127 → 255 − v``; values 0–127) or ``"match"``
            (fold's key-free information plus neighbour matching over signs and channel
            orders; see the module docstring).
        sweeps: rounds of checkerboard re-matching after the wavefront sweep.
        chunk: images processed at once (bounds memory: 48 candidates per pixel).

    >>> import torch
    >>> x = torch.full((1, 3, 4, 4), 40, dtype=torch.uint8)
    >>> fr_attack(test_protected=255 - x).unique().tolist()  # a negated flat image is undone
    [40]
    """
    who = "fr_attack"
    y = check_images(test_protected, "test_protected", who, dtype="uint8", channels=(1, 2, 3, 4))
    check_choice(stage, "stage", _STAGES, who)
    check_int(sweeps, "sweeps", who, minimum=0)
    check_int(chunk, "chunk", who, minimum=1)
    if stage == "fold":
        return fold(y)
    reference = train_plain
    ref = None
    if reference is not None:
        check_tensor(reference, "train_plain", who, shape=f"(M, {y.shape[1]}, H, W) or ({y.shape[1]},)")
        if reference.dim() == 4 and reference.shape[1] == y.shape[1]:
            check_images(reference, "train_plain", who, dtype="uint8")
            ref = reference.to(torch.float32).mean(dim=(0, 2, 3))
        elif reference.dim() == 1 and reference.numel() == y.shape[1]:
            ref = reference.to(torch.float32)
        else:
            raise ShapeError(f"fr_attack: train_plain must be uint8 images (M, {y.shape[1]}, H, W) or per-channel "
                             f"means ({y.shape[1]},), got shape {tuple(reference.shape)}")
        ref = ref.to(y.device)
    out = torch.empty_like(y)
    for i in progress(range(0, y.shape[0], chunk), desc="FR-Attack", leave=False):
        est = _orient(_match(y[i:i + chunk], sweeps), ref)
        out[i:i + chunk] = est.round().clamp(0, 255).to(torch.uint8)
    return out
