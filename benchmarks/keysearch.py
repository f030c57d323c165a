"""Speed of Algorithm 1 (paper 05): ``best_key`` with LPIPS-alex, N keys × M images.

    python benchmarks/keysearch.py [--trials 20] [--n 1000] [--threads T] [--device cpu]

Target (the issue): N = 20 keys × 1,000 images of 32×32 in ≤ 8 s on the 2-core CPU, for each
of PE, EtC, LE and ELE. Prints, per scheme, wall and process-CPU seconds (best of
``--repeats``), the ratio to the 8 s target, and, as a baseline, the same search scored with
plain ``ppml.metrics.lpips(x, y)`` calls (which embed the plain images again for every key)
instead of ``LPIPSScore`` (plain-image features computed once). Images are real photo crops.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PPML_QUIET", "1")  # the table, not 160 progress bars

from ppml.papers.key_generation import keysearch as ks  # noqa: E402
from ppml.datasets import photo_crops  # noqa: E402
from ppml.utils import best_time  # noqa: E402
from ppml.keys import ELEKey, EtCKey, LEKey, PEKey  # noqa: E402
from ppml.metrics import lpips  # noqa: E402

TARGET_S = 8.0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-baseline", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    x = photo_crops(a.n, 32, seed=0).to(dev)
    ks.best_key(PEKey, x[:8], trials=1, seed=0)  # load the LPIPS weights once, outside the timing
    print(f"best_key: {a.trials} keys x {a.n} images 32x32, LPIPS-alex, device {dev}, "
          f"torch threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")
    print(f"{'scheme':6s} {'wall s':>8s} {'cpu s':>8s} {'/target':>8s} {'baseline wall s':>16s} {'speed-up':>9s}")
    for name, cls, bs in (("PE", PEKey, None), ("EtC", EtCKey, 4), ("LE", LEKey, 4), ("ELE", ELEKey, 4)):
        w, c = best_time(lambda: ks.best_key(cls, x, a.trials, block_size=bs, seed=0), a.repeats, dev)
        line = f"{name:6s} {w:8.2f} {c:8.2f} {w / TARGET_S:8.2f}"
        if not a.no_baseline:
            bw, _ = best_time(lambda: ks.best_key(cls, x, a.trials, metric=lambda u, v: lpips(u, v),
                                              block_size=bs, seed=0), 1, dev)
            line += f" {bw:16.2f} {bw / w:8.2f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
