"""Which private images each encoding mixes: clique growing on the similarity graph, membership
search and reassignment, and mixing weights from the mixed labels.
"""

from __future__ import annotations

import torch

from .reconstruction import highpass_features


# ----------------------------------------------------------------------------- membership
def grow_cliques(sim: torch.Tensor, size: int, *, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Carlini et al.'s step 2, vectorised over seeds: from every encoding (row of ``sim``,
    ``(M, M)``) grow a set by repeatedly adding the encoding with the largest summed similarity
    to the set, ``size`` members in all. ``allowed`` ``(S, M)`` (optional) restricts what seed
    row ``s`` may add (e.g. encodings whose label shares the seed's class); then ``S`` seeds are
    given by the first column of the returned index matrix being ``seeds``. Returns ``(S, size)``
    member indices in order of addition.

    >>> s = torch.eye(4) + torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0.]])
    >>> grow_cliques(s, 2).tolist()
    [[0, 1], [1, 0], [2, 3], [3, 2]]
    """
    m = sim.shape[0]
    if allowed is None:
        seeds = torch.arange(m)
        allowed = torch.ones(m, m, dtype=torch.bool)
    else:
        seeds = allowed.float().argmax(1) if allowed.shape[0] != m else torch.arange(m)
    return _grow(sim, seeds, allowed, size)


def _grow(sim: torch.Tensor, seeds: torch.Tensor, allowed: torch.Tensor, size: int) -> torch.Tensor:
    s_n = len(seeds)
    size = int(min(size, sim.shape[0]))
    out = torch.empty(s_n, size, dtype=torch.int64)
    out[:, 0] = seeds
    taken = torch.zeros(s_n, sim.shape[0], dtype=torch.bool)
    rows = torch.arange(s_n)
    taken[rows, seeds] = True
    score = sim[seeds].clone()
    for j in range(1, size):  # growth steps (all seeds at once)
        masked = torch.where(taken | ~allowed, torch.full_like(score, -torch.inf), score)
        nxt = masked.argmax(1)
        out[:, j] = nxt
        taken[rows, nxt] = True
        score += sim[nxt]
    return out


def find_membership(abs_enc: torch.Tensor, targets: torch.Tensor, n_private: int, k_private: int, *,
                    refine: int = 3, radius: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Which private images each encoding mixes (the attack's steps 1–4), from ``|e|`` and the
    mixed labels ``targets`` ``(M, K)`` only.

    1. Similarity: correlation of :func:`highpass_features` (the paper trains a network to
       say whether two encodings share an image; this is its untrained stand-in).
    2. Cliques: for every encoding and every class in its label, grow a set of the
       ``size = M·k_private/n_private`` most similar encodings whose label has that class
       (:func:`grow_cliques`); keep ``n_private`` dense ones, densest core (first quarter)
       first, skipping those whose core's mean feature correlates with a kept one's above
       0.5 (relaxed step by step if too few remain) — each is one private image, its class
       the clique's class.
    3. Matching: prototype = mean feature of a clique; each encoding is assigned to its
       ``k_private`` most correlated prototypes among those whose class its label holds;
       prototypes are re-estimated from the assigned encodings ``refine`` times (the
       paper's second graph and bipartite matching, steps 3–4).

    Returns ``(members (M, k_private), classes (n_private,))``.
    """
    f = highpass_features(abs_enc, radius=radius)
    M = f.shape[0]
    t = torch.as_tensor(targets, dtype=torch.float64)
    if t.dim() != 2 or t.shape[0] != M:
        raise ValueError(f"targets must be (M={M}, K) mixed labels, got {tuple(t.shape)}")
    if not 1 <= int(n_private) <= M or not 1 <= int(k_private) <= n_private:
        raise ValueError(f"need 1 <= k_private <= n_private <= M, got k_private={k_private}, n_private={n_private}, M={M}")
    sim = f @ f.T
    sim.fill_diagonal_(0)
    has = t > 1e-9  # (M, K) classes present in each label
    size = max(2, int(round(M * k_private / n_private)))
    seed_enc, seed_cls = has.nonzero(as_tuple=True)
    allowed = has[:, seed_cls].T  # (S, M): may add encodings whose label holds the seed's class
    cliques = _grow(sim, seed_enc, allowed, size)
    core = cliques[:, : max(2, size // 4)]  # the first members added are the most reliable
    dens = sim[core.unsqueeze(2), core.unsqueeze(1)].mean((1, 2))
    cp = f[core].mean(1)
    cp = cp - cp.mean(1, keepdim=True)
    cp = cp / cp.norm(dim=1, keepdim=True).clamp_min(1e-12)
    chosen: list[int] = []
    for thr in (0.5, 0.6, 0.7, 0.8, 0.9, 2.0):  # distinct images first, then relax
        alive = torch.ones(len(cliques), dtype=torch.bool)
        for c in chosen:
            alive &= (cp @ cp[c]) < thr
        while len(chosen) < int(n_private) and bool(alive.any()):
            i = int(torch.where(alive, dens, torch.full_like(dens, -torch.inf)).argmax())
            chosen.append(i)
            alive &= (cp @ cp[i]) < thr
        if len(chosen) == int(n_private):
            break
    chosen = torch.tensor(chosen)
    classes = seed_cls[chosen]
    ok = has[:, classes]  # (M, N) label-compatible assignments
    proto = f[core[chosen]].mean(1)  # (N, D)
    members = None
    for _ in range(int(refine) + 1):
        score = f @ proto.T
        score = torch.where(ok, score, torch.full_like(score, -torch.inf))
        members = score.topk(int(k_private), dim=1).indices
        assign = torch.zeros(M, int(n_private), dtype=torch.float64)
        assign[torch.arange(M).unsqueeze(1), members] = 1.0
        cnt = assign.sum(0, keepdim=True).T.clamp_min(1)
        proto = (assign.T @ f) / cnt
    return members, classes


def reassign_members(abs_enc: torch.Tensor, targets: torch.Tensor, X: torch.Tensor, members: torch.Tensor,
                     classes: torch.Tensor, *, offset: torch.Tensor | None = None, sweeps: int = 2,
                     chunk: int = 64) -> torch.Tensor:
    """Refine the membership under the true forward model: slot by slot, replace each
    encoding's member by the label-compatible private image (reconstructions ``X``, signed)
    whose mixture ``|Σ λ x + O|`` (weights from the labels) fits ``|e|`` best. ``(M, k)``."""
    A = abs_enc.double().flatten(1)
    M, k = members.shape
    Xf = X.double().flatten(1)
    n = Xf.shape[0]
    O = torch.zeros_like(A) if offset is None else offset.double().reshape(A.shape)
    t = torch.as_tensor(targets, dtype=torch.float64)
    cls = torch.as_tensor(classes)
    members = members.clone()
    ok_cls = t[:, cls] > 1e-9  # (M, N) images whose class the label holds
    for _ in range(int(sweeps)):
        for j in range(k):  # one slot at a time, all encodings (in chunks) and candidates at once
            for lo in range(0, M, int(chunk)):
                sl = slice(lo, min(M, lo + int(chunk)))
                mem = members[sl]
                c = cls[mem]  # (m, k)
                others = [l for l in range(k) if l != j]
                pred = O[sl].unsqueeze(1).expand(-1, n, -1).clone()  # (m, N, D)
                for l in others:
                    cnt = sum((c[:, l] == c[:, q]).double() for q in others)  # (m,) same class among others
                    cnt = cnt.unsqueeze(1) + (cls.unsqueeze(0) == c[:, l:l + 1]).double()  # (m, N) + candidate
                    wl = t[sl].gather(1, c[:, l:l + 1]) / cnt  # (m, N)
                    pred += wl.unsqueeze(2) * Xf[mem[:, l]].unsqueeze(1)
                same = sum((cls.unsqueeze(0) == c[:, q:q + 1]).double() for q in others)  # (m, N)
                wj = t[sl][:, cls] / (1 + same)  # (m, N)
                pred += wj.unsqueeze(2) * Xf.unsqueeze(0)
                err = (pred.abs() - A[sl].unsqueeze(1)).pow(2).mean(2)  # (m, N)
                bad = ~ok_cls[sl] | (mem[:, others].unsqueeze(2) == torch.arange(n).view(1, 1, n)).any(1)
                err = torch.where(bad, torch.full_like(err, torch.inf), err)
                members[sl, j] = err.argmin(1)
    return members


def weights_from_labels(targets: torch.Tensor, members: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Each member's mixing weight read off the mixed label: ``y_t[c] / (members of class c
    in t)`` — exact when the classes differ, an even split when they coincide (the paper's
    step 4 does the same). ``(M, k)`` float64.

    >>> weights_from_labels(torch.tensor([[0.5, 0.25, 0.0]]), torch.tensor([[0, 1, 2]]), torch.tensor([0, 0, 1])).tolist()
    [[0.25, 0.25, 0.25]]
    """
    t = torch.as_tensor(targets, dtype=torch.float64)
    cls = torch.as_tensor(classes)[members]  # (M, k) class of each member
    same = (cls.unsqueeze(2) == cls.unsqueeze(1)).sum(2).double()
    return t.gather(1, cls) / same
