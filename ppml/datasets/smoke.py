"""The embedded Fashion-MNIST sample (``data/fashion_mnist_smoke.npz``): checksums and loading."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import torch

from ppml.datasets import base as _base
from ppml.datasets.base import (
    FASHION_MNIST_CLASSES, SMOKE_ARRAYS, SMOKE_CONTENT_SHA256, SMOKE_SHA256, DatasetCorrupt, DatasetNotAvailable,
    ImageData, dataset_requirements,
)
from ppml.datasets.geometry import _grey_geometry



# --------------------------------------------------------------------------------------------
# The embedded Fashion-MNIST sample
# --------------------------------------------------------------------------------------------

def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_sha256(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of the smoke sample's arrays, in
    :data:`SMOKE_ARRAYS` order: independent of how the ``.npz`` was compressed."""
    h = hashlib.sha256()
    for name in SMOKE_ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=2)
def _smoke_arrays_cached(path: str, mtime_ns: int, size: int) -> dict[str, np.ndarray]:
    p = Path(path)
    digest = _sha256_file(p)
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in SMOKE_ARRAYS}
    except Exception as e:  # corrupt zip, missing member, pickled content …
        raise DatasetCorrupt(f"{p} cannot be read as the Fashion-MNIST smoke sample ({e}). "
                             f"{dataset_requirements('fashion-mnist-smoke')}") from e
    if digest != SMOKE_SHA256 and content_sha256(arrays) != SMOKE_CONTENT_SHA256:
        raise DatasetCorrupt(f"{p} has sha256 {digest}, expected {SMOKE_SHA256}, and its arrays differ "
                             f"from the published sample: the file is corrupt or was replaced. "
                             f"{dataset_requirements('fashion-mnist-smoke')}")
    for a in arrays.values():
        a.setflags(write=False)
    return arrays


def _smoke_arrays(path: Path | None = None) -> dict[str, np.ndarray]:
    p = Path(path) if path is not None else _base.SMOKE_PATH
    if not p.is_file():
        raise DatasetNotAvailable(f"the embedded Fashion-MNIST smoke sample {p} is missing. "
                                  f"{dataset_requirements('fashion-mnist-smoke')}")
    st = p.stat()
    return _smoke_arrays_cached(str(p), st.st_mtime_ns, st.st_size)


def _load_smoke(split: str, size: int | None, channels: int | None) -> ImageData:
    a = _smoke_arrays()
    x = torch.from_numpy(np.array(a[f"images_{split}"]))
    y = torch.from_numpy(a[f"labels_{split}"].astype(np.int64))
    x, words = _grey_geometry(x, size, channels)
    per = {"train": 500, "test": 100}[split]
    official = {"train": "60,000-image train", "test": "10,000-image test"}[split]
    desc = (f"Fashion-MNIST embedded smoke sample (real images), {split} split: {len(y):,} images "
            f"({per}/class, drawn with a fixed seed from the official {official} split), {words}")
    return ImageData(x, y, FASHION_MNIST_CLASSES, name="fashion-mnist-smoke", description=desc)
