"""Timing helpers shared by the benchmark scripts (each prints ratios measured within one run)."""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def paired_times(fns: Sequence[Callable[[], object]], repeats: int, device: torch.device) -> list[float]:
    """Best time of each function, run interleaved (f0, f1, ... once per round), so that the
    load on a shared machine affects the baselines and the measured code alike."""
    for fn in fns:
        fn()  # warm-up (allocator, lazy init)
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            best[i] = min(best[i], time.perf_counter() - t0)
    return best
