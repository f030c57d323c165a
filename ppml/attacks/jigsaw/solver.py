"""The jigsaw solver: piece transforms found by compatibility, Kruskal-like group merging, greedy
filling of the grid and colour resolution (:func:`solve`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ppml._checks import check_positive_int
from .pieces import SCHEMES, _apply_d, _COMP8, _LIN8, _TO_RIGHT, _colour_tables, Arrangement, _grid, to_pieces
from .dissimilarity import _edge_features, _to_work, _invariant


# --------------------------------------------------------------------------------------------
# The solver
# --------------------------------------------------------------------------------------------

def _norm_scheme(scheme: str) -> str:
    s = str(scheme).lower().replace("-", "").replace("_", "")
    if s == "etc":
        return "EtC"
    if s in ("blockscramble", "block", "blockscrambling", "scramble"):
        return "BlockScramble"
    raise ValueError(f"unknown scheme {scheme!r}; valid: {', '.join(SCHEMES)}")


class _Puzzle:
    """One image's pieces with the edge features of every display of every piece.

    A display is ``g = d + 8·l``: dihedral code d, then colour label l. The colour labels are
    ``features``-dependent: BlockScramble has one (identity); EtC with ``"sorted"`` or
    ``"invariant"`` features (channel-order-free) has two (negative–positive bit); EtC with
    ``"full"`` features has ``2·C!`` (channel order p and negative–positive bit n, ``l = p + C!·n``).
    """

    def __init__(self, pcs: torch.Tensor, grid: tuple[int, int], scheme: str, reg: float,
                 features: str = "sorted") -> None:
        self.grid = grid
        self.n = pcs.shape[0]
        self.free = scheme == "EtC"
        self.features = features if self.free else "rgb"
        work = _to_work(pcs)
        if self.features == "sorted":       # per-pixel channel values, sorted: no channel order
            feats = work.sort(1, descending=True).values
            col_ops = [lambda f: f, lambda f: -f.flip(1)]
            col_comp = np.array([[0, 1], [1, 0]])
        elif self.features == "invariant":  # channel mean and chroma magnitude
            feats = _invariant(work)
            col_ops = [lambda f: f, lambda f: torch.cat([-f[:, :1], f[:, 1:]], 1)]
            col_comp = np.array([[0, 1], [1, 0]])
        elif self.features == "full":       # RGB under every channel order and sign
            feats = work
            perms, col_comp, _, labels = _colour_tables(work.shape[1])
            npm = len(perms)
            col_ops = [(lambda f, p=perms[l % npm], s=(-1.0 if l >= npm else 1.0): s * f[:, torch.as_tensor(p)])
                       for l in labels]
        elif self.features == "rgb":
            feats = work
            col_ops = [lambda f: f]
            col_comp = np.zeros((1, 1), np.int64)
        else:
            raise ValueError(f"unknown features {features!r}; valid: sorted, invariant, full")
        self.ncol = len(col_ops)
        ng = 8 * self.ncol
        gid = np.arange(ng)
        d, c = gid % 8, gid // 8
        self.comp = _COMP8[d[:, None], d[None, :]] + 8 * col_comp[c[:, None], c[None, :]]
        self.inv = np.array([int(np.nonzero(self.comp[x] == 0)[0][0]) for x in gid])
        self.lin = _LIN8[gid % 8]
        disp = [col_ops[g // 8](_apply_d(feats, g % 8)) for g in range(ng)]
        d = torch.stack(disp, 1)  # (P, ng, Cf, B, B)
        lf, rf = _edge_features(d.reshape(-1, *d.shape[2:]), reg)
        self.lf = lf.reshape(self.n, ng, -1)
        self.rf = rf.reshape(self.n, ng, -1)
        self.allowed = gid if self.free else np.array([0])

    def row_specs(self) -> list[tuple[int, np.ndarray]]:
        """For each left display r ∈ 0..3 (a pure rotation: which edge of the left piece is in
        the seam), the right displays to try: all transforms (EtC) or the same rotation
        (BlockScramble: the seam frame is then just the image turned by r)."""
        if self.free:
            return [(r, self.allowed) for r in range(4)]
        return [(r, np.array([r])) for r in range(4)]

    def reverse_row(self, t: np.ndarray) -> np.ndarray:
        """For a seam "i shown as r, j shown as t right of it": the rotation r' with which the
        same seam appears in j's row (j shown as a pure rotation with i to its right)."""
        out = np.full(len(self.comp), -1, np.int64)
        for tt in range(len(self.comp)):
            for r2 in range(4):
                h = self.comp[r2, self.inv[tt]]
                if (self.lin[h] @ np.array([0, -1]) == np.array([0, 1])).all():
                    out[tt] = r2
        return out[t]

    def candidates(self, k: int, chunk_entries: int = 4_000_000) -> tuple[np.ndarray, ...]:
        """The ``k`` most compatible other pieces (each with its best transform) for every piece
        edge, sorted by confidence: dissimilarity over the smaller of the two edges'
        second-best dissimilarities (Gallagher's normalisation, taken from both sides)."""
        ii, rr, jj, tt, dd = [], [], [], [], []
        p = self.n
        second = torch.zeros(p, 4, dtype=torch.float64)
        for r, cols in self.row_specs():
            nt = len(cols)
            rf = self.rf[:, cols].reshape(p * nt, -1)                  # column m = (j, t) = (m // T, m % T)
            kk = min(k + 1, p - 1)
            step = max(1, chunk_entries // max(1, rf.shape[0]))
            for s in range(0, p, step):
                rows = torch.arange(s, min(p, s + step))
                dmat = (self.lf[rows, r] @ rf.T).view(len(rows), p, nt)
                best_t, arg_t = dmat.min(2)                              # best transform per piece pair
                best_t[torch.arange(len(rows)), rows] = math.inf        # no self-seams
                val, idx = torch.topk(best_t, kk, dim=1, largest=False)
                second[rows, r] = val[:, min(1, kk - 1)]
                keep = min(k, kk)
                ii.append(rows[:, None].expand(-1, keep).reshape(-1))
                rr.append(torch.full((len(rows) * keep,), r))
                jj.append(idx[:, :keep].reshape(-1))
                tt.append(torch.as_tensor(cols)[arg_t.gather(1, idx[:, :keep])].reshape(-1))
                dd.append(val[:, :keep].reshape(-1))
        i, r, j, t, d = (torch.cat(a).numpy() for a in (ii, rr, jj, tt, dd))
        sec = second.numpy()
        norm = np.minimum(sec[i, r], sec[j, self.reverse_row(t)])
        eps = 1e-6  # keeps the ratio finite for perfectly flat edges
        ratio = (d + eps) / (norm + eps)
        order = np.lexsort((d, ratio))
        return i[order], r[order], j[order], t[order], d[order]

    def fits(self, h: int, w: int) -> bool:
        gh, gw = self.grid
        return (h <= gh and w <= gw) or (self.free and h <= gw and w <= gh)


def _solve_one(pcs: torch.Tensor, grid: tuple[int, int], scheme: str, *, reg: float, k: int,
               features: str = "sorted") -> tuple[np.ndarray, np.ndarray, dict[str, int], int]:
    """Place the pieces of one image; returns the ``piece`` and display-code grids (code
    ``d + 8·l``: dihedral d, colour label l), solver statistics and the number of colour labels."""
    pz = _Puzzle(pcs, grid, scheme, reg, features)
    comp, inv, lin = pz.comp, pz.inv, pz.lin
    p = pz.n
    pos = np.zeros((p, 2), np.int64)       # cell of every piece in its group's frame
    tr = np.zeros(p, np.int64)             # display of every piece in its group's frame
    group = np.arange(p)
    members = {i: np.array([i]) for i in range(p)}
    off = max(grid) + 1                    # group frames stay within ±max(grid) of their first piece
    width = 2 * off + 1

    def code(rc: np.ndarray) -> np.ndarray:
        return (rc[..., 0] + off) * width + rc[..., 1] + off

    occ: dict[int, np.ndarray] = {}                      # dense occupancy per group, made on demand
    box = {i: [0, 0, 0, 0] for i in range(p)}           # rmin, rmax, cmin, cmax per group

    def occupancy(g: int) -> np.ndarray:
        if g not in occ:
            occ[g] = np.zeros(width * width, bool)
            occ[g][code(pos[members[g]])] = True
        return occ[g]

    def frame_map(i: int, r: int, j: int, t: int, ga: int, gb: int, to_a: bool):
        """The seam "i shown as r, j shown as t right of it" as a map of one group into the
        other's frame: (element m, source cell, destination cell) with cell ↦ dst + lin[m]·(cell − src)."""
        phi = comp[tr[i], inv[r]]                        # seam frame -> a's frame
        pj = pos[i] + lin[phi] @ np.array([0, 1])         # j's cell in a's frame
        psi = comp[comp[phi, t], inv[tr[j]]]             # b's frame -> a's frame
        return (psi, pos[j].copy(), pj) if to_a else (inv[psi], pj, pos[j].copy())

    def move(mover: int, keeper: int, m: int, src: np.ndarray, dst: np.ndarray, keep: np.ndarray | None = None) -> None:
        mem = members.pop(mover)
        newpos = dst + (pos[mem] - src) @ lin[m].T
        tr[mem] = comp[m, tr[mem]]
        if keep is None:
            keep = np.ones(len(mem), bool)
        kept, dropped = mem[keep], mem[~keep]
        pos[kept] = newpos[keep]
        group[kept] = keeper
        members[keeper] = np.concatenate([members[keeper], kept])
        occupancy(keeper)[code(newpos[keep])] = True
        b, nk = box[keeper], newpos[keep]
        box[keeper] = [min(b[0], int(nk[:, 0].min())), max(b[1], int(nk[:, 0].max())),
                       min(b[2], int(nk[:, 1].min())), max(b[3], int(nk[:, 1].max()))]
        occ.pop(mover, None)
        del box[mover]
        for q in dropped.tolist():  # each dropped piece becomes a group of its own
            group[q], pos[q] = q, 0
            members[q], box[q] = np.array([q]), [0, 0, 0, 0]

    def occupied(keeper: int, cells: np.ndarray) -> np.ndarray:
        """Whether each cell (in keeper's frame) is taken; cells beyond the frame are free."""
        inside = (np.abs(cells) < off).all(1)
        out = np.zeros(len(cells), bool)
        out[inside] = occupancy(keeper)[code(cells[inside])]
        return out

    ci = cr = cj = ct = np.zeros(0, np.int64)
    if p > 1:
        ci, cr, cj, ct, _ = pz.candidates(k)
        ci, cr, cj, ct = ci.tolist(), cr.tolist(), cj.tolist(), ct.tolist()
        for i, r, j, t in zip(ci, cr, cj, ct):
            ga, gb = group[i], group[j]
            if ga == gb:
                continue
            to_a = len(members[gb]) <= len(members[ga])  # move the smaller group
            mover, keeper = (gb, ga) if to_a else (ga, gb)
            m, src, dst = frame_map(i, r, j, t, ga, gb, to_a)
            mb = box[mover]  # the bound first, from two opposite corners of the mover's box
            corners = dst + (np.array([[mb[0], mb[2]], [mb[1], mb[3]]]) - src) @ lin[m].T
            bx = box[keeper]
            rmin, rmax = min(bx[0], int(corners[:, 0].min())), max(bx[1], int(corners[:, 0].max()))
            cmin, cmax = min(bx[2], int(corners[:, 1].min())), max(bx[3], int(corners[:, 1].max()))
            if not pz.fits(rmax - rmin + 1, cmax - cmin + 1):
                continue
            newpos = dst + (pos[members[mover]] - src) @ lin[m].T
            if occupied(keeper, newpos).any():
                continue
            move(mover, keeper, m, src, dst)
            if len(members) == 1:
                break
    n_groups = len(members)
    main = max(members, key=lambda g: len(members[g]))
    largest = len(members[main])
    trimmed = 0
    if n_groups > 1:
        # trim-merge: a confident seam between the main group and another group places the part
        # of that group that lands on free cells inside the best grid window around the main
        # group (it must keep the seam's own piece); the rest of it falls apart into single pieces
        windows = [tuple(grid)] + ([tuple(grid[::-1])] if pz.free and grid[0] != grid[1] else [])
        for i, r, j, t in zip(ci, cr, cj, ct):
            ga, gb = group[i], group[j]
            if ga == gb or main not in (ga, gb):
                continue
            to_a = ga == main
            mover, anchor = (gb, j) if to_a else (ga, i)
            m, src, dst = frame_map(i, r, j, t, ga, gb, to_a)
            if occupied(main, dst + (pos[anchor:anchor + 1] - src) @ lin[m].T)[0]:
                continue  # the seam's own piece would land on an occupied cell
            mem = members[mover]
            newpos = dst + (pos[mem] - src) @ lin[m].T
            free = ~occupied(main, newpos)
            a = int(np.nonzero(mem == anchor)[0][0])
            bx = box[main]
            best, keep = 0, None
            for wh, ww in windows:
                r0 = np.arange(bx[1] - wh + 1, bx[0] + 1)
                c0 = np.arange(bx[3] - ww + 1, bx[2] + 1)
                if len(r0) == 0 or len(c0) == 0:
                    continue
                inr = (newpos[None, :, 0] >= r0[:, None]) & (newpos[None, :, 0] < r0[:, None] + wh)  # (R, n)
                inc = (newpos[None, :, 1] >= c0[:, None]) & (newpos[None, :, 1] < c0[:, None] + ww)  # (C, n)
                inside = inr[:, None, :] & inc[None, :, :] & free                               # (R, C, n)
                counts = np.where(inside[:, :, a], inside.sum(2), 0)
                if counts.max() > best:
                    best = int(counts.max())
                    ri, cj_ = np.unravel_index(int(np.argmax(counts)), counts.shape)
                    keep = inside[ri, cj_]
            if keep is None:
                continue
            trimmed += int((~keep).sum())
            move(mover, main, m, src, dst, keep)
            if len(members[main]) == p:
                break
    cells = {tuple(c): int(q) for q, c in zip(members[main].tolist(), pos[members[main]].tolist())}
    filled = _fill(pz, cells, list(box[main]), pos, tr)
    rc = np.array(list(cells.keys()), np.int64)
    rc -= rc.min(0)
    h, w = (rc.max(0) + 1).tolist()
    piece = np.zeros((h, w), np.int64)
    g = np.zeros((h, w), np.int64)
    ids = np.fromiter(cells.values(), np.int64)
    piece[rc[:, 0], rc[:, 1]] = ids
    g[rc[:, 0], rc[:, 1]] = tr[ids]
    if (h, w) != tuple(grid):  # it fits transposed: turn the whole solution by 90°
        piece = _apply_d(torch.as_tensor(piece), 1).numpy()
        g = comp[1, _apply_d(torch.as_tensor(g), 1).numpy()]
    return piece, g, {"groups_after_merge": int(n_groups), "largest_merged_group": int(largest),
                      "trimmed": int(trimmed), "filled": int(filled)}, pz.ncol


def _fill(pz: _Puzzle, cells: dict[tuple[int, int], int], bx: list[int], pos: np.ndarray, tr: np.ndarray) -> int:
    """Grow group ``cells`` (in place) until every piece is placed: each step takes the empty
    cells with the most placed neighbours (inside the grid bound) and puts there the unplaced
    piece and transform of least mean dissimilarity to those neighbours. Returns how many
    pieces it placed. Each empty cell keeps its summed seam costs against every piece and
    transform, updated when a neighbour arrives (one matrix-vector product)."""
    placed = np.zeros(pz.n, bool)
    placed[list(cells.values())] = True
    n_filled = int((~placed).sum())
    if n_filled == 0:
        return 0
    allowed = pz.allowed
    dirs = ((0, 1), (0, -1), (1, 0), (-1, 0))
    rf_dir = {}
    for d in dirs:  # right-role features of every piece under every allowed transform, per direction
        r = _TO_RIGHT[d]
        rf_dir[d] = pz.rf[:, torch.as_tensor(pz.comp[r, allowed])]  # (P, A, F)
    cost: dict[tuple[int, int], torch.Tensor] = {}
    count: dict[tuple[int, int], int] = {}

    def add(c: tuple[int, int], i: int) -> None:
        for d in dirs:
            e = (c[0] + d[0], c[1] + d[1])
            if e in cells:
                continue
            left = pz.lf[i, int(pz.comp[_TO_RIGHT[d], tr[i]])]      # i shown so that e is on its right
            inc = rf_dir[d] @ left
            if e in cost:
                cost[e] += inc
                count[e] += 1
            else:
                cost[e], count[e] = inc, 1

    for c, i in list(cells.items()):
        add(c, i)
    for _ in range(n_filled):
        rmin, rmax, cmin, cmax = bx
        ok = [c for c in cost if pz.fits(max(rmax, c[0]) - min(rmin, c[0]) + 1, max(cmax, c[1]) - min(cmin, c[1]) + 1)]
        most = max(count[c] for c in ok)
        front = [c for c in ok if count[c] == most]
        total = torch.stack([cost[c] for c in front]) / most            # (M, P, A)
        total[:, torch.as_tensor(placed)] = math.inf
        f, rest = divmod(int(torch.argmin(total.reshape(-1))), pz.n * len(allowed))
        piece, a = divmod(rest, len(allowed))
        c = front[f]
        cells[c] = piece
        placed[piece] = True
        pos[piece] = c
        tr[piece] = int(allowed[a])
        del cost[c], count[c]
        bx[:] = [min(bx[0], c[0]), max(bx[1], c[0]), min(bx[2], c[1]), max(bx[3], c[1])]
        add(c, piece)
    return n_filled


def _resolve_colour(pcs: torch.Tensor, piece: np.ndarray, d: np.ndarray, negpos: np.ndarray, reg: float,
                    sweeps: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Colour label of every cell (channel order, and the negative–positive bit relative to the
    placement's) by full-colour MGC with its neighbours; returns the (negpos, channel) grids."""
    gh, gw = piece.shape
    perms, _, _, labels = _colour_tables(pcs.shape[1])
    npm, nl = len(perms), len(labels)
    work = _to_work(pcs)
    shown = torch.stack([_apply_d(work[int(piece.flat[q])], int(d.flat[q])) for q in range(gh * gw)])
    shown = torch.where(torch.as_tensor(negpos.reshape(-1) == 1)[:, None, None, None], -shown, shown)
    var = torch.stack([(-1.0 if lab >= npm else 1.0) * shown[:, torch.as_tensor(perms[lab % npm])]
                       for lab in labels], 1).reshape(gh, gw, nl, *shown.shape[1:])

    def seam_costs(grid: torch.Tensor) -> np.ndarray:  # (rows, cols-1, L, L): [left label, right label]
        rows, cols = grid.shape[:2]
        lf, rf = _edge_features(grid.reshape(-1, *grid.shape[3:]), reg)
        lf, rf = lf.reshape(rows, cols, nl, -1), rf.reshape(rows, cols, nl, -1)
        return torch.einsum("rcaf,rcbf->rcab", lf[:, :-1], rf[:, 1:]).numpy()

    cost_h = seam_costs(var) if gw > 1 else None
    cost_v = seam_costs(var.transpose(-1, -2).transpose(0, 1)).transpose(1, 0, 2, 3) if gh > 1 else None
    nb: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(gh * gw)]  # (neighbour, cost[mine, theirs])
    for a in range(gh):
        for b in range(gw):
            q = a * gw + b
            if b + 1 < gw:
                nb[q].append((q + 1, cost_h[a, b]))
                nb[q + 1].append((q, cost_h[a, b].T))
            if a + 1 < gh:
                nb[q].append((q + gw, cost_v[a, b]))
                nb[q + gw].append((q, cost_v[a, b].T))
    # confidence-ordered propagation (Prim-like) from the most colourful piece
    chroma = (shown - shown.mean(1, keepdim=True)).abs().mean((1, 2, 3)).numpy()
    label = np.full(gh * gw, -1, np.int64)
    unary = np.zeros((gh * gw, nl))
    margin = np.full(gh * gw, -np.inf)
    start = int(np.argmax(chroma))
    margin[start] = np.inf
    for _ in range(gh * gw):
        q = int(np.argmax(margin))
        label[q] = 0 if q == start else int(np.argmin(unary[q]))
        margin[q] = -np.inf
        for nq, cost in nb[q]:
            if label[nq] < 0:
                unary[nq] += cost[label[q]]          # cost[mine = label[q], theirs = each label of nq]
                s = np.partition(unary[nq], 1)[:2]
                margin[nq] = s[1] - s[0]
    for _ in range(sweeps):  # iterated conditional modes, one checkerboard colour at a time
        for parity in (0, 1):
            new = label.copy()
            for q in range(gh * gw):
                if (q // gw + q % gw) % 2 == parity:
                    new[q] = int(np.argmin(sum(cost[:, label[nq]] for nq, cost in nb[q]))) if nb[q] else label[q]
            label = new
    lab = label.reshape(gh, gw)
    return negpos ^ (lab // npm), lab % npm


def solve(y: torch.Tensor, block_size: int, *, scheme: str = "EtC", features: str = "auto", reg: float = 1.0,
          k: int = 8, colour: bool = True, return_stats: bool = False) -> Arrangement | tuple[Arrangement, list[dict]]:
    """Reassemble encrypted images ``(N, C, H, W)`` (uint8, or float in [0, 1]) from their
    ``B×B`` blocks alone, one image at a time.

    ``scheme="BlockScramble"``: pieces are only moved (orientation and colour known).
    ``scheme="EtC"``: pieces may also be rotated/flipped, negative–positive transformed and
    colour-shuffled; the solution is then defined up to a whole-image transform (see the
    module docstring). ``features`` (EtC): ``"full"`` scores seams in RGB over all 8 × 12
    transforms of the right piece; ``"sorted"`` on the per-pixel sorted channel values (blind
    to the channel order; a negative–positive transform negates and reverses them) over 8 × 2,
    the channel order then being resolved from neighbours; ``"invariant"`` likewise on channel
    mean and chroma; ``"auto"``: full up to 256 pieces, sorted beyond (6× cheaper).
    ``reg``: the MGC covariance regulariser (pixel units²); ``k``: candidate seams kept per
    piece edge; ``colour=False`` skips the channel-order stage. With ``return_stats``, also how
    many groups the merge left and how many pieces the final greedy fill placed, per image.

    >>> from ppml.ciphers import BlockScramble
    >>> from ppml.keys import BlockScrambleKey
    >>> from ppml.attacks.jigsaw import smooth_test_image
    >>> x = smooth_test_image(32, seed=2)[None]
    >>> perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    >>> y = BlockScramble(key=BlockScrambleKey(perm.numpy(), image_size=32, block_size=8))(x)
    >>> sol = solve(y, 8, scheme="BlockScramble")
    >>> bool((sol.piece[0].reshape(-1) == torch.argsort(perm).numpy()).all())
    True
    """
    grid = _grid(y, block_size, "solve", value_range=(0.0, 1.0))
    scheme = _norm_scheme(scheme)
    if block_size < 2:
        raise ValueError("solve: block_size must be >= 2 (the compatibility needs a gradient inside each piece)")
    if grid[0] * grid[1] < 2:
        raise ValueError(f"solve: a {grid[0]}x{grid[1]} grid has a single piece; nothing to solve")
    check_positive_int(k, "k", "solve")
    if features not in ("auto", "full", "sorted", "invariant"):
        raise ValueError(f"solve: features must be 'auto', 'full', 'sorted' or 'invariant', got {features!r}")
    if features == "auto":
        features = "full" if grid[0] * grid[1] <= 256 else "sorted"
    pcs = to_pieces(y.detach().cpu(), int(block_size))
    parts, stats = [], []
    for n in range(pcs.shape[0]):
        piece, g, st, ncol = _solve_one(pcs[n], grid, scheme, reg=float(reg), k=int(k), features=features)
        d, lab = g % 8, g // 8
        if ncol == 1:
            negpos, chan = np.zeros_like(piece), np.zeros_like(piece)
        elif ncol == 2:
            negpos, chan = lab, np.zeros_like(piece)
            if colour:
                negpos, chan = _resolve_colour(pcs[n], piece, d, negpos, float(reg))
        else:
            npm = ncol // 2
            negpos, chan = lab // npm, lab % npm
        parts.append(Arrangement(piece, d, negpos, chan))
        stats.append(st)
    out = Arrangement.concat(parts)
    return (out, stats) if return_stats else out
