"""CPU seconds and SSIM of attacks per scheme (one table; other attacks may add rows).

    python benchmarks/attacks.py [--victims 200] [--attacker 500] [--threads 1] [--repeats 1]

Rows so far: the LE-statistics attack (:mod:`ppml.attacks.le_stats`, this project's own
ciphertext-only key recovery for LE, not from the papers) on LE, and applied blindly (as if
the images were LE) to ELE, EtC and PE. Data: 32×32 real photo crops, victims from three
photographs and the attacker's unpaired images from the seven others (as in notebook 03);
then LE with attacker crops from the same photographs (other seed) and LE on Fashion-MNIST
(3 identical channels, so an equivalent key counts), and SSIM against the number of victims.

Targets (issue 12): on LE with block 4, 200 victims and 500 attacker crops, mean SSIM ≥ 0.95,
≥ 90 % of images decrypted bit-exactly, ≤ 30 CPU-s on one thread; on ELE, EtC and PE at or
below the no-attack floor (SSIM of the attacker's mean plain image against the victims).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PPML_QUIET", "1")

from ppml.attacks import le_statistics_attack, le_stats_curve  # noqa: E402
from ppml.ciphers import cipher_for  # noqa: E402
from ppml.datasets import PHOTO_SOURCES, load_dataset, photo_crops  # noqa: E402
from ppml.keys import ELEKey, EtCKey, LEKey, PEKey  # noqa: E402
from ppml.metrics import ssim  # noqa: E402
from ppml.utils import best_time  # noqa: E402


def _floor(victims: torch.Tensor, attacker: torch.Tensor) -> float:
    mean_img = attacker.float().mean(0, keepdim=True).round().to(torch.uint8).expand_as(victims)
    return float(ssim(mean_img, victims).mean())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--victims", type=int, default=200)
    p.add_argument("--attacker", type=int, default=500)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the target is for 1)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--curve", type=int, nargs="*", default=[5, 20, 50, 200])
    p.add_argument("--jigsaw", action="store_true",
                   help="also the jigsaw-puzzle solver on block-scrambled and EtC images (benchmarks/jigsaw.py)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    srcs = list(PHOTO_SOURCES)
    victims = photo_crops(a.victims, 32, seed=a.seed + 21, sources=srcs[:3])
    attacker = photo_crops(a.attacker, 32, seed=a.seed + 20, sources=srcs[3:])
    same = photo_crops(a.attacker, 32, seed=a.seed + 22, sources=srcs[:3])
    fm_v = load_dataset("fashion-mnist-smoke", "test").images[:a.victims]
    fm_a = load_dataset("fashion-mnist-smoke", "train").images[:a.attacker]
    k = a.seed + 1000
    cases = [  # (data, scheme, key, victims, attacker)
        ("photos, other sources", "LE", LEKey.generate(image_size=32, block_size=4, seed=k), victims, attacker),
        ("photos, other sources", "ELE", ELEKey.generate(image_size=32, block_size=4, seed=k), victims, attacker),
        ("photos, other sources", "EtC-4", EtCKey.generate(image_size=32, block_size=4, seed=k), victims, attacker),
        ("photos, other sources", "EtC-16", EtCKey.generate(image_size=32, block_size=16, seed=k), victims, attacker),
        ("photos, other sources", "PE", PEKey.generate(image_size=32, seed=k), victims, attacker),
        ("photos, same sources", "LE", LEKey.generate(image_size=32, block_size=4, seed=k + 1), victims, same),
        ("Fashion-MNIST", "LE", LEKey.generate(image_size=32, block_size=4, seed=k + 2), fm_v, fm_a),
    ]
    print(f"LE-statistics attack (this project's own), {a.victims} victims, {a.attacker} attacker images, "
          f"torch threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")
    print(f"{'attack':14s} {'scheme':7s} {'data':22s} {'cpu s':>7s} {'wall s':>7s} {'SSIM':>7s} "
          f"{'exact %':>8s} {'floor':>7s}")
    for data, scheme, key, vic, atk in cases:
        enc = cipher_for(key)(vic)
        out = {}
        wall, cpu = best_time(lambda: out.update(r=le_statistics_attack(train_plain=atk, test_protected=enc,
                                                                        block_size=4, seed=a.seed)), a.repeats)
        r = out["r"]
        exact = 100 * float((r.images == vic).flatten(1).all(1).float().mean())
        print(f"{'LE-statistics':14s} {scheme:7s} {data:22s} {cpu:7.2f} {wall:7.2f} "
              f"{float(ssim(r.images, vic).mean()):7.3f} {exact:8.1f} {_floor(vic, atk):7.3f}", flush=True)
    counts = [n for n in a.curve if n <= a.victims]
    if counts:
        enc = cipher_for(cases[0][2])(victims)
        curve = le_stats_curve(train_plain=attacker, test_protected=enc, test_plain=victims, counts=counts,
                               block_size=4, seed=a.seed)
        print("\nLE-statistics on LE against the number of victim images (photos, other sources)")
        print(f"{'victims':>8s} {'SSIM':>7s} {'exact %':>8s} {'cpu s':>7s}")
        for n, row in curve.items():
            print(f"{n:8d} {row['ssim']:7.3f} {100 * row['exact']:8.1f} {row['cpu_seconds']:7.2f}")
    if a.jigsaw:  # jigsaw-puzzle solver rows (ppml.attacks.jigsaw); the full options: benchmarks/jigsaw.py
        import importlib.util

        spec = importlib.util.spec_from_file_location("bench_jigsaw", Path(__file__).with_name("jigsaw.py"))
        bench_jigsaw = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench_jigsaw)
        print()
        bench_jigsaw.run(n=4, max_pieces=1024, seed=a.seed)


if __name__ == "__main__":
    main()
