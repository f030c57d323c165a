#!/usr/bin/env python3
"""Rebuild ``data/fashion_mnist_smoke.npz``, the embedded Fashion-MNIST smoke sample.

The sample is 500 training and 100 test images per class (5,000 + 1,000), drawn without
replacement with a fixed seed from the official Fashion-MNIST train and test splits
(Xiao, Rasul & Vollgraf 2017; MIT licence, copyright 2017 Zalando SE). Images stay as
they are in the IDX files (28×28 uint8 grey); padding to 32×32 and replication to three
channels happen at load time in :func:`ppml.datasets.load_dataset`.

Usage::

    apt-get install -y dataset-fashion-mnist        # or a torchvision download
    python scripts/build_fashion_mnist_sample.py \
        --source /usr/share/datasets/fashion-mnist   # default
    python scripts/build_fashion_mnist_sample.py --source data/cache/FashionMNIST/raw

``--source`` is a directory holding the four IDX files, gzipped (``*.gz``, as Debian's
``dataset-fashion-mnist`` package and the upstream site ship them) or not (as torchvision
leaves them in ``<root>/FashionMNIST/raw``). The decompressed IDX bytes are checked against
known sha256 digests before sampling.

The output is deterministic: same indices, same arrays, and a zip written with fixed
timestamps and member order, so with the same zlib the file is byte-identical. The script
prints the file's sha256 and the sha256 of the array contents (independent of zlib); both
are recorded in ``ppml/datasets/base.py`` (``SMOKE_SHA256``, ``SMOKE_CONTENT_SHA256``) and
``data/README.md``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

# The checksums of the official IDX files, the npz member order and the content hash are
# defined once, in ppml.datasets (which loads what this script writes; `make install` first).
from ppml.datasets import FASHION_MNIST_IDX_SHA256 as IDX_SHA256
from ppml.datasets import SMOKE_ARRAYS as ARRAY_ORDER
from ppml.datasets import content_sha256

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_OUT = REPO / "data" / "fashion_mnist_smoke.npz"

SEED = 2017
TRAIN_PER_CLASS = 500
TEST_PER_CLASS = 100



def read_idx_bytes(source: Path, stem: str) -> bytes:
    """Return the decompressed bytes of IDX file ``stem`` from ``source`` (``.gz`` or plain)."""
    plain, gz = source / stem, source / f"{stem}.gz"
    if plain.is_file():
        data = plain.read_bytes()
    elif gz.is_file():
        with gzip.open(gz, "rb") as f:
            data = f.read()
    else:
        raise FileNotFoundError(
            f"neither {plain} nor {gz} exists; pass --source DIR holding the four Fashion-MNIST "
            "IDX files (apt-get install -y dataset-fashion-mnist puts them in "
            f"{DEFAULT_SOURCE})")
    digest = hashlib.sha256(data).hexdigest()
    if digest != IDX_SHA256[stem]:
        raise ValueError(f"{stem}: sha256 {digest} differs from the official file's "
                         f"{IDX_SHA256[stem]}; the source file is corrupt or not Fashion-MNIST")
    return data


def parse_idx(data: bytes) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (magic 0x0000080N) into an array."""
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError("not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(shape)


def class_balanced_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` indices of each class drawn without replacement; returned sorted."""
    picks = [rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
             for c in range(10)]
    return np.sort(np.concatenate(picks))


def write_npz_deterministic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``np.load``-compatible compressed npz with fixed timestamps and order."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in ARRAY_ORDER:
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]),
                                      allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def build(source: Path) -> dict[str, np.ndarray]:
    """Draw the sample from the IDX files in ``source``; returns the arrays."""
    x_tr = parse_idx(read_idx_bytes(source, "train-images-idx3-ubyte"))
    y_tr = parse_idx(read_idx_bytes(source, "train-labels-idx1-ubyte"))
    x_te = parse_idx(read_idx_bytes(source, "t10k-images-idx3-ubyte"))
    y_te = parse_idx(read_idx_bytes(source, "t10k-labels-idx1-ubyte"))
    assert x_tr.shape == (60000, 28, 28) and x_te.shape == (10000, 28, 28)
    rng = np.random.default_rng(SEED)
    i_tr = class_balanced_indices(y_tr, TRAIN_PER_CLASS, rng)
    i_te = class_balanced_indices(y_te, TEST_PER_CLASS, rng)
    return {
        "images_train": x_tr[i_tr], "labels_train": y_tr[i_tr], "indices_train": i_tr.astype(np.int32),
        "images_test": x_te[i_te], "labels_test": y_te[i_te], "indices_test": i_te.astype(np.int32),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                   help="directory with the four Fashion-MNIST IDX files (.gz or plain); "
                        f"default {DEFAULT_SOURCE} (Debian package dataset-fashion-mnist)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output npz (default {DEFAULT_OUT})")
    args = p.parse_args(argv)
    arrays = build(args.source)
    write_npz_deterministic(args.out, arrays)
    file_digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")
    print(f"train {arrays['images_train'].shape}, test {arrays['images_test'].shape}, "
          f"seed {SEED}, per class {TRAIN_PER_CLASS}/{TEST_PER_CLASS}")
    print(f"file sha256    {file_digest}")
    print(f"content sha256 {content_sha256(arrays)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
