"""Throughput of the image-quality metrics in :mod:`ppml.metrics` on real photo crops.

    python benchmarks/metrics.py [--n 1000] [--size 32] [--repeats 3] [--threads T] [--device cpu]

Prints image pairs (or images) per second, best of ``--repeats``, wall clock and process CPU
time, for LPIPS-alex, LPIPS-vgg, SSIM, VGG relu2_2 distance, and the no-reference BRISQUE, NIQE
and PIQE. It also times LPIPS-alex with the reference batch embedded once
(``LPIPS.embed`` + ``LPIPS.distance``), the pattern of a key search that compares one plain
set with many candidate encryptions, and prints the time a search of ``--keys`` keys over
``--n`` images would take at that rate.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ppml import metrics  # noqa: E402
from ppml.datasets import photo_crops  # noqa: E402
from ppml.utils import best_time  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--keys", type=int, default=20)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    x = photo_crops(args.n, args.size, seed=1).to(dev)
    y = photo_crops(args.n, args.size, seed=2).to(dev)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {dev}, {args.n} real photo crops {args.size}×{args.size}")
    m = metrics.lpips_model("alex", dev)
    fx = None

    def embedded():
        with torch.no_grad():
            yy = y.float() / 127.5 - 1
            return m.distance(fx, m.embed(yy))

    with torch.no_grad():
        fx = m.embed(x.float() / 127.5 - 1)
        cases = {
            "lpips alex": lambda: metrics.lpips(x, y, "alex"),
            "lpips alex, reference embedded once": embedded,
            "lpips vgg": lambda: metrics.lpips(x, y, "vgg"),
            "ssim": lambda: metrics.ssim(x, y),
            "vgg relu2_2 distance": lambda: metrics.feature_distance(x, y),
            "brisque": lambda: metrics.brisque(x),
            "niqe (upsampled to ≥194 px)": lambda: metrics.niqe(x[: max(1, args.n // 10)]),
            "piqe": lambda: metrics.piqe(x),
        }
        for name, fn in cases.items():
            fn()  # warm-up: builds and caches the model
            n = max(1, args.n // 10) if name.startswith("niqe") else args.n
            wall, cpu = best_time(fn, args.repeats, dev)
            print(f"{name:38s} {n / wall:10.0f} /s wall   {n / cpu:10.0f} /s per CPU-second")
            if name == "lpips alex, reference embedded once":
                print(f"{'':38s} → {args.keys} keys × {args.n} images: {args.keys * wall:.1f} s wall")


if __name__ == "__main__":
    main()
