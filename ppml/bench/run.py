"""The cell cache (one JSON per scale, scheme and column, with a fingerprint) and :func:`run_bench`."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ppml.bench.cells import _CELLS, _Context, _needs_train
from ppml.bench.config import BASE_COLUMNS, BENCH_VERSION, COLUMNS, CONFIGS, _rehearsal_config, parse_names
from ppml.schemes import ATTACK_NAMES, Scheme, get_scheme, list_schemes
from ppml.utils import atomic_write_json, progress


# ------------------------------------------------------------------------------------ cache
def _fingerprint(scheme: Scheme, column: str, config: Mapping[str, Any]) -> str:
    keys = COLUMNS[column] + (("transformnet",) if _needs_train(scheme) else ())
    if _needs_train(scheme) and column != "accuracy":  # a learned scheme depends on its training data
        keys += COLUMNS["accuracy"]
    spec = {"bench": BENCH_VERSION, "column": column, "config": {k: config.get(k) for k in sorted(set(keys))},
            "scheme": {"name": scheme.name, "kind": scheme.kind, "block_size": scheme.block_size,
                       "adaptation": scheme.adaptation, "public": scheme.public,
                       "options": scheme.attack_options.get(column, {}),
                       "factory": f"{scheme.factory.__module__}.{scheme.factory.__qualname__}"}}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cell_path(out: Path, scale: str, scheme: str, column: str) -> Path:
    return out / scale / scheme / f"{column}.json"


def _read_cell(path: Path, fingerprint: str) -> dict[str, Any] | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # missing or unreadable: recompute
    return d if isinstance(d, dict) and d.get("fingerprint") == fingerprint else None


# ------------------------------------------------------------------------------------ the run
@dataclass
class BenchResult:
    """``cells[scheme][column]`` (the cached JSON of each cell), the scale, the schemes and
    attacks asked for, and which cells this run computed (``computed``) vs read from cache."""

    scale: str
    schemes: list[str]
    attacks: list[str]
    cells: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    computed: list[tuple[str, str]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per scheme: every column, "n/a" where an attack does not apply."""
        plain = self.cells.get("plain", {}).get("accuracy", {}).get("acc")
        out = []
        for name in self.schemes:
            sc, cells = get_scheme(name), self.cells.get(name, {})
            acc = cells.get("accuracy", {}).get("acc")
            comp = cells.get("compression", {})
            row: dict[str, Any] = {
                "scheme": name, "kind": sc.kind, "block": sc.block_size if sc.block_size else "–",
                "needs": sc.needs(),
                "acc %": _r(None if acc is None else 100 * acc, 1),
                "Δacc pp": _r(None if acc is None or plain is None else 100 * (acc - plain), 1),
                "JPEG85 ×": _r(comp.get("jpeg_ratio"), 2), "lossless ×": _r(comp.get("lossless_ratio"), 2),
                "LPIPS": _r(cells.get("lpips", {}).get("lpips"), 3),
                "key space (bits)": cells.get("key_space", {}).get("text"),
                "enc img/s": _r(cells.get("throughput", {}).get("images_per_s"), -1),
            }
            best = None
            for a in self.attacks:
                if a not in sc.attacks:
                    row[f"{a} SSIM"] = "n/a"
                    continue
                cell = cells.get(a, {})
                row[f"{a} SSIM"] = _r(cell.get("ssim"), 3)
                if cell.get("ssim") is not None:
                    gap = cell["ssim"] - cell["floor"]
                    best = gap if best is None else max(best, gap)
            floors = [cells[a]["floor"] for a in self.attacks if a in cells and a != "mixing"]
            row["floor"] = _r(floors[0] if floors else cells.get("mixing", {}).get("floor"), 3)
            row["best attack − floor"] = _r(best, 3) if best is not None else "n/a"
            out.append(row)
        return out

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds per column, summed over schemes (what each column costs)."""
        tot: dict[str, float] = {}
        for cells in self.cells.values():
            for col, cell in cells.items():
                tot[col] = round(tot.get(col, 0.0) + float(cell.get("cpu_s", 0.0)), 1)
        return tot

    def privacy_utility(self) -> list[dict[str, Any]]:
        """Per scheme: accuracy drop (pp), best attack SSIM above its floor (plain: its own images,
        SSIM 1), JPEG ratio — the points of :func:`privacy_utility_figure`."""
        pts = []
        for r in self.rows():
            gap = r["best attack − floor"]
            if r["kind"] == "none" and r["floor"] is None:
                gap = 1.0 - self._floor()
            if r["Δacc pp"] is None or not isinstance(gap, float):
                continue
            pts.append({"scheme": r["scheme"], "acc_drop": -r["Δacc pp"], "attack_gap": gap, "jpeg": r["JPEG85 ×"]})
        return pts

    def _floor(self) -> float:
        for cells in self.cells.values():
            for a in ATTACK_NAMES:
                if a in cells and a != "mixing":
                    return float(cells[a]["floor"])
        return 0.0

    def per_scheme(self) -> dict[str, dict[str, Any]]:
        """``scheme → {column: value}`` for ``results.json``."""
        return {r["scheme"]: {k: v for k, v in r.items() if k != "scheme"} for r in self.rows()}


def _r(v: Any, nd: int) -> Any:
    if v is None:
        return None
    return int(round(v)) if nd < 0 else round(float(v), nd)


def run_bench(schemes: str | Sequence[str] | None = None, attacks: str | Sequence[str] | None = None, *,
              scale: str = "smoke", out_dir: str | Path = "build/bench", config: Mapping[str, Any] | None = None,
              recompute: bool = False, show_progress: bool | None = None) -> BenchResult:
    """Fill every (scheme, column) cell of the table, reusing cached cells; return the result.

    ``schemes`` / ``attacks``: names (a list, or comma/space separated), default all; ``plain``
    is always added first (the reference of the accuracy drop). ``config`` overrides entries of
    the scale's preset (:data:`CONFIGS`) — e.g. a tiny run in a test. ``recompute`` ignores the
    cache. Each cell is written atomically to ``out_dir/<scale>/<scheme>/<column>.json``.
    """
    if scale not in CONFIGS:
        raise ValueError(f"unknown scale {scale!r}: choose from {', '.join(CONFIGS)}")
    names = parse_names(schemes, list_schemes(), "scheme")
    if "plain" not in names and "plain" in list_schemes():
        names = ["plain"] + names
    atk = parse_names(attacks, list(ATTACK_NAMES), "attack")
    cfg = {**CONFIGS[scale], **dict(config or {})}
    unknown = set(config or {}) - set(CONFIGS[scale])
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)}: valid keys are {', '.join(CONFIGS[scale])}")
    cfg = _rehearsal_config(cfg)
    if str(cfg["device"]).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"scale {scale!r} runs on {cfg['device']!r} but no GPU is visible: run it on a GPU "
                           "machine, or use --scale smoke / cpu")
    out = Path(out_dir)
    res = BenchResult(scale, names, atk, config=cfg)
    todo = []
    for name in names:
        sc = get_scheme(name)
        cols = list(BASE_COLUMNS) + [a for a in atk if a in sc.attacks]
        for col in cols:
            fp = _fingerprint(sc, col, cfg)
            cached = None if recompute else _read_cell(_cell_path(out, scale, name, col), fp)
            if cached is not None:
                res.cells.setdefault(name, {})[col] = cached
            else:
                todo.append((sc, col, fp))
    ctx = _Context(cfg)
    bar = progress(todo, desc=f"bench ({scale})", unit="cell",
                   **({} if show_progress is None else {"disable": not show_progress}))
    for sc, col, fp in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(f"{sc.name}: {col}")
        t0 = time.process_time()
        value = _CELLS[col](sc, ctx)
        cell = {"scheme": sc.name, "column": col, "scale": scale, "fingerprint": fp,
                "cpu_s": round(time.process_time() - t0, 2), **value}
        atomic_write_json(_cell_path(out, scale, sc.name, col), cell, indent=1)
        res.cells.setdefault(sc.name, {})[col] = cell
        res.computed.append((sc.name, col))
    return res
