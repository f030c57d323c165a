"""CPU seconds and scores of the jigsaw-puzzle solver (:mod:`ppml.attacks.jigsaw`) per scheme,
block size and image size, on real photo crops, and on paper 02's block scrambling with and
without augmentation.

    python benchmarks/jigsaw.py [--n 4] [--sizes 32 64 128 224] [--blocks 4 8 16]
                                [--max-pieces 1024] [--aug-n 16] [--threads 1]

Every image is encrypted under its own key and solved from its ciphertext alone; scores are
direct comparison (right cell and orientation, up to a whole-image rotation/flip),
neighbour comparison, largest correct component, colour (EtC: negative–positive state and
channel order) and SSIM of the reassembled image. Lower is more secure. ``cpu s`` is the
whole configuration (all images) on one thread.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PPML_QUIET", "1")

from ppml.attacks.jigsaw import jigsaw_sweep  # noqa: E402
from ppml.papers.block_scramble_augmentation import augmentation_study  # noqa: E402
from ppml.datasets import photo_crops  # noqa: E402

COLUMNS = ("pieces", "direct", "neighbour", "largest_component", "colour", "ssim", "cpu_s")


def print_table(record: dict, title: str) -> None:
    print(title)
    print(f"{'configuration':24s} {'pieces':>6s} {'direct':>7s} {'neighb.':>7s} {'largest':>7s} {'colour':>7s} "
          f"{'SSIM':>6s} {'cpu s':>7s}")
    for name, r in record.items():
        col = f"{r['colour']:7.3f}" if "colour" in r else f"{'-':>7s}"
        print(f"{name:24s} {r['pieces']:6d} {r['direct']:7.3f} {r['neighbour']:7.3f} {r['largest_component']:7.3f} "
              f"{col} {r['ssim']:6.3f} {r['cpu_s']:7.2f}", flush=True)


def run(n: int = 4, sizes=(32, 64, 128, 224), blocks=(4, 8, 16), max_pieces: int | None = 1024, aug_n: int = 16,
        seed: int = 0) -> dict:
    """Both studies; returns ``{"sweep": record, "augmentation": record}`` and prints the tables."""
    print(f"jigsaw solver, {n} photo crops per size, torch threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}")
    t0 = time.process_time()
    imgs = {s: photo_crops(n, size=s, seed=seed + 20) for s in sizes}
    sweep = jigsaw_sweep(imgs, blocks=blocks, seed=seed, max_pieces=max_pieces)
    print_table(sweep.record, f"scheme-block-size (max_pieces={max_pieces})")
    aug = augmentation_study(photo_crops(aug_n, size=32, seed=seed + 21), 8, seed=seed)
    print_table(aug.record, f"\npaper 001 block scrambling, 8x8 blocks on 32x32, {aug_n} crops: augmentation before "
                            "encryption")
    print(f"\ntotal {time.process_time() - t0:.1f} CPU-s")
    return {"sweep": sweep.record, "augmentation": aug.record}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=4, help="photo crops per image size")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 224])
    p.add_argument("--blocks", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--max-pieces", type=int, default=1024, help="skip configurations with more pieces (0: none)")
    p.add_argument("--aug-n", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    run(a.n, tuple(a.sizes), tuple(a.blocks), a.max_pieces or None, a.aug_n, a.seed)


if __name__ == "__main__":
    main()
