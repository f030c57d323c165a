"""Throughput of the ciphers in :mod:`ppml.ciphers` against one torch gather.

    python benchmarks/ciphers.py [--n 10000] [--repeats 5] [--threads T] [--device cpu]

Encrypts a random uint8 batch ``(N, 3, 32, 32)`` with every cipher (forward and inverse,
best of ``--repeats``) and prints images/s and the time as a multiple of one gather over
the same bytes, measured in the same run. Two single-gather baselines are timed:

* ``index_select`` — ``x.flatten(1).index_select(1, perm)``, the baseline named in the
  issue (target: ≤ 1.5× for byte-level ciphers, ≤ 2× for the nibble ciphers LE/ELE);
* ``torch.gather`` — ``torch.gather(x.flatten(1), 1, perm.expand(N, -1))``, the fastest
  single-gather primitive we found, which the ciphers themselves use. The ratio to it is
  printed too, as the stricter yardstick.

For scale it also times two plain-numpy implementations written here in the authors'
style (a loop over blocks vectorised over images for EtC; Tanaka's block-vectorised LE).

Per-image keys (``--per-image``, on by default): every one of the N images gets its own
BlockScramble key (and, in separate rows, its own EtC key). Timed on the same images:
the single-key cipher, the key-set cipher ``cipher(x, key_ids)`` (one gather over the
per-image table rows; issue target ≤ 2× the single-key time), ``ppml.transforms.EncryptBatch``
over N single-key ciphers (which now encrypts through their key set), for block scrambling
``ppml.papers.block_scramble_augmentation.scramble_blocks`` with an ``(N, n_blocks)``
permutation table (``BlockGrid.permute_blocks``), and, as the baseline, a literal per-key
Python loop over the N single-key ciphers (what EncryptBatch did before it used key sets).
Key generation (``generate_many`` vs a loop of ``generate``) and table construction are
timed apart. ``--only-per-image`` runs just these rows.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import paired_times, sync  # noqa: E402  (benchmarks/_timing.py, beside this script)
from ppml.ciphers import cipher_for  # noqa: E402
from ppml.keys import BlockScrambleKey, ELEKey, EtCKey, LEKey, PEKey  # noqa: E402


def best_time(fn, repeats: int, device: torch.device) -> float:
    """Best wall time of ``fn`` over ``repeats`` runs (after one warm-up run)."""
    return paired_times([fn], repeats, device)[0]


# ----------------------------------------------------------------------------- numpy references
def numpy_etc(x: np.ndarray, key: EtCKey) -> np.ndarray:
    """EtC in plain numpy: a loop over blocks, each step vectorised over the images."""
    b, (_, w) = key.block_size, key.image_size
    gw = w // b
    perms = list(itertools.permutations(range(x.shape[1])))
    out = np.empty_like(x)
    for i in range(key.n_blocks):
        sy, sx = divmod(int(key.block_perm[i]), gw)
        blk = x[:, :, sy * b:(sy + 1) * b, sx * b:(sx + 1) * b]
        code = int(key.rot_flip[i])
        blk = np.rot90(blk, code % 4, axes=(2, 3))
        if code >= 4:
            blk = blk[:, :, :, ::-1]
        if key.negpos[i]:
            blk = blk ^ 255
        blk = blk[:, list(perms[key.channel_perm[i]])]
        oy, ox = divmod(i, gw)
        out[:, :, oy * b:(oy + 1) * b, ox * b:(ox + 1) * b] = blk
    return out


def numpy_le_tanaka(x_nhwc: np.ndarray, key: np.ndarray, b: int) -> np.ndarray:
    """Tanaka-style LE: vectorised over images and blocks, invert / gather / invert."""
    n, h, w, c = x_nhwc.shape
    rev = key > key.size / 2
    x = x_nhwc.reshape(n, h // b, b, w // b, b, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h // b, w // b, -1)
    nib = np.concatenate([x & 0xF, x >> 4], axis=3)
    nib[..., rev] = 15 - nib[..., rev]
    nib = nib[..., key]
    nib[..., rev] = 15 - nib[..., rev]
    d = b * b * c
    x = (nib[..., d:] << 4) + nib[..., :d]
    return x.reshape(n, h // b, w // b, b, b, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h, w, c)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="images in the batch (default 10000)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats, best is reported (default 5)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu)")
    ap.add_argument("--no-numpy", action="store_true", help="skip the plain-numpy references")
    ap.add_argument("--no-per-image", action="store_true", help="skip the per-image-key rows")
    ap.add_argument("--only-per-image", action="store_true", help="run only the per-image-key rows")
    ap.add_argument("--old-loop-repeats", type=int, default=1,
                    help="timed repeats of the slow per-key loop (default 1)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n, shape = args.n, (3, 32, 32)
    d = int(np.prod(shape))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g).to(device)
    perm = torch.randperm(d, generator=g).to(device)

    print(f"ppml cipher benchmark: {n} uint8 images 3x32x32 on {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()}, "
          f"best of {args.repeats}")
    if args.only_per_image:
        per_image_keys(x, args.repeats, args.old_loop_repeats, device)
        return

    flat = x.reshape(n, d)
    pe = perm.expand(n, d)

    def index_select():
        return flat.index_select(1, perm)

    def gather():
        return torch.gather(flat, 1, pe)

    t_is, t_g = paired_times([index_select, gather], args.repeats, device)

    rows = []  # (name, direction, seconds, ratio to index_select, ratio to gather, target)
    configs = [
        ("EtC b=4", EtCKey.generate(image_size=32, block_size=4, seed=0), 1.5),
        ("EtC b=8", EtCKey.generate(image_size=32, block_size=8, seed=0), 1.5),
        ("EtC b=16", EtCKey.generate(image_size=32, block_size=16, seed=0), 1.5),
        ("BlockScramble b=8", BlockScrambleKey.generate(image_size=32, block_size=8, seed=0), 1.5),
        ("PE", PEKey.generate(image_size=32, seed=0), 1.5),
        ("LE b=4", LEKey.generate(image_size=32, block_size=4, seed=0), 2.0),
        ("ELE b=4", ELEKey.generate(image_size=32, block_size=4, seed=0), 2.0),
    ]
    setup = {}
    for name, key, target in configs:
        t0 = time.perf_counter()
        cipher = cipher_for(key).to(device)
        setup[name] = time.perf_counter() - t0
        y = cipher(x)
        if not torch.equal(cipher.inverse(y), x):
            raise SystemExit(f"{name}: inverse(forward(x)) != x")
        for direction, fn in (("forward", lambda: cipher(x)), ("inverse", lambda: cipher.inverse(y))):
            # ratios are taken against baselines timed in the same rounds as the cipher
            ti, tg, tc = paired_times([index_select, gather, fn], args.repeats, device)
            t_is, t_g = min(t_is, ti), min(t_g, tg)
            rows.append((name, direction, tc, tc / ti, tc / tg, target))

    ref_rows = []
    if not args.no_numpy:
        cpu, reps = torch.device("cpu"), min(2, args.repeats)
        xn = x.cpu().numpy()
        xh = np.ascontiguousarray(xn.transpose(0, 2, 3, 1))
        ref = np.random.default_rng(0).permutation(96)
        for b in (4, 16):
            key = EtCKey.generate(image_size=32, block_size=b, seed=0)
            # the reference agrees with the cipher (same definition), then is timed
            assert np.array_equal(numpy_etc(xn[:64], key), cipher_for(key)(x[:64].cpu()).numpy())
            ref_rows.append((f"numpy EtC b={b} (block loop)", best_time(lambda: numpy_etc(xn, key), reps, cpu)))
        le = cipher_for(LEKey.from_reference(ref, image_size=32))
        assert np.array_equal(numpy_le_tanaka(xh[:64], ref, 4), le(x[:64].cpu()).permute(0, 2, 3, 1).numpy())
        ref_rows.append(("numpy LE b=4 (Tanaka-style)", best_time(lambda: numpy_le_tanaka(xh, ref, 4), reps, cpu)))

    def ips(t: float) -> str:
        return f"{n / t:>12,.0f}"

    head = f"{'cipher':<30}{'dir':<9}{'images/s':>12}{'ms':>9}{'x index_select':>16}{'x torch.gather':>16}" \
           f"{'target':>8}  meets (vs index_select / vs torch.gather)"
    print()
    print(head)
    print("-" * len(head))
    print(f"{'baseline: index_select':<30}{'':<9}{ips(t_is)}{t_is * 1e3:>9.2f}{1.0:>16.2f}{t_is / t_g:>16.2f}")
    print(f"{'baseline: torch.gather':<30}{'':<9}{ips(t_g)}{t_g * 1e3:>9.2f}{t_g / t_is:>16.2f}{1.0:>16.2f}")
    for name, direction, t, r_is, r_g, target in rows:
        meets = f"{'yes' if r_is <= target else 'NO':>5} / {'yes' if r_g <= target else 'NO'}"
        print(f"{name:<30}{direction:<9}{ips(t)}{t * 1e3:>9.2f}{r_is:>16.2f}{r_g:>16.2f}"
              f"{'≤' + str(target):>8}  {meets}")
    for name, t in ref_rows:
        print(f"{name:<30}{'forward':<9}{ips(t)}{t * 1e3:>9.2f}{t / t_is:>16.2f}{t / t_g:>16.2f}")
    print()
    print("cipher construction (index tables, once per key): " +
          ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in setup.items()))
    if not args.no_per_image:
        per_image_keys(x, args.repeats, args.old_loop_repeats, device)


# ----------------------------------------------------------------------------- per-image keys
def per_image_keys(x: torch.Tensor, repeats: int, old_repeats: int, device: torch.device) -> None:
    """Rows for a key per image: single key vs key set vs the per-key loop, same images."""
    from ppml.ciphers import BlockScramble, EtC
    from ppml.transforms import EncryptBatch
    from ppml.papers.block_scramble_augmentation import block_scramble_keys, scramble_blocks

    n = x.shape[0]
    ids = torch.randperm(n, generator=torch.Generator().manual_seed(1)).to(device)  # image j: key ids[j]
    print()
    print(f"per-image keys: {n} images, {n} keys (each image its own key), 8x8 blocks, uint8, forward unless noted")
    head = f"{'scheme':<16}{'path':<52}{'ms':>10}{'x single key':>14}"
    print(head)
    print("-" * len(head))
    gen_rows = []
    for name, cls, key_cls in (("BlockScramble", BlockScramble, BlockScrambleKey), ("EtC", EtC, EtCKey)):
        t0 = time.perf_counter()
        keys = key_cls.generate_many(n, image_size=32, block_size=8, seed=0)
        t_many = time.perf_counter() - t0
        t0 = time.perf_counter()
        m = min(n, 1000)  # the loop is timed on 1,000 keys and scaled: it is linear in the count
        for i in range(m):
            key_cls.generate(image_size=32, block_size=8, seed=i)
        t_loop = (time.perf_counter() - t0) * n / m
        t0 = time.perf_counter()
        keyset = cls.from_keys(keys).to(device)
        t_tables = time.perf_counter() - t0
        gen_rows.append((name, t_many, t_loop, t_tables))
        single = cls(key=keys[0]).to(device)

        y = keyset(x, key_ids=ids)
        if not torch.equal(keyset.inverse(y, key_ids=ids), x):
            raise SystemExit(f"{name} key set: inverse(forward(x)) != x")
        spot = ids[:64].tolist()  # spot-check against each image's own single-key cipher
        if not all(torch.equal(y[j:j + 1], cls(key=keys[k]).to(device)(x[j:j + 1])) for j, k in enumerate(spot)):
            raise SystemExit(f"{name} key set: differs from the single-key cipher of an image's key")
        t_single, t_set, t_set_inv = paired_times(
            [lambda: single(x), lambda: keyset(x, key_ids=ids), lambda: keyset.inverse(y, key_ids=ids)],
            repeats, device)
        rows = [("single key: cipher(x)", t_single),
                ("key per image: cipher(x, key_ids)  [target <= 2x]", t_set),
                ("key per image: cipher.inverse(y, key_ids)", t_set_inv)]
        if name == "BlockScramble":
            perms = torch.from_numpy(np.stack([k.block_perm for k in keys]))[ids.cpu()].to(device)
            if not torch.equal(scramble_blocks(x, perms, 8), y):
                raise SystemExit("scramble_blocks disagrees with the key set")
            rows.append(("scramble_blocks(x, (N, nb) perms, 8)",
                         best_time(lambda: scramble_blocks(x, perms, 8), repeats, device)))
        t0 = time.perf_counter()
        ciphers = [cls(key=k).to(device) for k in keys]  # N single-key ciphers
        t_old_tables = time.perf_counter() - t0
        enc = EncryptBatch(ciphers)
        if not torch.equal(enc(x, keys=ids), y):
            raise SystemExit(f"{name}: EncryptBatch disagrees with the key set")
        rows.append((f"EncryptBatch over {n} ciphers (its key set)",
                     best_time(lambda: enc(x, keys=ids), repeats, device)))
        order = torch.argsort(ids)
        uniq, counts = torch.unique_consecutive(ids[order], return_counts=True)
        groups = list(zip(uniq.tolist(), torch.split(order, counts.tolist())))

        def per_key_loop() -> torch.Tensor:  # the baseline: one call per key
            out = torch.empty_like(x)
            for k, sel in groups:
                out[sel] = ciphers[k](x.index_select(0, sel))
            return out

        if not torch.equal(per_key_loop(), y):
            raise SystemExit(f"{name}: the per-key loop disagrees with the key set")
        rows.append((f"baseline: Python loop over {n} keys", best_time(per_key_loop, old_repeats, device)))
        gen_rows[-1] += (t_old_tables,)
        for path, t in rows:
            print(f"{name:<16}{path:<52}{t * 1e3:>10.1f}{t / t_single:>14.2f}")
        del enc, ciphers
    print()
    print(f"key generation and tables for {n} keys (not part of the ratios):")
    for name, t_many, t_loop, t_tables, t_old in gen_rows:
        print(f"  {name:<14} generate_many {t_many * 1e3:8.1f} ms   loop of generate ~{t_loop * 1e3:8.1f} ms "
              f"(x{t_loop / t_many:.0f})   key-set tables {t_tables * 1e3:8.1f} ms   "
              f"{n} single-key ciphers {t_old * 1e3:8.1f} ms")
    t0 = time.perf_counter()
    block_scramble_keys(n, image_size=32, block_size=8, seed=0)
    print(f"  (block_scramble_keys({n}), today's key-set helper: {(time.perf_counter() - t0) * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
