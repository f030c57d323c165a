"""What a bench run shows: the privacy–utility figure, example images, the reading and the table."""

from __future__ import annotations

import torch

from ppml.bench.run import BenchResult


# ------------------------------------------------------------------------------------ output
_MARKERS = "osD^vP*Xp<>hH8d"


def privacy_utility_figure(result: BenchResult):
    """Scatter: accuracy drop (x, pp) vs best attack SSIM above the floor (y); marker = scheme,
    colour = JPEG size ratio at the bench's QF. Lower-left is better on both axes."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    pts = result.privacy_utility()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    jp = [p["jpeg"] for p in pts if p["jpeg"] is not None] or [1.0]
    norm = Normalize(vmin=min(1.0, min(jp)), vmax=max(1.05, max(jp)))
    cmap = plt.get_cmap("viridis")
    for i, p in enumerate(pts):
        ax.scatter(p["acc_drop"], p["attack_gap"], marker=_MARKERS[i % len(_MARKERS)], s=90, edgecolors="black",
                   linewidths=0.6, color=cmap(norm(p["jpeg"] if p["jpeg"] is not None else 1.0)), label=p["scheme"])
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("accuracy drop vs plain (points)")
    ax.set_ylabel("best attack SSIM − no-attack floor")
    ax.set_title(f"Privacy vs utility (scale: {result.scale})")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label=f"JPEG size ×plain (QF {result.config.get('jpeg_quality')})")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.25, 1.0), frameon=False)
    return fig


def examples_figure(result: BenchResult):
    """One row per scheme: the first victims (real photo crops) as the scheme sends them."""
    import matplotlib.pyplot as plt

    rows = [(n, result.cells.get(n, {}).get("examples", {}).get("images")) for n in result.schemes]
    rows = [(n, torch.tensor(v, dtype=torch.uint8)) for n, v in rows if v]
    if not rows:
        raise ValueError("no example images in the result: run run_bench with the 'examples' column first")
    k = max(len(v) for _, v in rows)
    cell, left, top = 1.1, 1.5, 0.45  # inches: image side, row labels, title
    width, height = left + cell * k, top + cell * len(rows)
    fig, axes = plt.subplots(len(rows), k, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=left / width, right=0.99, bottom=0.01, top=1 - top / height, wspace=0.06, hspace=0.06)
    for i, (name, imgs) in enumerate(rows):
        for j in range(k):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(imgs):
                ax.imshow(imgs[j].permute(1, 2, 0).numpy(), interpolation="nearest")
            if j == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"Example images as sent, per scheme (real photo crops, 32 px; scale: {result.scale})", fontsize=9,
                 y=1 - 0.1 / height)
    return fig


def reading(result: BenchResult) -> str:
    """A few sentences reading the table, computed from it (every number with its scale)."""
    rows = {r["scheme"]: r for r in result.rows()}
    sc = result.scale
    out = []
    acc = [(r["acc %"], n) for n, r in rows.items() if r["acc %"] is not None and n != "plain"]
    if acc and rows.get("plain", {}).get("acc %") is not None:
        best, worst = max(acc), min(acc)
        out.append(f"Accuracy (scale {sc}): plain {rows['plain']['acc %']} %; best protected {best[1]} {best[0]} %, "
                   f"worst {worst[1]} {worst[0]} %.")
    jp = [(r["JPEG85 ×"], n) for n, r in rows.items() if isinstance(r["JPEG85 ×"], float) and n != "plain"]
    if jp:
        near = sorted(n for v, n in jp if v <= 1.1)
        far = sorted(n for v, n in jp if v > 1.3)
        out.append(f"JPEG size within 10 % of plain: {', '.join(near) or 'none'}; more than 30 % larger: "
                   f"{', '.join(far) or 'none'} (scale {sc}).")
    broken = sorted((r["best attack − floor"], n) for n, r in rows.items()
                    if isinstance(r["best attack − floor"], float) and r["best attack − floor"] > 0.1)
    safe = sorted(n for n, r in rows.items()
                  if isinstance(r["best attack − floor"], float) and r["best attack − floor"] <= 0.0)
    if broken:
        out.append("An attack beats the no-attack floor by more than 0.1 SSIM on: "
                   + ", ".join(f"{n} (+{v:.2f})" for v, n in reversed(broken)) + f" (scale {sc}).")
    if safe:
        out.append(f"No attack run here beats the floor on: {', '.join(safe)} (scale {sc}; at this attacker budget).")
    return "\n".join(out)


def format_table(result: BenchResult) -> str:
    """The table as Markdown, with the scale in its caption."""
    from ppml.report import Table

    return Table(result.rows(), caption=f"Schemes benchmark (scale: {result.scale}; accuracy on "
                 f"{result.config.get('dataset')}, everything else on 32-px photo crops)").to_markdown(max_columns=99)
