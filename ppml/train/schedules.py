"""Learning-rate schedules of :func:`ppml.train.fit`, as multipliers per optimisation step."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

SCHEDULES = ("multistep", "cosine", "onecycle", "triangular", "constant")

def lr_schedule(schedule: str, *, epochs: int, steps_per_epoch: int, milestones: Sequence[int] | None = None,
                gamma: float = 0.1, warmup_epochs: float = 0.0, pct_start: float | None = None,
                div_factor: float = 25.0, final_div_factor: float = 1e4) -> Callable[[int], float]:
    """The learning-rate multiplier as a function of the optimisation step (0-based).

    * ``"constant"``: 1.
    * ``"multistep"``: multiply by ``gamma`` after each epoch in ``milestones`` (default: 50 % and
      75 % of training, the CIFAR recipe of He et al. 2016; ScrambleMix uses 60/120/180 of 200,
      the transformation network 60/120/160 with gamma 0.2). Changes at epoch boundaries.
    * ``"cosine"``: half-cosine from 1 to 0 over training, per step (Loshchilov & Hutter 2017,
      SGDR without restarts).
    * ``"onecycle"``: Smith & Topin's one-cycle policy exactly as ``torch.optim.lr_scheduler.OneCycleLR``
      (cosine annealing, no momentum cycling): from 1/div_factor up to 1 at ``pct_start``
      (default 0.3) of training, then down to 1/(div_factor·final_div_factor).
    * ``"triangular"``: ConvMixer's schedule (Trockman & Kolter; ``onecycle`` in their timm fork
      and their CIFAR-10 script): piecewise linear through (0, 0), (``pct_start``·T, 1),
      (0.8·T, 1/20), (T, 0) with T = epochs and ``pct_start`` defaulting to 2/5; step i of epoch
      e uses t = e + (i + 1)/steps_per_epoch as in their script. (Their code rounds the knots
      down to whole epochs, ``T*2//5``; here they are exact fractions.)

    ``warmup_epochs`` adds a linear warm-up (Goyal et al. 2017) to constant, multistep and cosine.

    >>> f = lr_schedule("multistep", epochs=4, steps_per_epoch=2, milestones=[2], gamma=0.1)
    >>> [round(f(s), 3) for s in range(8)]
    [1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1]
    >>> f = lr_schedule("triangular", epochs=5, steps_per_epoch=1)
    >>> [round(f(s), 3) for s in range(5)]
    [0.5, 1.0, 0.525, 0.05, 0.0]
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError("epochs and steps_per_epoch must be >= 1")
    total = epochs * steps_per_epoch
    warm = int(round(warmup_epochs * steps_per_epoch))
    if warmup_epochs < 0 or warm >= total:
        raise ValueError(f"warmup_epochs must be in [0, epochs), got {warmup_epochs}")
    if milestones is None:
        milestones = sorted({m for m in (round(0.5 * epochs), round(0.75 * epochs)) if m >= 1})
    ms = [int(m) for m in milestones]
    if ms != sorted(ms) or any(m < 1 for m in ms):
        raise ValueError(f"milestones must be increasing positive epoch numbers, got {list(milestones)}")
    if schedule in ("onecycle", "triangular"):
        pct = pct_start if pct_start is not None else (0.3 if schedule == "onecycle" else 0.4)
        hi = 1.0 if schedule == "onecycle" else 0.8
        if not 0.0 < pct < hi:
            raise ValueError(f"pct_start must be in (0, {hi}) for {schedule!r}, got {pct}")
    else:
        pct = 0.0

    def warmup(s: int) -> float:
        return (s + 1) / warm if s < warm else 1.0

    if schedule == "constant":
        return warmup
    if schedule == "multistep":
        return lambda s: warmup(s) * gamma ** sum(s // steps_per_epoch >= m for m in ms)
    if schedule == "cosine":
        return lambda s: warmup(s) if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm)))
    if schedule == "onecycle":
        lo, end_lo = 1.0 / div_factor, 1.0 / (div_factor * final_div_factor)
        up_end, down_end = float(pct * total) - 1, float(total - 1)

        def cos_anneal(a: float, b: float, p: float) -> float:
            return b + (a - b) / 2 * (math.cos(math.pi * p) + 1)

        def onecycle(s: int) -> float:
            # Same phase arithmetic as torch.optim.lr_scheduler.OneCycleLR (two phases).
            if s <= up_end:
                return cos_anneal(lo, 1.0, s / up_end if up_end > 0 else 1.0)
            return cos_anneal(1.0, end_lo, (s - up_end) / (down_end - up_end))

        return onecycle
    xs, ys = [0.0, pct * epochs, 0.8 * epochs, float(epochs)], [0.0, 1.0, 1 / 20, 0.0]
    return lambda s: float(np.interp((s + 1) / steps_per_epoch, xs, ys))
