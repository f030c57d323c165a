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

__all__ = ["STYLE", "use_style", "to_numpy_image", "image_grid"]

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
