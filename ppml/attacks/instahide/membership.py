"""Which private images each encoding mixes: clique growing on the similarity graph, membership
search and reassignment, and mixing weights from the mixed labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .reconstruction import _centred, highpass_features


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


def class_counts(targets: torch.Tensor, n_private: int) -> torch.Tensor:
    """How many private images each class holds, read off the mixed labels: every private image
    carries about the same total weight over the encodings (it lies in as many of them, with
    weights from the same rule), so class ``c`` holds ``≈ n_private · Σ_t y_tc / Σ_t Σ_c y_tc``
    images (rounded by largest remainders to sum to ``n_private``). ``(K,)`` int64.

    >>> class_counts(torch.tensor([[0.5, 0.5, 0.0], [0.7, 0.3, 0.0]]), 4).tolist()
    [2, 2, 0]
    """
    t = torch.as_tensor(targets, dtype=torch.float64)
    mass = t.clamp_min(0).sum(0)
    if float(mass.sum()) <= 0:
        raise ValueError("class_counts: the mixed labels carry no weight")
    raw = mass / mass.sum() * int(n_private)
    c = raw.floor().long()
    rem = int(n_private) - int(c.sum())
    if rem > 0:
        c[(raw - c).argsort(descending=True)[:rem]] += 1
    return c


def _energy_features(abs_enc: torch.Tensor, radius: int) -> torch.Tensor:
    """``|e|²`` minus its local mean, ``(M, D)`` float64, not normalised: nearly additive over
    the members, ``≈ Σ_j λ_j² hp(x_j²)`` plus cross terms (the sparse-coding model)."""
    q = abs_enc.double() ** 2
    k = 2 * int(radius) + 1
    q = q - F.avg_pool2d(F.pad(q, (int(radius),) * 4, mode="replicate"), k, 1)
    return q.flatten(1)


def _private_energy(abs_enc: torch.Tensor, radius: int, public: torch.Tensor | None, k_public: int) -> torch.Tensor:
    """:func:`_energy_features`, less (cross-dataset) the public partners': they come from a
    pool the attacker holds, so their energy atoms are known exactly; each encoding is coded
    with ``k_public`` of them (greedy, non-negative) and that part removed."""
    f = _energy_features(abs_enc, radius)
    if public is not None and int(k_public) > 0 and len(public):
        pa = _energy_features(_centred(public).abs(), radius)
        _, Zp, _ = _code(f, f.mean(0), pa, torch.ones(len(f), len(pa), dtype=torch.bool), int(k_public))
        f = f - Zp @ pa
    return f


def recode_members(abs_enc: torch.Tensor, targets: torch.Tensor, X: torch.Tensor, classes: torch.Tensor,
                   k_private: int, *, iters: int = 0, radius: int = 1, public: torch.Tensor | None = None,
                   k_public: int = 0) -> torch.Tensor:
    """Membership again, with the atoms of :func:`find_membership`'s sparse coding taken from
    reconstructions ``X`` ``(N, C, H, W)`` (centred, signed: ``|X|²`` does not depend on the
    signs) instead of clique means: ``hp(|X_j|²)``, then ``iters`` atom/code alternations. ``(M, k_private)``, strongest first."""
    t = torch.as_tensor(targets, dtype=torch.float64)
    k = int(k_private)
    if X.dim() != 4 or X.shape[1:] != abs_enc.shape[1:]:
        raise ValueError(f"recode_members: X must be (N, {tuple(abs_enc.shape[1:])}), got {tuple(X.shape)}")
    f = _private_energy(abs_enc, radius, public, k_public)
    ok = (t > 1e-9)[:, torch.as_tensor(classes)]
    if bool((ok.sum(1) < k).any()):
        ok = ok | (ok.sum(1, keepdim=True) < k)
    P = _energy_features(X.double().abs(), radius)
    P = P - P.mean(0)
    _, _, taken, Z, _ = _alternate(f, f.mean(0), P, ok, k, iters)
    gain = torch.where(taken, Z, torch.full_like(Z, -1.0))
    return gain.topk(k, dim=1).indices


def _pick_cliques(f: torch.Tensor, has: torch.Tensor, counts: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clique cores (first quarter of a grown clique) of ``counts[c]`` distinct dense cliques
    per class ``c``: ``(N, core)`` encoding indices and ``(N,)`` classes."""
    sim = f @ f.T
    sim.fill_diagonal_(0)
    seed_enc, seed_cls = has.nonzero(as_tuple=True)
    allowed = has[:, seed_cls].T  # (S, M): may add encodings whose label holds the seed's class
    cliques = _grow(sim, seed_enc, allowed, size)
    core = cliques[:, : max(2, size // 4)]  # the first members added are the most reliable
    dens = sim[core.unsqueeze(2), core.unsqueeze(1)].mean((1, 2))
    cp = f[core].mean(1)
    cp = cp - cp.mean(1, keepdim=True)
    cp = cp / cp.norm(dim=1, keepdim=True).clamp_min(1e-12)
    chosen: list[int] = []
    for c in range(has.shape[1]):  # per class (a handful), densest distinct cliques first
        idx = (seed_cls == c).nonzero().flatten()
        want = min(int(counts[c]), len(idx))
        got: list[int] = []
        for thr in (0.5, 0.6, 0.7, 0.8, 0.9, 2.0):  # distinct images first, then relax
            alive = torch.ones(len(idx), dtype=torch.bool)
            for g in got:
                alive &= (cp[idx] @ cp[g]) < thr
            while len(got) < want and bool(alive.any()):
                i = int(idx[int(torch.where(alive, dens[idx], torch.full_like(dens[idx], -torch.inf)).argmax())])
                got.append(i)
                alive &= (cp[idx] @ cp[i]) < thr
            if len(got) == want:
                break
        chosen += got
    chosen_t = torch.tensor(chosen, dtype=torch.int64)
    return core[chosen_t], seed_cls[chosen_t]


def _code(f: torch.Tensor, mu: torch.Tensor, P: torch.Tensor, ok: torch.Tensor, k: int):
    """Greedy non-negative sparse coding of every row of ``f − mu`` with ``k`` atoms of ``P``
    among the allowed ones (``ok`` ``(M, N)``), all rows at once. Returns ``(taken (M, N) bool,
    Z (M, N) coefficients, objective ‖f − mu − Z P‖²)``."""
    M, n = ok.shape
    rows = torch.arange(M)
    R = f - mu
    taken = torch.zeros(M, n, dtype=torch.bool)
    Z = torch.zeros(M, n, dtype=torch.float64)
    pn2 = (P * P).sum(1).clamp_min(1e-12)
    for _ in range(int(k)):  # k greedy steps (k ≤ 6)
        G = R @ P.T
        gain = torch.where(ok & ~taken, G.clamp_min(0) ** 2 / pn2, torch.full_like(G, -1.0))
        j = gain.argmax(1)
        z = (G[rows, j] / pn2[j]).clamp_min(0)
        R = R - z[:, None] * P[j]
        Z[rows, j] += z
        taken[rows, j] = True
    return taken, Z, float((R * R).sum())


def _dictionary(f: torch.Tensor, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares atoms and intercept for ``f ≈ Z P + mu``."""
    M, n = Z.shape
    Za = torch.cat([Z, torch.ones(M, 1, dtype=torch.float64)], 1)
    sol = torch.linalg.solve(Za.T @ Za + 1e-6 * torch.eye(n + 1, dtype=torch.float64), Za.T @ f)
    return sol[:n], sol[n]


def _alternate(f, mu, P, ok, k, iters):
    for _ in range(int(iters)):
        _, Z, _ = _code(f, mu, P, ok, k)
        P, mu = _dictionary(f, Z)
    taken, Z, obj = _code(f, mu, P, ok, k)
    return P, mu, taken, Z, obj


def find_membership(abs_enc: torch.Tensor, targets: torch.Tensor, n_private: int, k_private: int, *,
                    iters: int = 8, swaps: int = 24, tries: int = 3, radius: int = 1,
                    public: torch.Tensor | None = None, k_public: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Which private images each encoding mixes (the attack's steps 1–4), from ``|e|`` and the
    mixed labels ``targets`` ``(M, K)`` only.

    1. Class sizes from the label mass (:func:`class_counts`).
    2. Cliques: correlation of :func:`highpass_features` (the paper trains a network to say
       whether two encodings share an image; this is its untrained stand-in); for every
       encoding and every class in its label grow a set of the ``M·k_private/n_private`` most
       similar encodings whose label has that class (:func:`grow_cliques`); per class keep as
       many dense, mutually distinct cliques as it holds images.
    3. Sparse coding (the paper's matching): the energy features ``hp(|e|²) ≈ Σ_j λ_j²
       hp(x_j²)`` (+ an intercept) are coded with ``k_private`` atoms — one per private
       image, started from the clique cores — among the images whose class the label holds
       (greedy, non-negative); atoms and codes alternate ``iters`` times.
    4. Re-seeding: the atom that explains least is replaced by the mean residual of the
       encodings of its class most similar to the worst-explained one (``tries`` seeds), and
       the swap is kept if the coding objective drops; up to ``swaps`` attempts. Clique
       initialisations merge or miss images; this is what repairs them.

    Returns ``(members (M, k_private), classes (n_private,))``.
    """
    M = abs_enc.shape[0]
    t = torch.as_tensor(targets, dtype=torch.float64)
    if t.dim() != 2 or t.shape[0] != M:
        raise ValueError(f"targets must be (M={M}, K) mixed labels, got {tuple(t.shape)}")
    n, k = int(n_private), int(k_private)
    if not 1 <= n <= M or not 1 <= k <= n:
        raise ValueError(f"need 1 <= k_private <= n_private <= M, got k_private={k_private}, n_private={n_private}, M={M}")
    has = t > 1e-9  # (M, K) classes present in each label
    counts = class_counts(t, n)
    size = max(2, int(round(M * k / n)))
    core, classes = _pick_cliques(highpass_features(abs_enc, radius=radius), has, counts, size)
    if len(classes) < n:  # a class holds fewer encodings than the label mass gives it images
        raise ValueError(f"find_membership: found only {len(classes)} of {n} private images' cliques")
    f = _private_energy(abs_enc, radius, public, k_public)
    ok = has[:, classes]  # (M, N) label-compatible assignments
    if bool((ok.sum(1) < k).any()):
        ok = ok | (ok.sum(1, keepdim=True) < k)  # a label with too few compatible images: allow all
    mu = f.mean(0)
    P = f[core].mean(1) - mu
    P, mu, taken, Z, obj = _alternate(f, mu, P, ok, k, iters)
    grp = max(2, size // 4)
    tried: set[int] = set()
    for _ in range(int(swaps)):  # re-seeding attempts (a few dozen), each vectorised
        use = (Z ** 2).sum(0) * (P * P).sum(1)  # energy each atom explains
        j = next((int(i) for i in use.argsort() if int(i) not in tried), None)
        if j is None:
            break
        c = int(classes[j])
        keep = ok & (torch.arange(n) != j)
        _, Zr, _ = _code(f, mu, P, keep, k)
        R = f - mu - Zr @ P
        Rn = R - R.mean(0)
        Rn = Rn / Rn.norm(dim=1, keepdim=True).clamp_min(1e-12)
        cand = has[:, c]
        score = torch.where(cand, R.norm(dim=1) * t[:, c], torch.full((M,), -1.0, dtype=torch.float64))
        best = None
        for s in score.topk(min(int(tries), int(cand.sum()))).indices:  # a few seeds
            sim = torch.where(cand, Rn @ Rn[s], torch.full((M,), -torch.inf, dtype=torch.float64))
            sim[s] = torch.inf
            P2 = P.clone()
            P2[j] = R[sim.topk(min(grp, int(cand.sum()))).indices].mean(0)
            cand_fit = _alternate(f, mu, P2, ok, k, iters)
            if best is None or cand_fit[-1] < best[-1]:
                best = cand_fit
        if best is not None and best[-1] < obj * (1 - 1e-4):
            P, mu, taken, Z, obj = best
            tried = set()
        else:
            tried.add(j)
    gain = torch.where(taken, Z, torch.full_like(Z, -1.0))
    members = gain.topk(k, dim=1).indices  # strongest first
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
