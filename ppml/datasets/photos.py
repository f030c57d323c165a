"""Real photo crops (unlabelled), from photographs shipped inside scikit-image and scikit-learn."""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ppml.datasets.geometry import _check_size



# --------------------------------------------------------------------------------------------
# Real photo crops (unlabelled)
# --------------------------------------------------------------------------------------------

#: Photographs shipped inside scikit-image and scikit-learn (all load with no network here;
#: for ``stereo_motorcycle`` the left view is used). Sizes are (H, W).
PHOTO_SOURCES = {
    "astronaut": (512, 512), "chelsea": (300, 451), "coffee": (400, 600), "rocket": (427, 640),
    "hubble_deep_field": (872, 1000), "immunohistochemistry": (512, 512), "retina": (1411, 1411),
    "stereo_motorcycle": (500, 741), "china": (427, 640), "flower": (427, 640),
}


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> torch.Tensor:
    """Photo ``name`` as uint8 ``(3, H, W)``, loaded once per process."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image
        arr = load_sample_image(f"{name}.jpg")
    else:
        import skimage.data
        arr = getattr(skimage.data, name)()
        if name == "stereo_motorcycle":
            arr = arr[0]
    arr = np.array(arr[..., :3], dtype=np.uint8, order="C")  # own, writable copy
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def photo_crops(n: int, size: int = 32, seed: int = 0, *, sources: Sequence[str] | None = None,
                scale: tuple[float, float] | None = (0.1, 0.5)) -> torch.Tensor:
    """``n`` real colour crops, uint8 ``(n, 3, size, size)``, from photographs that ship with
    scikit-image and scikit-learn (:data:`PHOTO_SOURCES`; no network needed).

    For each crop (deterministic given ``seed``): a photo is chosen uniformly from ``sources``
    (default: all ten); a square window side is drawn uniformly from ``scale`` × the photo's
    shorter side (default 10–50 %, so a 32-pixel crop shows a recognisable piece of scene, like
    a CIFAR image, rather than a few pixels of texture), but never smaller than ``size``; the
    window is placed uniformly at random and downscaled to ``size × size`` (bilinear,
    antialiased). ``scale=None`` takes windows of exactly ``size`` native pixels (no
    resampling). Real natural-image statistics for compression, LPIPS, attack and visual
    studies — not a labelled benchmark.

    >>> x = photo_crops(4, size=16, seed=1)
    >>> x.shape, x.dtype, bool((x == photo_crops(4, size=16, seed=1)).all())
    (torch.Size([4, 3, 16, 16]), torch.uint8, True)
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    _check_size(size)
    names = list(PHOTO_SOURCES) if sources is None else list(sources)
    if not names:
        raise ValueError("sources is empty; give at least one of " + ", ".join(PHOTO_SOURCES))
    bad = [s for s in names if s not in PHOTO_SOURCES]
    if bad:
        raise ValueError(f"unknown photo source(s) {bad}; valid: {', '.join(PHOTO_SOURCES)}")
    too_small = [s for s in names if min(PHOTO_SOURCES[s]) < size]
    if too_small:
        raise ValueError(f"size {size} is larger than photo(s) {too_small}; use a smaller size or other sources")
    if scale is not None:
        lo, hi = (float(v) for v in scale)
        if not (0 < lo <= hi <= 1):
            raise ValueError(f"scale must be (lo, hi) with 0 < lo <= hi <= 1, got {scale!r}")
    g = torch.Generator().manual_seed(int(seed))
    out = torch.empty(n, 3, size, size, dtype=torch.uint8)
    which = torch.randint(len(names), (n,), generator=g)
    u = torch.rand(n, 3, generator=g, dtype=torch.float64)  # window side, top, left
    for i in range(n):  # a one-off data set builder, not a training transform
        img = _photo(names[int(which[i])])
        _, h, w = img.shape
        short = min(h, w)
        if scale is None:
            side = size
        else:
            side = int(round(short * (lo + (hi - lo) * float(u[i, 0]))))
            side = min(max(side, size), short)
        top = int(float(u[i, 1]) * (h - side + 1))
        left = int(float(u[i, 2]) * (w - side + 1))
        win = img[:, top:top + side, left:left + side]
        if side != size:
            win = F.interpolate(win[None].to(torch.float32), size=(size, size), mode="bilinear",
                                antialias=True, align_corners=False)[0].round().clamp(0, 255)
        out[i] = win.to(torch.uint8)
    return out
