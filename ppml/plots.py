"""Figure style and the plot helpers the notebooks share.

>>> import torch
>>> fig = image_grid(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), titles=["a", "b", "c", "d"], ncols=2)
>>> len(fig.axes)
4
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["STYLE", "use_style", "to_numpy_image", "image_grid", "jigsaw_figure", "gap_trend_figure", "attack_figure",
           "accuracy_curves"]

#: rcParams every notebook figure uses (small, print-friendly, no seaborn dependency).
STYLE: dict[str, Any] = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "image.interpolation": "nearest",
}


def use_style() -> None:
    """Apply :data:`STYLE` to matplotlib."""
    import matplotlib as mpl

    mpl.rcParams.update(STYLE)


def to_numpy_image(img: Any) -> np.ndarray:
    """A (C, H, W) or (H, W) tensor/array (uint8, or float in [0, 1]) → an (H, W[, 3]) array for imshow."""
    a = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
    if a.ndim == 3:
        if a.shape[0] not in (1, 3):
            raise ValueError(f"expected a (C, H, W) image with C = 1 or 3, got shape {a.shape}")
        a = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
    elif a.ndim != 2:
        raise ValueError(f"expected a (C, H, W) or (H, W) image, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(a.astype(np.float32), 0.0, 1.0)
    return a


def image_grid(images: Sequence[Any], titles: Sequence[str] | None = None, *, ncols: int | None = None,
               size: float = 1.6, suptitle: str | None = None):
    """Show images (a batch tensor (N, C, H, W) or a list of (C, H, W)) in a grid; returns the Figure."""
    import matplotlib.pyplot as plt

    n = len(images)
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {len(titles)} titles for {n} images")
    ncols = ncols or min(n, 8)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.3 if suptitle else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            fig.delaxes(ax)
            continue
        a = to_numpy_image(images[i])
        ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=255 if a.dtype == np.uint8 else 1)
        if titles is not None:
            ax.set_title(titles[i])
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def jigsaw_figure(record: dict[str, dict[str, float]], examples: dict[str, dict[str, Any]] | None = None, *,
                  example_keys: Sequence[str] | None = None, metric: str = "neighbour", title: str | None = None):
    """Jigsaw-solver results (:class:`ppml.attacks.jigsaw.JigsawResults`): ``metric`` (default
    neighbour comparison) against the number of pieces — one line per scheme and block size
    across image sizes, for records keyed ``"{scheme}-B{block}-{size}px"`` — and, beside it,
    example reassemblies (rows: original, ciphertext, reassembled) for ``example_keys``
    (default: all of ``examples`` up to 6; for a sweep, those at the image size closest to
    64 px). Records with other keys (e.g. the
    augmentation study of notebook 02) are drawn as bars, one per setting.

    >>> rec = {"EtC-B8-32px": {"neighbour": 0.5, "pieces": 16}, "EtC-B8-64px": {"neighbour": 0.3, "pieces": 64}}
    >>> len(jigsaw_figure(rec).axes)
    1
    """
    import re

    import matplotlib.pyplot as plt

    if not record:
        raise ValueError("jigsaw_figure: empty record")
    parsed = {k: re.fullmatch(r"(.+)-B(\d+)-(\d+)px", k) for k in record}
    keys = list(example_keys) if example_keys is not None else None
    if keys is None and examples:
        keys = list(examples)
        if all(parsed.values()) and len(keys) > 6:  # every configuration at the image size closest to 64 px
            sizes = sorted({int(parsed[k].group(3)) for k in keys if k in parsed})
            mid = min(sizes, key=lambda v: abs(v - 64))
            keys = [k for k in keys if k in parsed and int(parsed[k].group(3)) == mid][:6]
        elif len(keys) > 6:
            keys = keys[:6]
    keys = [k for k in (keys or []) if examples and k in examples]
    ncol = 1 + len(keys)
    fig = plt.figure(figsize=(3.4 + 1.25 * len(keys), 3.9))
    gs = fig.add_gridspec(3, ncol, width_ratios=[3.2] + [1.1] * len(keys))
    main = fig.add_subplot(gs[:, 0])
    if all(parsed.values()):
        lines: dict[tuple[str, int], list[tuple[int, float]]] = {}
        for k, m in parsed.items():
            lines.setdefault((m.group(1), int(m.group(2))), []).append((int(record[k]["pieces"]), float(record[k][metric])))
        markers = ["o", "s", "^", "D", "v", "P"]
        colours = {}
        for (scheme, block), pts in sorted(lines.items()):
            pts.sort()
            c = colours.setdefault(scheme, f"C{len(colours)}")
            blocks = sorted({b for _, b in lines})
            main.plot([p for p, _ in pts], [v for _, v in pts], marker=markers[blocks.index(block) % len(markers)],
                      color=c, label=f"{scheme} B={block}")
        main.set_xscale("log", base=2)
        main.set_xlabel("number of pieces")
    else:
        names = list(record)
        main.bar(range(len(names)), [float(record[k][metric]) for k in names], color="C0")
        main.set_xticks(range(len(names)), [n.replace("_", " ") for n in names], rotation=30, ha="right")
    main.set_ylabel(f"{metric} comparison" if metric in ("neighbour", "direct") else metric)
    main.set_ylim(0, 1.02)
    if all(parsed.values()):
        main.legend(fontsize=7)
    for c, k in enumerate(keys, start=1):
        for r, part in enumerate(("original", "encrypted", "reconstruction")):
            ax = fig.add_subplot(gs[r, c])
            a = to_numpy_image(examples[k][part])
            ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=255 if a.dtype == np.uint8 else 1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if r == 0:
                m = parsed.get(k)
                ax.set_title(f"{m.group(1)}\nB={m.group(2)}, {m.group(3)} px" if m else k.replace("_", " "), fontsize=7)
            if c == 1:
                ax.set_ylabel(("original", "encrypted", "reassembled")[r], fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def gap_trend_figure(trend: dict[str, Any], *, scale: str = "", note: str = ""):
    """Two panels from :func:`ppml.papers.block_scramble_augmentation.gap_trend`: left, the four
    Fig. 3 test accuracies after every epoch (plain solid, block-scrambled dashed; blue without
    augmentation, orange with augmentation + TTA); right, the plain − scrambled gap with and
    without augmentation, the epochs where augmentation narrows it shaded. ``note`` goes under
    the x axis (e.g. what the intermediate epochs are).

    >>> t = {"epochs": [1, 2], "no_augmentation": [.2, .1], "augmentation_tta": [.3, .05], "narrower": [False, True],
    ...      "crossing_epoch": 2, "accuracy": {"none": [.5, .8], "per_image": [.3, .7], "none_aug_tta": [.4, .8],
    ...      "per_image_aug_tta": [.1, .75]}}
    >>> len(gap_trend_figure(t).axes)
    2
    """
    import matplotlib.pyplot as plt

    ep = trend["epochs"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(7.2, 3.0))
    acc = trend["accuracy"]
    for key, colour, style, label in (("none", "C0", "-", "plain"), ("per_image", "C0", "--", "scrambled"),
                                      ("none_aug_tta", "C1", "-", "plain, aug + TTA"),
                                      ("per_image_aug_tta", "C1", "--", "scrambled, aug + TTA")):
        ax1.plot(ep, acc[key], style, color=colour, label=label)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel(f"test accuracy{f' ({scale})' if scale else ''}")
    ax1.set_ylim(0, 1)
    ax1.legend(fontsize=7)
    ax2.plot(ep, [100 * g for g in trend["no_augmentation"]], "o-", ms=3, color="C0", label="no augmentation")
    ax2.plot(ep, [100 * g for g in trend["augmentation_tta"]], "s-", ms=3, color="C1", label="augmentation + TTA")
    ax2.axhline(0, color="gray", lw=0.8)
    for e, nar in zip(ep, trend["narrower"]):
        if nar:
            ax2.axvspan(e - 0.5, e + 0.5, color="C2", alpha=0.12, lw=0)
    c = trend.get("crossing_epoch")
    ax2.set_title("gap narrower with augmentation from epoch %d on (shaded)" % c if c else
                  "augmentation does not end with the narrower gap", fontsize=8)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("plain − scrambled (points)")
    from matplotlib.ticker import MaxNLocator
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.legend(fontsize=7)
    if note:
        fig.text(0.5, 0.0, note, ha="center", va="bottom", fontsize=7)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
    else:
        fig.tight_layout()
    return fig


def attack_figure(report: dict, *, n: int = 8, mode: str | None = None):
    """Notebook 01's security figure from :func:`ppml.attacks.instahide.attack_report`: rows of
    originals, the attack's reconstructions of InstaHide (oracle membership, then the full
    attack) and of ScrambleMix (as sent, adaptive), each row titled with its mean SSIM, and
    the no-attack floor in the suptitle. ``mode``: which InstaHide mode (default: primary)."""
    import matplotlib.pyplot as plt

    ih = report["instahide"] if mode is None else report["modes"][mode]
    rows = [("original", ih["originals"], None),
            ("InstaHide, oracle membership", ih["oracle_images"], ih["oracle_mean_ssim"]),
            ("InstaHide, full attack", ih["images"], ih["mean_ssim"])]
    for key, lab in (("scramblemix", "ScrambleMix (as sent)"), ("scramblemix_adaptive", "ScrambleMix (adaptive)")):
        if key in report:
            rows.append((lab, report[key]["images"], report[key]["mean_ssim"]))
    n = min(int(n), len(ih["originals"]))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.2 * n, 1.35 * len(rows)), squeeze=False)
    for r, (lab, imgs, score) in enumerate(rows):
        for c in range(n):
            axes[r, c].imshow(to_numpy_image(imgs[c]))
            axes[r, c].axis("off")
        axes[r, 0].set_title(lab + ("" if score is None else f" — mean SSIM {score:.2f}"), fontsize=8, loc="left")
    fig.suptitle(f"Attack after Carlini et al. ({ih.get('mode', '')}); floor (mean public image) SSIM "
                 f"{report['floor']:.2f}", fontsize=9)
    fig.tight_layout()
    return fig


def accuracy_curves(curves: dict[str, Sequence[float]], *, lead: str, others: Sequence[str],
                    chance: float | None = None, xlabel: str = "epoch", note: str = ""):
    """Test accuracy across training, and the gap ``lead − max(others)`` it is judged by.

    ``curves`` maps a method to its accuracy after each epoch (fractions). Left panel: every
    curve (and ``chance``); right panel: the gap in points per epoch, with the zero line, so a
    reader sees its direction and where (if at all) it crosses. ``note`` goes under the title
    (e.g. the schedule: a one-cycle run's accuracy at epoch e is not that of an e-epoch run).

    >>> fig = accuracy_curves({"A": [0.5, 0.7], "B": [0.6, 0.65]}, lead="A", others=["B"], chance=0.1)
    >>> [ax.get_ylabel() for ax in fig.axes]
    ['test accuracy (%)', 'A − max(B) (points)']
    """
    import matplotlib.pyplot as plt

    missing = [m for m in [lead, *others] if m not in curves]
    if missing:
        raise KeyError(f"accuracy_curves: no curve for {', '.join(missing)}; curves: {', '.join(curves)}")
    fig, (ax, gx) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, acc in curves.items():
        e = np.arange(1, len(acc) + 1)
        ax.plot(e, 100 * np.asarray(acc, dtype=float), marker="o", ms=3, label=name, lw=2.2 if name == lead else 1.2)
    if chance is not None:
        ax.axhline(100 * chance, color="gray", ls=":", lw=0.8, label="chance")
    ax.set(xlabel=xlabel, ylabel="test accuracy (%)")
    ax.legend(fontsize=7)
    n = min(len(curves[m]) for m in [lead, *others])
    best = np.max([np.asarray(curves[m][:n], dtype=float) for m in others], axis=0)
    gap = 100 * (np.asarray(curves[lead][:n], dtype=float) - best)
    gx.plot(np.arange(1, n + 1), gap, marker="o", color="tab:red")
    gx.axhline(0, color="k", lw=0.8)
    gx.set(xlabel=xlabel, ylabel=f"{lead} − max({', '.join(others)}) (points)")
    if note:
        fig.suptitle(note, fontsize=8)
    fig.tight_layout()
    return fig
