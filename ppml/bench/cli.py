"""``python -m ppml.bench``: the command line."""

from __future__ import annotations

import argparse
from typing import Sequence

from ppml.bench.config import CONFIGS, parse_names
from ppml.bench.run import run_bench
from ppml.bench.table import format_table
from ppml.schemes import ATTACK_NAMES, get_scheme, list_schemes


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ppml.bench [--schemes …] [--attacks …] [--scale smoke|cpu|paper]``."""
    from ppml import bench  # the package docstring describes the command

    p = argparse.ArgumentParser(prog="python -m ppml.bench", description=bench.__doc__.split("\n")[0])
    p.add_argument("--schemes", nargs="+", default=None, help=f"scheme names (default all): {', '.join(list_schemes())}")
    p.add_argument("--attacks", nargs="+", default=None, help=f"attacks (default all): {', '.join(ATTACK_NAMES)}")
    p.add_argument("--scale", default="smoke", choices=list(CONFIGS))
    p.add_argument("--out", default="build/bench", help="cache folder (default build/bench)")
    p.add_argument("--recompute", action="store_true", help="ignore cached cells")
    p.add_argument("--list", action="store_true", help="list the registered schemes and exit")
    a = p.parse_args(argv)
    if a.list:
        for n in list_schemes():
            s = get_scheme(n)
            print(f"{n:<20} {s.kind:<8} block {s.block_size or '–':<3} needs {s.needs():<26} {s.description}")
        return 0
    try:
        parse_names(a.schemes, list_schemes(), "scheme")
        parse_names(a.attacks, list(ATTACK_NAMES), "attack")
    except ValueError as e:
        p.error(str(e))
    res = run_bench(a.schemes, a.attacks, scale=a.scale, out_dir=a.out, recompute=a.recompute)
    print(format_table(res))
    print(f"\ncomputed {len(res.computed)} cell(s), read the rest from {a.out}/{a.scale}/; CPU seconds per column "
          f"(scale {a.scale}): " + ", ".join(f"{k} {v}" for k, v in res.cpu_seconds().items()))
    return 0
