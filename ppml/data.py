"""Data sets by name, the embedded Fashion-MNIST default, real photo crops, batch augmentation
and encryption inside the training pipeline.

Everything here keeps a whole data set in memory as one ``uint8`` tensor ``(N, C, H, W)``
(:class:`ImageData`). Training loops batch it with tensor indexing and apply the batch
transforms below (:class:`RandomCrop`, :class:`RandomHorizontalFlip`, :class:`GridMask`,
:class:`EncryptBatch`, :class:`ToFloat`, :class:`Compose`) to a whole batch at once, with no
Python loop over images and no PIL.

**Randomness.** Every batch transform is called as ``t(x, generator)`` and takes *all* its
random numbers from ``generator`` (a :class:`torch.Generator`), so a run is reproducible and
resumable: save ``generator.get_state()`` in the checkpoint. Random numbers are drawn on the
generator's device and then moved to the batch's device, so a CPU generator gives the *same*
augmentation for a batch on CPU and on CUDA (recommended); a CUDA generator also works, with
CUDA's own stream of numbers. ``generator=None`` falls back to torch's global RNG.

**Data sets** (:func:`load_dataset`): ``cifar10``, ``cifar100``, ``svhn``, ``imagenette``
(torchvision loaders; downloaded only when asked, otherwise a :class:`DatasetNotAvailable`
error says where to put the files), ``fashion-mnist`` (the full real data set, from the Debian
package ``dataset-fashion-mnist`` offline or torchvision online) and ``fashion-mnist-smoke``,
the committed class-balanced sample of real Fashion-MNIST that makes the smoke scale real and
offline. See ``data/README.md`` for provenance, licences and checksums.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ppml.ciphers import cipher_for
from ppml.loader import BatchLoader as _BatchLoader
from ppml.utils import atomic_write, progress

__all__ = [
    "ImageData", "DatasetNotAvailable", "DatasetCorrupt", "DATASETS", "SPLITS",
    "load_dataset", "dataset_available", "dataset_requirements", "default_root",
    "photo_crops", "PHOTO_SOURCES", "train_val_split",
    "BatchTransform", "RandomCrop", "RandomHorizontalFlip", "GridMask", "EncryptBatch",
    "ToFloat", "Compose",
    "scramble_blocks", "unscramble_blocks", "mirror_block_perm", "hflip", "identity", "block_scramble_keys",
    "PerImageBlockScramble", "FreshBlockScramble", "IndexedBatchLoader", "ScramblePipelines",
    "block_scramble_pipelines", "GRIDMASK_32", "ENCRYPT_MODES",
    "FASHION_MNIST_CLASSES", "SMOKE_PATH", "SMOKE_SHA256", "SMOKE_CONTENT_SHA256",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The embedded sample (see ``data/README.md`` and ``scripts/build_fashion_mnist_sample.py``).
SMOKE_PATH = REPO_ROOT / "data" / "fashion_mnist_smoke.npz"
#: sha256 of the committed ``data/fashion_mnist_smoke.npz`` file.
SMOKE_SHA256 = "4cf2656f3fb3870bdb297bef7ab7167298970d20046382b7f1ba45efec21e621"
#: sha256 of its array contents (names, dtypes, shapes, bytes; independent of zlib), so a
#: rebuild with another zlib that compresses differently is still recognised as the same data.
SMOKE_CONTENT_SHA256 = "78f2eabea48c5717975d48bcd55c7d90fb6acae5f555f0b6f31edb7691bc9b84"
SMOKE_ARRAYS = ("images_train", "labels_train", "indices_train",
                 "images_test", "labels_test", "indices_test")

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
#: sha256 of the decompressed Fashion-MNIST IDX files (Debian only recompressed the .gz).
FASHION_MNIST_IDX_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

#: Data set names :func:`load_dataset` knows.
DATASETS = ("cifar10", "cifar100", "svhn", "imagenette", "fashion-mnist", "fashion-mnist-smoke")
#: Valid splits per data set (Imagenette's ``"test"`` is an alias of its ``"val"`` split).
SPLITS = {
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "svhn": ("train", "test", "extra"),
    "imagenette": ("train", "val", "test"),
    "fashion-mnist": ("train", "test"),
    "fashion-mnist-smoke": ("train", "test"),
}
_IMAGENETTE_VARIANTS = {"full": "imagenette2", "320px": "imagenette2-320", "160px": "imagenette2-160"}
_SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}


class DatasetNotAvailable(FileNotFoundError):
    """A data set's files are missing (and downloading is off or failed); the message says
    which data set, which directory the files belong in, and how to get them."""


class DatasetCorrupt(RuntimeError):
    """A data file exists but fails its checksum or cannot be read."""


# --------------------------------------------------------------------------------------------
# The in-memory data set
# --------------------------------------------------------------------------------------------

class ImageData(Dataset):
    """A labelled image data set held in memory as one uint8 tensor.

    Attributes: ``images`` uint8 ``(N, C, H, W)``, ``labels`` int64 ``(N,)``, ``classes``
    (class names, index = label), ``name`` (short id) and ``description`` (what exactly it
    is: source, split, size, padding, channels). ``data[i]`` is ``(image uint8 CHW, label int)``.

    >>> d = ImageData(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]),
    ...               ["a", "b"], name="toy", description="4 black 8×8 images")
    >>> len(d), d.num_classes, d.image_shape, d[1][1]
    (4, 2, (3, 8, 8), 1)
    >>> d.subset(1).labels.tolist()
    [0, 1]
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | Sequence[int],
                 classes: Sequence[str], *, name: str, description: str) -> None:
        images = torch.as_tensor(images)
        labels = torch.as_tensor(labels)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W); got {images.dtype} "
                             f"{tuple(images.shape)} — convert with (x * 255).round().to(torch.uint8)")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must be 1-D with one label per image: {tuple(labels.shape)} "
                             f"labels for {images.shape[0]} images")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integers, got {labels.dtype}")
        labels = labels.to(torch.int64)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
            raise ValueError(f"labels must lie in [0, {len(classes)}) for {len(classes)} classes; "
                             f"got range [{int(labels.min())}, {int(labels.max())}]")
        self.images = images
        self.labels = labels
        self.classes = list(classes)
        self.name = name
        self.description = description

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (f"ImageData(name={self.name!r}, n={len(self)}, shape={self.image_shape}, "
                f"classes={self.num_classes}: {self.description})")

    def subset(self, n_per_class: int | None = None, *, indices: Sequence[int] | torch.Tensor | None = None,
               seed: int = 0) -> "ImageData":
        """A new :class:`ImageData` with ``n_per_class`` images of every class (drawn without
        replacement with ``seed``, kept in their original order) or exactly ``indices``.

        >>> d = ImageData(torch.zeros(6, 1, 2, 2, dtype=torch.uint8), [0, 0, 0, 1, 1, 1], ["a", "b"],
        ...               name="toy", description="toy")
        >>> d.subset(2).labels.tolist(), d.subset(indices=[5, 0]).labels.tolist()
        ([0, 0, 1, 1], [1, 0])
        """
        if (n_per_class is None) == (indices is None):
            raise ValueError("give exactly one of n_per_class or indices")
        if indices is not None:
            idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
            if idx.numel() and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
                raise ValueError(f"indices out of range for a data set of {len(self)} images")
            note = f"subset of {idx.numel()} given indices"
        else:
            if not isinstance(n_per_class, int) or n_per_class < 1:
                raise ValueError(f"n_per_class must be a positive int, got {n_per_class!r}")
            g = torch.Generator().manual_seed(seed)
            picks = []
            for c in range(self.num_classes):
                members = torch.nonzero(self.labels == c).reshape(-1)
                if members.numel() == 0:
                    continue
                if members.numel() < n_per_class:
                    raise ValueError(f"class {c} ({self.classes[c]!r}) has only {members.numel()} "
                                     f"images, fewer than n_per_class={n_per_class}; use a smaller n")
                picks.append(members[torch.randperm(members.numel(), generator=g)[:n_per_class]])
            idx = torch.sort(torch.cat(picks)).values if picks else torch.zeros(0, dtype=torch.int64)
            note = f"subset of {n_per_class}/class (seed {seed})"
        return ImageData(self.images[idx], self.labels[idx], self.classes, name=self.name,
                         description=f"{self.description}; {note}: {idx.numel():,} images")

    def to_float(self) -> torch.Tensor:
        """All images as float32 in [0, 1] (a new tensor; the data set stays uint8).

        >>> ImageData(torch.full((1, 1, 1, 1), 255, dtype=torch.uint8), [0], ["a"], name="t",
        ...           description="t").to_float().tolist()
        [[[[1.0]]]]
        """
        return self.images.to(torch.float32) / 255.0

    def to(self, device: torch.device | str) -> "ImageData":
        """The same data set with images and labels on ``device`` (e.g. whole set on the GPU)."""
        return ImageData(self.images.to(device), self.labels.to(device), self.classes,
                         name=self.name, description=self.description)


# --------------------------------------------------------------------------------------------
# Locations, availability and error messages
# --------------------------------------------------------------------------------------------

def default_root() -> Path:
    """Cache directory for downloaded data sets: ``$PPML_DATA`` or ``<repo>/data/cache``.

    >>> isinstance(default_root(), Path)
    True
    """
    env = os.environ.get("PPML_DATA", "").strip()
    return Path(env).expanduser() if env else REPO_ROOT / "data" / "cache"


def _norm_name(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"data set name must be a string, one of {', '.join(DATASETS)}; got {name!r}")
    key = name.strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "fashion-mnist-full": "fashion-mnist",
           "cifar-10": "cifar10", "cifar-100": "cifar100"}.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
    return key


def _norm_split(name: str, split: str) -> str:
    if split not in SPLITS[name]:
        raise ValueError(f"unknown split {split!r} for {name}; valid splits: {', '.join(SPLITS[name])}")
    return "val" if (name == "imagenette" and split == "test") else split


def _check_variant(variant: str) -> str:
    if variant not in _IMAGENETTE_VARIANTS:
        raise ValueError(f"unknown Imagenette variant {variant!r}; valid: {', '.join(_IMAGENETTE_VARIANTS)}")
    return variant


def _root(root: str | os.PathLike | None) -> Path:
    return Path(root).expanduser() if root is not None else default_root()


def _download_default(download: bool | None) -> bool:
    if download is None:
        return os.environ.get("PPML_DOWNLOAD", "").strip() not in ("", "0", "false", "False")
    return bool(download)


def _expected_location(name: str, root: Path, variant: str = "320px") -> str:
    return {
        "cifar10": f"{root / 'cifar-10-batches-py'}",
        "cifar100": f"{root / 'cifar-100-python'}",
        "svhn": f"{root / 'svhn'}",
        "imagenette": f"{root / _IMAGENETTE_VARIANTS[variant]}",
        "fashion-mnist": f"{root / 'FashionMNIST' / 'raw'}",
        "fashion-mnist-smoke": f"{SMOKE_PATH}",
    }[name]


def dataset_requirements(name: str, root: str | os.PathLike | None = None, *,
                         variant: str = "320px") -> str:
    """What data set ``name`` needs on disk and how to get it (for a runner's ``--dry-run``).

    >>> "cifar-10-batches-py" in dataset_requirements("cifar10", root="/data")
    True
    """
    name = _norm_name(name)
    variant = _check_variant(variant)
    r = _root(root)
    where = _expected_location(name, r, variant)
    online = (f"run once with download=True (or PPML_DOWNLOAD=1) on a machine with internet; "
              f"torchvision downloads and md5-checks it into {r}")
    text = {
        "cifar10": (f"CIFAR-10: torchvision's folder 'cifar-10-batches-py' (data_batch_1..5, test_batch, "
                    f"batches.meta) in {where}. To get it: {online}, or copy an existing "
                    f"'cifar-10-batches-py' folder (e.g. from ~/.torch or another torchvision root) there."),
        "cifar100": (f"CIFAR-100: torchvision's folder 'cifar-100-python' (train, test, meta) in {where}. "
                     f"To get it: {online}, or copy an existing 'cifar-100-python' folder there."),
        "svhn": (f"SVHN: the cropped-digit files train_32x32.mat / test_32x32.mat / extra_32x32.mat "
                 f"(format 2, as torchvision.datasets.SVHN downloads them) in {where}. To get them: "
                 f"{online.replace(str(r), where)}, or copy the .mat files there."),
        "imagenette": (f"Imagenette ({variant} variant): torchvision's extracted folder "
                       f"'{_IMAGENETTE_VARIANTS[variant]}' with train/ and val/ in {r}. To get it: {online}, "
                       f"or extract the fast.ai archive '{_IMAGENETTE_VARIANTS[variant]}.tgz' into {r}."),
        "fashion-mnist": (f"Fashion-MNIST (full): the four IDX files (train-images-idx3-ubyte, ...) in {where}, "
                          f"or the Debian package that provides them offline: "
                          f"'apt-get install -y dataset-fashion-mnist' (files in {DEBIAN_FASHION_MNIST}; "
                          f"they are gunzipped into {where} on first use), or {online}."),
        "fashion-mnist-smoke": (f"Fashion-MNIST smoke sample: the committed file {where} (sha256 {SMOKE_SHA256}). "
                                f"If it is missing or altered: 'git checkout -- data/fashion_mnist_smoke.npz', or "
                                f"rebuild it with 'python scripts/build_fashion_mnist_sample.py' after "
                                f"'apt-get install -y dataset-fashion-mnist'."),
    }[name]
    return text


def _fashion_raw_present(raw: Path, split: str | None) -> bool:
    stems = _fashion_stems(split)
    return all((raw / s).is_file() for s in stems)


def _fashion_stems(split: str | None) -> list[str]:
    if split is None:
        return list(FASHION_MNIST_IDX_SHA256)
    prefix = "train" if split == "train" else "t10k"
    return [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]


def dataset_available(name: str, root: str | os.PathLike | None = None, *, split: str | None = None,
                      variant: str = "320px") -> bool:
    """True when data set ``name`` (all its splits, or just ``split``) is on disk, so
    :func:`load_dataset` will not need to download. Checks file presence, not checksums
    (except for the small embedded sample, whose sha256 is checked).

    >>> dataset_available("fashion-mnist-smoke")
    True
    >>> import tempfile; dataset_available("cifar10", root=tempfile.mkdtemp())
    False
    """
    name = _norm_name(name)
    variant = _check_variant(variant)
    splits = [_norm_split(name, split)] if split is not None else [
        s for s in SPLITS[name] if not (name == "imagenette" and s == "test") and s != "extra"]
    r = _root(root)
    if name == "cifar10":
        d = r / "cifar-10-batches-py"
        files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        return all((d / f).is_file() for s in splits for f in files[s]) and (d / "batches.meta").is_file()
    if name == "cifar100":
        d = r / "cifar-100-python"
        return all((d / s).is_file() for s in splits) and (d / "meta").is_file()
    if name == "svhn":
        return all((r / "svhn" / _SVHN_FILES[s]).is_file() for s in splits)
    if name == "imagenette":
        return all((r / _IMAGENETTE_VARIANTS[variant] / s).is_dir() for s in splits)
    if name == "fashion-mnist":  # torchvision needs all four IDX files for either split
        return (_fashion_raw_present(r / "FashionMNIST" / "raw", None)
                or all((DEBIAN_FASHION_MNIST / f"{s}.gz").is_file() for s in FASHION_MNIST_IDX_SHA256))
    # fashion-mnist-smoke
    try:
        _smoke_arrays()
    except (DatasetNotAvailable, DatasetCorrupt):
        return False
    return True


def _not_available(name: str, root: Path, split: str, variant: str = "320px",
                   reason: str = "") -> DatasetNotAvailable:
    why = f" ({reason})" if reason else ""
    return DatasetNotAvailable(
        f"data set {name!r} (split {split!r}) is not available under {root}{why}. "
        f"{dataset_requirements(name, root, variant=variant)}")


# --------------------------------------------------------------------------------------------
# Image geometry helpers (whole tensors)
# --------------------------------------------------------------------------------------------

def _resize_square(images: torch.Tensor, size: int, chunk: int = 1024) -> torch.Tensor:
    """Resize uint8 ``(N, C, H, W)`` so the shorter side is ``size`` (bilinear, antialiased),
    then centre-crop to ``size × size``."""
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    out = torch.empty(n, c, size, size, dtype=torch.uint8)
    top, left = (nh - size) // 2, (nw - size) // 2
    for s in range(0, n, chunk):
        x = images[s:s + chunk].to(torch.float32)
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        out[s:s + chunk] = x[:, :, top:top + size, left:left + size].round().clamp(0, 255).to(torch.uint8)
    return out


def _to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        # ITU-R BT.601 luma, the usual RGB→grey conversion (as PIL's convert("L")).
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.to(torch.float32) * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise ValueError(f"cannot convert {c} channels to {channels}")


def _check_channels(channels: int | None) -> None:
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None (the data set's default); got {channels!r}")


def _check_size(size: int | None) -> None:
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise ValueError(f"size must be a positive int (output height = width) or None; got {size!r}")


def _grey_geometry(images28: torch.Tensor, size: int | None, channels: int | None) -> tuple[torch.Tensor, str]:
    """Zero-pad 28×28 grey images centrally to ``size`` (default 32) and replicate to
    ``channels`` (default 3). Returns the images and the words for the description."""
    size = 32 if size is None else size
    channels = 3 if channels is None else channels
    if size < 28:
        raise ValueError(f"size {size} < 28: Fashion-MNIST images are only zero-padded, never shrunk; "
                         f"use size >= 28 (32 makes blocks of 4, 8 and 16 divide the image)")
    extra = size - 28
    top, left = extra // 2, extra // 2
    x = F.pad(images28.unsqueeze(1), (left, extra - left, top, extra - top), value=0)
    x = _to_channels(x, channels)
    if extra == 0:
        words = "28×28 grey (no padding)"
    elif extra % 2 == 0:
        words = f"28×28 grey zero-padded to {size}×{size} ({extra // 2} px each side)"
    else:
        words = f"28×28 grey zero-padded to {size}×{size} ({top} px top/left, {extra - top} px bottom/right)"
    words += ", replicated to 3 channels" if channels == 3 else ", 1 channel"
    return x.contiguous(), words


def _colour_geometry(images: torch.Tensor, size: int | None, channels: int | None,
                     native: int) -> tuple[torch.Tensor, str]:
    size = native if size is None else size
    channels = 3 if channels is None else channels
    x = _resize_square(images, size)
    words = f"{native}×{native} RGB" if size == native else \
        f"{native}×{native} RGB resized to {size}×{size} (bilinear, antialiased)"
    if channels == 1:
        x = _to_channels(x, 1)
        words += ", converted to grey (BT.601 luma)"
    return x, words


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
    p = Path(path) if path is not None else SMOKE_PATH
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


# --------------------------------------------------------------------------------------------
# Full data sets through torchvision
# --------------------------------------------------------------------------------------------

def _prepare_fashion_raw(root: Path, split: str, download: bool) -> None:
    """Make ``root/FashionMNIST/raw`` hold the decompressed IDX files of ``split``: already
    there, gunzipped from the Debian package, or downloaded by torchvision."""
    raw = root / "FashionMNIST" / "raw"
    # torchvision's FashionMNIST checks for all four files whichever split is asked for.
    stems = _fashion_stems(None)
    if all((raw / s).is_file() for s in stems):
        return
    if all((DEBIAN_FASHION_MNIST / f"{s}.gz").is_file() for s in stems):
        raw.mkdir(parents=True, exist_ok=True)
        for s in stems:
            if not (raw / s).is_file():
                with gzip.open(DEBIAN_FASHION_MNIST / f"{s}.gz", "rb") as src, atomic_write(raw / s) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        return
    if download:
        from torchvision.datasets import FashionMNIST
        try:
            FashionMNIST(str(root), train=(split == "train"), download=True)
        except Exception as e:
            raise _not_available("fashion-mnist", root, split, reason=f"download failed: {e}") from e
        return
    raise _not_available("fashion-mnist", root, split, reason="IDX files not found and downloading is off")


def _verify_fashion_raw(root: Path, split: str) -> None:
    raw = root / "FashionMNIST" / "raw"
    for s in _fashion_stems(split):
        digest = _sha256_file(raw / s)
        if digest != FASHION_MNIST_IDX_SHA256[s]:
            raise DatasetCorrupt(f"{raw / s} has sha256 {digest}, expected {FASHION_MNIST_IDX_SHA256[s]}: "
                                 f"corrupt or not Fashion-MNIST. Delete it and load again "
                                 f"({dataset_requirements('fashion-mnist', root)})")


def _load_fashion(root: Path, split: str, download: bool, size: int | None,
                  channels: int | None) -> ImageData:
    _prepare_fashion_raw(root, split, download)
    _verify_fashion_raw(root, split)
    from torchvision.datasets import FashionMNIST
    try:
        ds = FashionMNIST(str(root), train=(split == "train"), download=False)
    except RuntimeError as e:
        raise _not_available("fashion-mnist", root, split, reason=str(e)) from e
    x, words = _grey_geometry(ds.data.to(torch.uint8), size, channels)
    y = ds.targets.to(torch.int64)
    desc = f"Fashion-MNIST (full, real images), {split} split: {len(y):,} images, {words}"
    return ImageData(x, y, FASHION_MNIST_CLASSES, name="fashion-mnist", description=desc)


def _torchvision_call(name: str, root: Path, split: str, download: bool, make: Callable[[bool], Any],
                      present: bool, variant: str = "320px") -> Any:
    if not present and not download:
        raise _not_available(name, root, split, variant,
                             reason="files not found and downloading is off (download=False, PPML_DOWNLOAD unset)")
    try:
        return make(download and not present)
    except (RuntimeError, OSError) as e:
        reason = f"download failed: {e}" if download and not present else f"torchvision could not load it: {e}"
        raise _not_available(name, root, split, variant, reason=reason) from e


def _standin_class(cls: type, root: Path) -> type:
    """torchvision's reader ``cls`` as it is, or — in a rehearsal stand-in root (the marker file
    written by :mod:`ppml.rehearsal`) — with its md5 checks of the real files turned into
    presence checks, so that stand-in files in the real format load through the same code."""
    if not (root / ".ppml-rehearsal").is_file():
        return cls
    attrs: dict[str, Any] = {}
    if hasattr(cls, "train_list"):  # CIFAR-10/100
        attrs = {"train_list": [[f, None] for f, _ in cls.train_list],
                 "test_list": [[f, None] for f, _ in cls.test_list], "meta": {**cls.meta, "md5": None}}
    elif hasattr(cls, "split_list"):  # SVHN
        attrs = {"split_list": {k: [u, f, None] for k, (u, f, _) in cls.split_list.items()}}
    return type(f"Standin{cls.__name__}", (cls,), attrs)


def _load_cifar(name: str, root: Path, split: str, download: bool, size: int | None,
                channels: int | None) -> ImageData:
    from torchvision.datasets import CIFAR10, CIFAR100
    cls = _standin_class(CIFAR10 if name == "cifar10" else CIFAR100, root)
    present = dataset_available(name, root, split=split)
    ds = _torchvision_call(name, root, split, download,
                           lambda dl: cls(str(root), train=(split == "train"), download=dl), present)
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    x, words = _colour_geometry(x, size, channels, 32)
    y = torch.as_tensor(ds.targets, dtype=torch.int64)
    title = "CIFAR-10" if name == "cifar10" else "CIFAR-100 (100 fine classes)"
    desc = f"{title} (real images, torchvision), {split} split: {len(y):,} images, {words}"
    return ImageData(x, y, list(ds.classes), name=name, description=desc)


def _load_svhn(root: Path, split: str, download: bool, size: int | None, channels: int | None) -> ImageData:
    from torchvision.datasets import SVHN
    d = root / "svhn"
    present = dataset_available("svhn", root, split=split)
    ds = _torchvision_call("svhn", root, split, download,
                           lambda dl: _standin_class(SVHN, root)(str(d), split=split, download=dl), present)
    x = torch.from_numpy(np.ascontiguousarray(ds.data))  # already (N, 3, 32, 32) uint8
    x, words = _colour_geometry(x, size, channels, 32)
    y = torch.as_tensor(ds.labels, dtype=torch.int64)
    desc = f"SVHN cropped digits (real images, torchvision), {split} split: {len(y):,} images, {words}"
    return ImageData(x, y, [str(i) for i in range(10)], name="svhn", description=desc)


def _load_imagenette(root: Path, split: str, download: bool, size: int | None, channels: int | None,
                     variant: str, cache: bool) -> ImageData:
    from PIL import Image
    from torchvision.datasets import Imagenette
    size = 224 if size is None else size
    channels = 3 if channels is None else channels
    present = dataset_available("imagenette", root, split=split, variant=variant)
    ds = _torchvision_call("imagenette", root, split, download,
                           lambda dl: Imagenette(str(root), split=split, size=variant, download=dl),
                           present, variant)
    samples = list(ds._samples)  # (path, label); torchvision keeps them sorted by class then file
    cache_file = root / "ppml_tensors" / f"{_IMAGENETTE_VARIANTS[variant]}_{split}_{size}.pt"
    x = None
    if cache and cache_file.is_file():
        blob = torch.load(cache_file, weights_only=True)
        if blob.get("n") == len(samples) and blob["images"].shape[-1] == size:
            x = blob["images"]
    if x is None:
        x = torch.empty(len(samples), 3, size, size, dtype=torch.uint8)
        for i, (path, _) in enumerate(progress(samples, desc=f"imagenette {split} → {size}px")):
            with Image.open(path) as im:
                im = im.convert("RGB")
                w, h = im.size
                s = size / min(w, h)
                nw, nh = max(size, round(w * s)), max(size, round(h * s))
                im = im.resize((nw, nh), Image.Resampling.BILINEAR)  # PIL antialiases when shrinking
                left, top = (nw - size) // 2, (nh - size) // 2
                im = im.crop((left, top, left + size, top + size))
                x[i] = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
        if cache:
            with atomic_write(cache_file) as f:
                torch.save({"n": len(samples), "images": x}, f)
    words = f"shorter side resized to {size} (bilinear) and centre-cropped to {size}×{size} RGB"
    if channels == 1:
        x = _to_channels(x, 1)
        words += ", converted to grey (BT.601 luma)"
    y = torch.as_tensor([lab for _, lab in samples], dtype=torch.int64)
    classes = [c[0] if isinstance(c, tuple) else str(c) for c in ds.classes]
    desc = (f"Imagenette ({variant} variant; real ImageNet images, torchvision), {split} split: "
            f"{len(y):,} images, {words}")
    return ImageData(x, y, classes, name="imagenette", description=desc)


def load_dataset(name: str, split: str = "train", *, root: str | os.PathLike | None = None,
                 download: bool | None = None, size: int | None = None, channels: int | None = None,
                 variant: str = "320px", cache: bool = True) -> ImageData:
    """Load data set ``name`` / ``split`` into memory as an :class:`ImageData`.

    Names (:data:`DATASETS`): ``cifar10``, ``cifar100``, ``svhn`` (splits train/test/extra),
    ``imagenette`` (train/val; ``test`` means val), ``fashion-mnist`` (the full real data set),
    ``fashion-mnist-smoke`` (the committed 500 + 100 per class sample; offline, the default
    for smoke runs).

    - ``root``: cache directory (default :func:`default_root`: ``$PPML_DATA`` or
      ``<repo>/data/cache``). Full Fashion-MNIST is also found in the Debian package path
      ``/usr/share/datasets/fashion-mnist`` and gunzipped into ``root/FashionMNIST/raw``.
    - ``download``: ``None`` means ``$PPML_DOWNLOAD == 1``; missing files with downloading off
      (or a failed download) raise :class:`DatasetNotAvailable` saying where to put them.
    - ``size``: output height = width. Grey 28×28 sets are zero-padded centrally (default 32:
      2 px each side, so blocks of 4, 8 and 16 divide the image); colour sets are resized
      (CIFAR/SVHN default 32 = native; Imagenette default 224: shorter side resized then
      centre-cropped).
    - ``channels``: 3 (default; grey images are replicated) or 1 (colour → BT.601 luma).
    - ``variant``: Imagenette download variant ``"320px"`` (default), ``"160px"`` or ``"full"``;
      ``cache``: keep Imagenette's decoded tensor in ``root/ppml_tensors`` for the next load.

    The result's ``description`` says exactly what was loaded.

    >>> d = load_dataset("fashion-mnist-smoke", "test")
    >>> d.images.shape, d.images.dtype, d.labels.bincount().tolist() == [100] * 10
    (torch.Size([1000, 3, 32, 32]), torch.uint8, True)
    >>> d.description  # doctest: +ELLIPSIS
    'Fashion-MNIST embedded smoke sample (real images), test split: 1,000 images (100/class, ...), 28×28 grey zero-padded to 32×32 (2 px each side), replicated to 3 channels'
    """
    name = _norm_name(name)
    split = _norm_split(name, split)
    _check_size(size)
    _check_channels(channels)
    variant = _check_variant(variant)
    if name == "fashion-mnist-smoke":
        return _load_smoke(split, size, channels)
    r = _root(root)
    dl = _download_default(download)
    if name == "fashion-mnist":
        return _load_fashion(r, split, dl, size, channels)
    if name in ("cifar10", "cifar100"):
        out = _load_cifar(name, r, split, dl, size, channels)
    elif name == "svhn":
        out = _load_svhn(r, split, dl, size, channels)
    else:
        out = _load_imagenette(r, split, dl, size, channels, variant, cache)
    if (r / ".ppml-rehearsal").is_file():  # never let a stand-in pass for the real data set
        out.description = "REHEARSAL STAND-IN (synthetic images in the real file format), not " + out.description
    return out


# --------------------------------------------------------------------------------------------
# Real photo crops (unlabelled)
# --------------------------------------------------------------------------------------------

#: Photographs shipped inside scikit-image and scikit-learn (all load with no network here;
#: for ``stereo_motorcycle`` the left view is used). Sizes are (H, W).
PHOTO_SOURCES = {
    "astronaut": (512, 512), "chelsea": (300, 451), "coffee": (400, 600), "rocket": (427, 640),
    "hubble_deep_field": (872, 1000), "immunohistochemistry": (512, 512), "retina": (1411, 1411),
    "stereo_motorcycle": (500, 741), "china": (427, 640), "flower": (427, 640),
}


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> torch.Tensor:
    """Photo ``name`` as uint8 ``(3, H, W)``, loaded once per process."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image
        arr = load_sample_image(f"{name}.jpg")
    else:
        import skimage.data
        arr = getattr(skimage.data, name)()
        if name == "stereo_motorcycle":
            arr = arr[0]
    arr = np.array(arr[..., :3], dtype=np.uint8, order="C")  # own, writable copy
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def photo_crops(n: int, size: int = 32, seed: int = 0, *, sources: Sequence[str] | None = None,
                scale: tuple[float, float] | None = (0.1, 0.5)) -> torch.Tensor:
    """``n`` real colour crops, uint8 ``(n, 3, size, size)``, from photographs that ship with
    scikit-image and scikit-learn (:data:`PHOTO_SOURCES`; no network needed).

    For each crop (deterministic given ``seed``): a photo is chosen uniformly from ``sources``
    (default: all ten); a square window side is drawn uniformly from ``scale`` × the photo's
    shorter side (default 10–50 %, so a 32-pixel crop shows a recognisable piece of scene, like
    a CIFAR image, rather than a few pixels of texture), but never smaller than ``size``; the
    window is placed uniformly at random and downscaled to ``size × size`` (bilinear,
    antialiased). ``scale=None`` takes windows of exactly ``size`` native pixels (no
    resampling). Real natural-image statistics for compression, LPIPS, attack and visual
    studies — not a labelled benchmark.

    >>> x = photo_crops(4, size=16, seed=1)
    >>> x.shape, x.dtype, bool((x == photo_crops(4, size=16, seed=1)).all())
    (torch.Size([4, 3, 16, 16]), torch.uint8, True)
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    _check_size(size)
    names = list(PHOTO_SOURCES) if sources is None else list(sources)
    if not names:
        raise ValueError("sources is empty; give at least one of " + ", ".join(PHOTO_SOURCES))
    bad = [s for s in names if s not in PHOTO_SOURCES]
    if bad:
        raise ValueError(f"unknown photo source(s) {bad}; valid: {', '.join(PHOTO_SOURCES)}")
    too_small = [s for s in names if min(PHOTO_SOURCES[s]) < size]
    if too_small:
        raise ValueError(f"size {size} is larger than photo(s) {too_small}; use a smaller size or other sources")
    if scale is not None:
        lo, hi = (float(v) for v in scale)
        if not (0 < lo <= hi <= 1):
            raise ValueError(f"scale must be (lo, hi) with 0 < lo <= hi <= 1, got {scale!r}")
    g = torch.Generator().manual_seed(int(seed))
    out = torch.empty(n, 3, size, size, dtype=torch.uint8)
    which = torch.randint(len(names), (n,), generator=g)
    u = torch.rand(n, 3, generator=g, dtype=torch.float64)  # window side, top, left
    for i in range(n):  # a one-off data set builder, not a training transform
        img = _photo(names[int(which[i])])
        _, h, w = img.shape
        short = min(h, w)
        if scale is None:
            side = size
        else:
            side = int(round(short * (lo + (hi - lo) * float(u[i, 0]))))
            side = min(max(side, size), short)
        top = int(float(u[i, 1]) * (h - side + 1))
        left = int(float(u[i, 2]) * (w - side + 1))
        win = img[:, top:top + side, left:left + side]
        if side != size:
            win = F.interpolate(win[None].to(torch.float32), size=(size, size), mode="bilinear",
                                antialias=True, align_corners=False)[0].round().clamp(0, 255)
        out[i] = win.to(torch.uint8)
    return out


def train_val_split(data: Any, val_size: int, *, seed: int = 0) -> tuple[Any, Any]:
    """Split an :class:`ImageData` into (train, validation) at random (``seed``), ``val_size``
    images for validation — e.g. paper 04's 45,000/5,000 (CIFAR-10) and 47,500/2,500
    (CIFAR-100) splits of the 50,000 training images.

    >>> d = ImageData(torch.zeros(10, 3, 2, 2, dtype=torch.uint8), list(range(10)), list("abcdefghij"),
    ...               name="toy", description="toy")
    >>> tr, va = train_val_split(d, 3)
    >>> len(tr), len(va), sorted(tr.labels.tolist() + va.labels.tolist()) == list(range(10))
    (7, 3, True)
    """
    n = len(data)
    if not isinstance(val_size, int) or not 0 < val_size < n:
        raise ValueError(f"val_size must be an int in (0, {n}) for a set of {n} images, got {val_size!r}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return data.subset(indices=perm[val_size:].sort().values), data.subset(indices=perm[:val_size].sort().values)


# --------------------------------------------------------------------------------------------
# Batch transforms
# --------------------------------------------------------------------------------------------

def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _check_batch(x: torch.Tensor, who: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who} expects a batch tensor (N, C, H, W); got {shape} — "
                         f"add a batch dimension with x.unsqueeze(0)")
    if not (x.dtype == torch.uint8 or x.is_floating_point()):
        raise ValueError(f"{who} expects uint8 or floating-point images, got {x.dtype}")


class BatchTransform(nn.Module):
    """Base class: ``t(x, generator=None) -> x`` on a whole batch ``(N, C, H, W)``.

    Subclasses draw every random number from ``generator`` (on the generator's device, then
    moved to the batch's device). Being :class:`torch.nn.Module` s, transforms that hold
    tensors (e.g. :class:`EncryptBatch`) follow ``.to(device)``.
    """

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class ToFloat(BatchTransform):
    """uint8 → float32 in [0, 1] (divide by 255); floating input is returned unchanged.

    >>> ToFloat()(torch.tensor([[[[0, 51, 255]]]], dtype=torch.uint8)).flatten().tolist()
    [0.0, 0.20000000298023224, 1.0]
    """

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch(x, "ToFloat")
        return x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x


class Compose(BatchTransform):
    """Apply batch transforms in order, passing the same generator to each.

    >>> t = Compose([RandomHorizontalFlip(p=1.0), ToFloat()])
    >>> t(torch.tensor([[[[0, 255]]]], dtype=torch.uint8), torch.Generator().manual_seed(0)).tolist()
    [[[[1.0, 0.0]]]]
    """

    def __init__(self, transforms: Iterable[Callable[..., torch.Tensor]]) -> None:
        super().__init__()
        self.transforms = list(transforms)
        for i, t in enumerate(self.transforms):
            if not callable(t):
                raise ValueError(f"transform {i} ({t!r}) is not callable; expected t(x, generator)")
            if isinstance(t, nn.Module):
                self.add_module(str(i), t)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for t in self.transforms:
            x = t(x, generator)
        return x

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class RandomHorizontalFlip(BatchTransform):
    """Flip each image left–right independently with probability ``p``.

    >>> x = torch.arange(6, dtype=torch.uint8).view(1, 1, 2, 3)
    >>> bool((RandomHorizontalFlip(p=1.0)(x) == x.flip(-1)).all())
    True
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p!r}")
        self.p = float(p)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch(x, "RandomHorizontalFlip")
        flip = torch.rand(x.shape[0], generator=generator, device=_gen_device(generator)) < self.p
        flip = flip.to(x.device).view(-1, 1, 1, 1)
        return torch.where(flip, x.flip(-1), x)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class RandomCrop(BatchTransform):
    """Pad every image by ``padding`` pixels of value ``fill`` on each side, then crop a
    ``size`` window at an independent uniformly random position per image (as torchvision's
    ``RandomCrop(size, padding)``; CIFAR's standard "crop 32, pad 4"). Vectorised with index
    arithmetic: one gather for the whole batch.

    >>> x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    >>> bool((RandomCrop(4, padding=0)(x, torch.Generator().manual_seed(0)) == x).all())
    True
    """

    def __init__(self, size: int | tuple[int, int], padding: int = 4, fill: float = 0) -> None:
        super().__init__()
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if len(hw) != 2 or any((not isinstance(v, int)) or v < 1 for v in hw):
            raise ValueError(f"size must be a positive int or (h, w) of positive ints, got {size!r}")
        if not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be a non-negative int, got {padding!r}")
        self.size = hw
        self.padding = padding
        self.fill = fill

    def offsets(self, n: int, h: int, w: int, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The random (top, left) crop corners in padded coordinates, each in
        ``[0, h + 2·padding − size_h]`` (resp. width); ``padding`` means no shift."""
        ch, cw = self.size
        hp, wp = h + 2 * self.padding, w + 2 * self.padding
        if ch > hp or cw > wp:
            raise ValueError(f"crop size {self.size} is larger than the padded image ({hp}, {wp}); "
                             f"use a smaller size or more padding")
        dev = _gen_device(generator)
        top = torch.randint(0, hp - ch + 1, (n,), generator=generator, device=dev)
        left = torch.randint(0, wp - cw + 1, (n,), generator=generator, device=dev)
        return top, left

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch(x, "RandomCrop")
        n, c, h, w = x.shape
        top, left = self.offsets(n, h, w, generator)
        top, left = top.to(x.device), left.to(x.device)
        p = self.padding
        xp = F.pad(x, (p, p, p, p), mode="constant", value=self.fill) if p else x
        ch, cw = self.size
        rows = (top[:, None] + torch.arange(ch, device=x.device))[:, None, :, None]  # (N,1,ch,1)
        cols = (left[:, None] + torch.arange(cw, device=x.device))[:, None, None, :]  # (N,1,1,cw)
        b = torch.arange(n, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        return xp[b, ci, rows, cols]

    def extra_repr(self) -> str:
        return f"size={self.size}, padding={self.padding}, fill={self.fill}"


class GridMask(BatchTransform):
    """GridMask (Chen, Liu, Wang & Jia 2020, "GridMask Data Augmentation", arXiv:2001.04086),
    built for a whole batch at once.

    Following the authors' reference code (``imagenet_grid/utils/grid.py``, class ``Grid``), per
    image and with these defaults: with probability ``prob`` the image is masked, else kept;
    the grid unit ``d`` is an integer uniform in ``[d1, d2)``; ``l = floor(d·ratio + 0.5)`` (their
    rounding; equals ``⌈d·ratio⌉`` for the default ``ratio=0.5``) is the width of the *removed*
    stripes: in a mask 1.5× the image size, rows with ``(y − δy) mod d < l`` and columns with
    ``(x − δx) mod d < l`` are set to 0, with random offsets ``δy, δx`` uniform in ``[0, d)``,
    so ``(d − l)²`` of every ``d²`` unit is kept; the mask is rotated by an integer angle
    uniform in ``[0, rotate)`` degrees about its centre (``rotate=1``: no rotation; nearest
    neighbour, PIL's ``Image.rotate`` geometry; points rotated in from outside the mask are 0)
    and centre-cropped to the image; ``mode=1`` inverts it. The image is multiplied by the mask
    (the same for all channels). Expected removed fraction for ``mode=0, rotate=1``:
    ``prob · E_d[1 − (1 − l/d)²]`` (each pixel's row and column phase is uniform over the unit).

    Vectorised: the mask is evaluated analytically at every output pixel (inverse rotation of
    the pixel centre, then the modular stripe test), never drawn image by image. The
    generator is used in this order: apply, d, δy, δx, angle.

    >>> gm = GridMask(4, 5, ratio=0.5, rotate=1, prob=1.0)
    >>> keep = gm.sample_mask(1, 8, 8, torch.Generator().manual_seed(0))
    >>> keep.shape, keep.float().mean().item()   # d = 4, l = 2: (2/4)**2 of the pixels kept
    (torch.Size([1, 8, 8]), 0.25)
    """

    def __init__(self, d1: int, d2: int, ratio: float = 0.5, rotate: int = 1, prob: float = 0.8,
                 mode: int = 0) -> None:
        super().__init__()
        if not (isinstance(d1, int) and isinstance(d2, int)) or not (1 <= d1 < d2):
            raise ValueError(f"need integers 1 <= d1 < d2 (d is drawn from [d1, d2)); got d1={d1!r}, d2={d2!r}")
        if not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f"ratio must lie in [0, 1], got {ratio!r}")
        if not isinstance(rotate, int) or rotate < 1:
            raise ValueError(f"rotate must be an int >= 1 (angles from [0, rotate) degrees; 1 = none), got {rotate!r}")
        if not 0.0 <= float(prob) <= 1.0:
            raise ValueError(f"prob must lie in [0, 1], got {prob!r}")
        if mode not in (0, 1):
            raise ValueError(f"mode must be 0 (remove the grid lines) or 1 (keep only them), got {mode!r}")
        self.d1, self.d2, self.ratio, self.rotate, self.prob, self.mode = d1, d2, float(ratio), rotate, float(prob), mode

    def expected_masked_fraction(self) -> float:
        """``prob · mean_d [1 − (1 − l_d/d)²]`` over ``d ∈ [d1, d2)``: the exact expected
        fraction of removed pixels for ``mode=0, rotate=1`` (approximate with rotation).

        >>> round(GridMask(4, 5, ratio=0.5, prob=1.0).expected_masked_fraction(), 4)
        0.75
        """
        fr = [1 - (1 - math.floor(d * self.ratio + 0.5) / d) ** 2 for d in range(self.d1, self.d2)]
        frac = sum(fr) / len(fr)
        return self.prob * (frac if self.mode == 0 else 1 - frac)

    def sample_mask(self, n: int, h: int, w: int, generator: torch.Generator | None = None,
                    device: torch.device | str | None = None) -> torch.Tensor:
        """Bool keep-mask ``(n, h, w)`` for a batch of ``n`` images (True = pixel kept)."""
        gdev = _gen_device(generator)
        dev = torch.device(device) if device is not None else gdev
        apply = torch.rand(n, generator=generator, device=gdev) < self.prob
        d = torch.randint(self.d1, self.d2, (n,), generator=generator, device=gdev)
        # Offsets uniform in [0, d): float64 so floor(u·d) < d (clamped to be safe).
        st_h = torch.minimum((torch.rand(n, generator=generator, device=gdev, dtype=torch.float64) * d).floor(), d - 1)
        st_w = torch.minimum((torch.rand(n, generator=generator, device=gdev, dtype=torch.float64) * d).floor(), d - 1)
        angle = torch.randint(0, self.rotate, (n,), generator=generator, device=gdev)
        keep = self.mask_from_params(h, w, d.to(dev), st_h.to(dev).long(), st_w.to(dev).long(), angle.to(dev))
        return keep | ~apply.to(dev)[:, None, None]

    def mask_from_params(self, h: int, w: int, d: torch.Tensor, st_h: torch.Tensor, st_w: torch.Tensor,
                         angle: torch.Tensor) -> torch.Tensor:
        """Bool keep-mask ``(n, h, w)`` for given per-image unit ``d``, offsets ``st_h``,
        ``st_w`` (in ``[0, d)``) and integer ``angle`` in degrees (all int tensors ``(n,)``)."""
        dev = d.device
        l = torch.floor(d.to(torch.float64) * self.ratio + 0.5).long()
        hh, ww = int(1.5 * h), int(1.5 * w)
        ys = torch.arange(h, device=dev, dtype=torch.float64) + (hh - h) // 2 + 0.5 - hh / 2
        xs = torch.arange(w, device=dev, dtype=torch.float64) + (ww - w) // 2 + 0.5 - ww / 2
        theta = angle.to(torch.float64) * (math.pi / 180.0)
        cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
        dy, dx = ys[None, :, None], xs[None, None, :]
        # PIL's rotate(angle) samples the source at R(−angle)·(p − c) + c for output pixel p.
        sx = torch.floor(cos * dx - sin * dy + ww / 2).long()
        sy = torch.floor(sin * dx + cos * dy + hh / 2).long()
        inside = (sx >= 0) & (sx < ww) & (sy >= 0) & (sy < hh)
        dd, ll = d[:, None, None], l[:, None, None]
        row_cut = torch.remainder(sy - st_h[:, None, None], dd) < ll
        col_cut = torch.remainder(sx - st_w[:, None, None], dd) < ll
        keep = inside & ~row_cut & ~col_cut
        return ~keep if self.mode == 1 else keep

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch(x, "GridMask")
        n, _, h, w = x.shape
        keep = self.sample_mask(n, h, w, generator, device=x.device)
        return torch.where(keep[:, None], x, torch.zeros((), dtype=x.dtype, device=x.device))

    def extra_repr(self) -> str:
        return (f"d1={self.d1}, d2={self.d2}, ratio={self.ratio}, rotate={self.rotate}, "
                f"prob={self.prob}, mode={self.mode}")


class _Fn(nn.Module):
    """Wrap a plain function as a module (so it can sit in a ModuleList)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class EncryptBatch(BatchTransform):
    """Encrypt a batch after augmentation: one cipher, or a per-image key from a key set.

    ``ciphers`` is a cipher module (``forward(x)`` encrypts, ``inverse(y)`` decrypts, shape
    and dtype preserved), a list of them (a set of N keys), or key objects, which are turned
    into ciphers with ``ppml.ciphers.cipher_for``. With several ciphers, every call draws a
    key index per image from the generator (so it is re-drawn every epoch, reproducibly) and
    encrypts with a loop over the N keys, not over images: ``y[idx_k] = cipher_k(x[idx_k])``.
    The drawn indices are kept in ``last_keys`` (for :meth:`inverse` or inspection); pass
    ``keys=`` to choose them yourself (e.g. test images under key 0). A single cipher draws no
    random numbers.

    >>> class AddOne(nn.Module):            # stand-in ciphers for the example
    ...     def __init__(self, k): super().__init__(); self.k = k
    ...     def forward(self, x): return x + self.k
    ...     def inverse(self, y): return y - self.k
    >>> enc = EncryptBatch([AddOne(10), AddOne(20)])
    >>> x = torch.zeros(6, 1, 1, 1)
    >>> y = enc(x, torch.Generator().manual_seed(0))
    >>> bool((y.flatten() == 10 * (enc.last_keys + 1)).all()), bool((enc.inverse(y) == x).all())
    (True, True)
    """

    def __init__(self, ciphers: Any) -> None:
        super().__init__()
        # A ModuleList or a plain sequence is a key set; any other module (a Sequential
        # pipeline included) is one cipher.
        if isinstance(ciphers, nn.Module) and not isinstance(ciphers, nn.ModuleList):
            items = [ciphers]
        elif isinstance(ciphers, (str, bytes)) or not isinstance(ciphers, Iterable):
            items = [ciphers]
        else:
            items = list(ciphers)
        if not items:
            raise ValueError("EncryptBatch needs at least one cipher (or key)")
        mods = []
        for i, c in enumerate(items):
            if isinstance(c, nn.Module):
                mods.append(c)
            elif callable(c):
                mods.append(_Fn(c))
            else:
                try:
                    mods.append(cipher_for(c))
                except (TypeError, ValueError) as e:
                    raise ValueError(f"item {i} ({type(c).__name__}) is neither a cipher module, a callable "
                                     f"nor a ppml key: {e}") from e
        self.ciphers = nn.ModuleList(mods)
        self.last_keys: torch.Tensor | None = None

    @property
    def num_keys(self) -> int:
        """Number of keys (ciphers) in the set."""
        return len(self.ciphers)

    def draw_keys(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Key index per image, uniform over the set (int64 on the generator's device)."""
        return torch.randint(0, self.num_keys, (n,), generator=generator, device=_gen_device(generator))

    def _encrypt_by_key(self, x: torch.Tensor, keys: torch.Tensor, inverse: bool) -> torch.Tensor:
        if self.num_keys == 1:
            c = self.ciphers[0]
            return c.inverse(x) if inverse else c(x)
        out = None
        for k, c in enumerate(self.ciphers):
            idx = torch.nonzero(keys == k).reshape(-1)
            if idx.numel() == 0:
                continue
            part = x.index_select(0, idx)
            part = c.inverse(part) if inverse else c(part)
            if out is None:
                out = torch.empty((x.shape[0], *part.shape[1:]), dtype=part.dtype, device=part.device)
            out[idx] = part
        assert out is not None  # keys is non-empty here
        return out

    def _keys(self, x: torch.Tensor, keys: torch.Tensor | Sequence[int] | int | None,
              generator: torch.Generator | None) -> torch.Tensor:
        n = x.shape[0]
        if keys is None:
            k = self.draw_keys(n, generator) if self.num_keys > 1 else torch.zeros(n, dtype=torch.int64)
        else:
            k = torch.as_tensor(keys, dtype=torch.int64)
            if k.ndim == 0:
                k = k.expand(n)
            if k.shape != (n,):
                raise ValueError(f"keys must be one index per image ({n}), got shape {tuple(k.shape)}")
            if n and (int(k.min()) < 0 or int(k.max()) >= self.num_keys):
                raise ValueError(f"key indices must lie in [0, {self.num_keys})")
        return k.to(x.device)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, *,
                keys: torch.Tensor | Sequence[int] | int | None = None) -> torch.Tensor:
        _check_batch(x, "EncryptBatch")
        k = self._keys(x, keys, generator)
        self.last_keys = k
        if x.shape[0] == 0:
            return x
        return self._encrypt_by_key(x, k, inverse=False)

    def inverse(self, y: torch.Tensor, keys: torch.Tensor | Sequence[int] | int | None = None) -> torch.Tensor:
        """Decrypt ``y`` with per-image key indices ``keys`` (default: those of the last call)."""
        _check_batch(y, "EncryptBatch.inverse")
        if keys is None:
            if self.num_keys > 1 and (self.last_keys is None or self.last_keys.shape[0] != y.shape[0]):
                raise ValueError("give keys= (one index per image): no matching previous call to reuse")
            keys = self.last_keys if self.num_keys > 1 else 0
        k = self._keys(y, keys, None)
        if y.shape[0] == 0:
            return y
        return self._encrypt_by_key(y, k, inverse=True)

    def extra_repr(self) -> str:
        return f"num_keys={self.num_keys}"


# --------------------------------------------------------------------------------------------
# Block scrambling with per-image keys and augmentation (Chuman & Kiya; paper 02)
# --------------------------------------------------------------------------------------------
#
# Section II of the paper, step by step, and where each step lives here:
#
# * training image j: augmentation (random crop with padding 4, random horizontal flip,
#   GridMask) *first*, then the blocks are permuted with a secret key K_{j,s},
#   s ∈ {1..N} "randomly chosen per each epoch" (:class:`PerImageBlockScramble` with an
#   :class:`IndexedBatchLoader`, which tells it which image j each row is);
# * test image: random crop + flip on the client, then a block permutation with a key K_T
#   (:class:`FreshBlockScramble`: every test image its own, freshly drawn key);
# * the server applies test-time augmentation, a horizontal flip of the *encrypted* image, and
#   averages the predictions (:func:`hflip` in ``evaluate(..., transforms=[identity, hflip])``).
#
# The subscript j in K_{j,s}, and the introduction's "all images are encrypted by using
# different security keys", make the keys per image: every training image has its own N keys.
# That is the default (``keys="per_image"``). The shared reading — one set of N keys for all
# images, test images under a key of that set — is available as ``keys="shared"``.
#
# The server's flip is not the client's flip: for a block permutation K,
# ``hflip(S_K(x)) = S_{K'}(hflip(x))`` with the mirrored key ``K' = m∘K∘m``
# (:func:`mirror_block_perm`), which differs from K unless K commutes with the mirror m.
# With per-image keys K' is just another uniformly random key, so the flipped encrypted image
# is distributed exactly like a flipped image encrypted afresh; with a shared key set K' is
# (almost always) a key the model never saw.

def _block_grid(x: torch.Tensor, block_size: int, who: str) -> tuple[int, int]:
    _check_batch(x, who)
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
        raise ValueError(f"{who}: block_size must be a positive int, got {block_size!r}")
    h, w = x.shape[-2:]
    if h % block_size or w % block_size:
        raise ValueError(f"{who}: image size {h}x{w} is not divisible by block size {block_size}; "
                         f"crop or pad the images to multiples of {block_size}")
    return h // block_size, w // block_size


def scramble_blocks(x: torch.Tensor, perms: torch.Tensor, block_size: int) -> torch.Tensor:
    """Permute the blocks of every image with its own permutation, in one gather.

    ``perms`` is ``(n_blocks,)`` (one key for the batch) or ``(N, n_blocks)`` (one per image);
    output block ``i`` of image ``k`` is its input block ``perms[k, i]`` (blocks numbered
    row-major, the convention of :class:`ppml.ciphers.BlockScramble`). Exact for any dtype.

    >>> x = torch.arange(8, dtype=torch.uint8).reshape(1, 1, 2, 4)
    >>> scramble_blocks(x, torch.tensor([1, 0]), 2)[0, 0].tolist()  # the two 2x2 blocks swap
    [[2, 3, 0, 1], [6, 7, 4, 5]]
    """
    gh, gw = _block_grid(x, block_size, "scramble_blocks")
    n, c = x.shape[:2]
    nb, b = gh * gw, block_size
    perms = torch.as_tensor(perms, device=x.device)
    if perms.ndim == 1:
        perms = perms.expand(n, -1)
    if perms.shape != (n, nb):
        raise ValueError(f"scramble_blocks: perms must have shape ({nb},) or ({n}, {nb}) for {n} images "
                         f"of {nb} blocks, got {tuple(perms.shape)}")
    if perms.is_floating_point() or perms.dtype == torch.bool:
        raise ValueError(f"scramble_blocks: perms must be integer block indices, got {perms.dtype}")
    blocks = x.reshape(n, c, gh, b, gw, b).permute(0, 2, 4, 1, 3, 5).reshape(n, nb, c, b, b)
    out = blocks[torch.arange(n, device=x.device)[:, None], perms.long()]
    return out.reshape(n, gh, gw, c, b, b).permute(0, 3, 1, 4, 2, 5).reshape(x.shape)


def unscramble_blocks(y: torch.Tensor, perms: torch.Tensor, block_size: int) -> torch.Tensor:
    """Inverse of :func:`scramble_blocks` with the same ``perms``.

    >>> x = torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4)
    >>> p = torch.tensor([[3, 0, 2, 1]])
    >>> bool((unscramble_blocks(scramble_blocks(x, p, 2), p, 2) == x).all())
    True
    """
    perms = torch.as_tensor(perms, device=y.device)
    return scramble_blocks(y, torch.argsort(perms, dim=-1), block_size)


def mirror_block_perm(perms: torch.Tensor | np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
    """The key ``K' = m∘K∘m`` with ``hflip(S_K(x)) == S_{K'}(hflip(x))`` exactly, where ``m``
    mirrors block positions left–right on a ``grid = (rows, cols)`` block grid.

    So the server's flip of an encrypted image is a flipped image under another key, and the
    same key only if ``K`` commutes with ``m``.

    >>> mirror_block_perm(torch.tensor([1, 0, 2, 3]), (2, 2)).tolist()  # swap in row 0 stays a swap
    [1, 0, 2, 3]
    >>> mirror_block_perm(torch.tensor([2, 1, 0, 3]), (2, 2)).tolist()
    [0, 3, 2, 1]
    """
    gh, gw = grid
    perms = torch.as_tensor(perms).long()
    i = torch.arange(gh * gw, device=perms.device)
    m = (i // gw) * gw + (gw - 1 - i % gw)
    return m[perms[..., m]]


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of a batch: the server's test-time augmentation (paper 02, Sec. II).

    >>> hflip(torch.tensor([[[[1, 2, 3]]]])).tolist()
    [[[[3, 2, 1]]]]
    """
    return x.flip(-1)


def identity(x: torch.Tensor) -> torch.Tensor:
    """The unchanged batch (the first view of a test-time average).

    >>> identity(torch.ones(1)).tolist()
    [1.0]
    """
    return x


def _seed_generator(seed: Any) -> torch.Generator:
    """A CPU generator from an int / SeedSequence seed, or from OS entropy when ``seed`` is None."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer, np.random.SeedSequence))):
        raise ValueError(f"seed must be None (OS entropy), an int or a numpy SeedSequence, got {type(seed).__name__}")
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(
        None if seed is None else int(seed))
    state = ss.generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))


def block_scramble_keys(n: int, *, image_size: Any = 32, block_size: int = 8, channels: int = 3,
                        seed: Any = None) -> list:
    """``n`` independent :class:`~ppml.keys.BlockScrambleKey` s: a key set for
    :class:`EncryptBatch` (the shared-key reading of paper 02).

    From one ``seed`` (children of ``numpy.random.SeedSequence(seed)``; reproducible, so anyone
    with the seed has the keys) or, with ``seed=None``, from fresh OS entropy.

    >>> ks = block_scramble_keys(4, image_size=32, block_size=8, seed=0)
    >>> len(ks), ks[0].n_blocks, len({k.sha256() for k in ks})
    (4, 16, 4)
    >>> [k == j for k, j in zip(ks, block_scramble_keys(4, seed=0))]
    [True, True, True, True]
    """
    from ppml.keys import BlockScrambleKey

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (the number of keys) must be a positive int, got {n!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer, np.random.SeedSequence))):
        raise ValueError(f"seed must be None (OS entropy), an int or a numpy SeedSequence, got {type(seed).__name__}")
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(
        None if seed is None else int(seed))
    return [BlockScrambleKey.generate(image_size=image_size, block_size=block_size, channels=channels, seed=child)
            for child in ss.spawn(int(n))]


class PerImageBlockScramble(BatchTransform):
    """Block scrambling with the paper's per-image key sets K_{j,s} (paper 02, Sec. II).

    Holds one block permutation per (training image j, key s): ``perms`` ``(num_images,
    num_keys, n_blocks)``, drawn uniformly at random from ``seed`` (or OS entropy when
    ``seed=None``). Every call draws s per image from the generator — so s is re-drawn every
    epoch, as the paper says — and permutes image j's blocks with K_{j,s}; all images of the
    batch in one gather. The caller says which images the rows are with ``index=`` (dataset
    indices); :class:`IndexedBatchLoader` passes them (``needs_index = True``). The drawn s
    are kept in ``last_keys`` for :meth:`inverse`.

    >>> t = PerImageBlockScramble(num_images=10, num_keys=4, image_size=8, block_size=4, seed=0)
    >>> x = torch.arange(6 * 64, dtype=torch.float32).reshape(6, 1, 8, 8)
    >>> y = t(x, torch.Generator().manual_seed(0), index=torch.arange(6))
    >>> y.shape, bool((t.inverse(y, index=torch.arange(6)) == x).all()), t.last_keys.shape
    (torch.Size([6, 1, 8, 8]), True, torch.Size([6]))
    """

    needs_index = True

    def __init__(self, num_images: int, num_keys: int = 4, *, image_size: Any = 32, block_size: int = 8,
                 seed: Any = None) -> None:
        super().__init__()
        from ppml.keys import check_geometry

        (h, w), b = check_geometry(image_size, block_size)
        for name, v in (("num_images", num_images), ("num_keys", num_keys)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.image_size, self.block_size = (h, w), b
        self.grid = (h // b, w // b)
        nb = self.grid[0] * self.grid[1]
        g = _seed_generator(seed)
        # argsort of i.i.d. uniforms: a uniformly random permutation per (j, s); int16 keeps the
        # table small (CIFAR-10, N = 4, 16 blocks: 6.4 MB).
        perms = torch.rand(int(num_images), int(num_keys), nb, generator=g).argsort(-1)
        self.register_buffer("perms", perms.to(torch.int16 if nb <= 32767 else torch.int64))
        self.last_keys: torch.Tensor | None = None

    @property
    def num_images(self) -> int:
        """Number of images j the table has keys for."""
        return int(self.perms.shape[0])

    @property
    def num_keys(self) -> int:
        """N, the number of keys per image."""
        return int(self.perms.shape[1])

    def key_perms(self, index: torch.Tensor | Sequence[int], keys: torch.Tensor | Sequence[int] | int
                  ) -> torch.Tensor:
        """The block permutations K_{j,s} for images ``index`` and key numbers ``keys`` ((n, n_blocks) int64)."""
        idx = torch.as_tensor(index, dtype=torch.int64).reshape(-1).to(self.perms.device)
        s = torch.as_tensor(keys, dtype=torch.int64).to(self.perms.device)
        s = s.expand(idx.shape[0]) if s.ndim == 0 else s.reshape(-1)
        if s.shape != idx.shape:
            raise ValueError(f"keys must be one key number per image ({idx.shape[0]}), got shape {tuple(s.shape)}")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_images):
            raise ValueError(f"image indices must lie in [0, {self.num_images}) — this key table was made "
                             f"for num_images={self.num_images}; build it for the training set's size")
        if s.numel() and (int(s.min()) < 0 or int(s.max()) >= self.num_keys):
            raise ValueError(f"key numbers must lie in [0, {self.num_keys})")
        return self.perms[idx, s].long()

    def _index(self, x: torch.Tensor, index: Any) -> torch.Tensor:
        if index is None:
            raise ValueError("PerImageBlockScramble needs index= (the dataset index of every image in the batch) "
                             "to pick each image's own keys; train with IndexedBatchLoader, which passes it")
        idx = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
        if idx.shape[0] != x.shape[0]:
            raise ValueError(f"index must give one dataset index per image ({x.shape[0]}), got {idx.shape[0]}")
        return idx

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, *,
                index: torch.Tensor | Sequence[int] | None = None,
                keys: torch.Tensor | Sequence[int] | int | None = None) -> torch.Tensor:
        _block_grid(x, self.block_size, "PerImageBlockScramble")
        if tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(f"PerImageBlockScramble was built for {self.image_size} images, got "
                             f"{tuple(x.shape[-2:])}")
        idx = self._index(x, index)
        if keys is None:
            keys = torch.randint(0, self.num_keys, (x.shape[0],), generator=generator, device=_gen_device(generator))
        s = torch.as_tensor(keys, dtype=torch.int64).cpu()
        s = s.expand(x.shape[0]) if s.ndim == 0 else s.reshape(-1)
        perms = self.key_perms(idx, s)
        self.last_keys = s.clone()
        return scramble_blocks(x, perms.to(x.device), self.block_size)

    def inverse(self, y: torch.Tensor, *, index: torch.Tensor | Sequence[int],
                keys: torch.Tensor | Sequence[int] | int | None = None) -> torch.Tensor:
        """Decrypt with images ``index`` and key numbers ``keys`` (default: those of the last call)."""
        idx = self._index(y, index)
        if keys is None:
            if self.last_keys is None or self.last_keys.shape[0] != y.shape[0]:
                raise ValueError("give keys= (one key number per image): no matching previous call to reuse")
            keys = self.last_keys
        return unscramble_blocks(y, self.key_perms(idx, keys).to(y.device), self.block_size)

    def extra_repr(self) -> str:
        return (f"num_images={self.num_images}, num_keys={self.num_keys}, image_size={self.image_size}, "
                f"block_size={self.block_size}")


class FreshBlockScramble(BatchTransform):
    """Block scrambling with a new, independent key per image per call: the test key K_T of
    paper 02 (every test image encrypted by its own key, which the model never saw).

    Each image's permutation is ``argsort`` of uniform numbers from the generator (uniform over
    all n_blocks! permutations), so a run is reproducible from the loader's seed; a deployment
    would draw K_T from OS entropy. The permutations of the last call are in ``last_perms``.

    >>> t = FreshBlockScramble(block_size=4)
    >>> x = torch.arange(2 * 64, dtype=torch.uint8).reshape(2, 1, 8, 8)
    >>> y = t(x, torch.Generator().manual_seed(0))
    >>> t.last_perms.shape, bool((t.inverse(y) == x).all())
    (torch.Size([2, 4]), True)
    """

    def __init__(self, block_size: int = 8) -> None:
        super().__init__()
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {block_size!r}")
        self.block_size = block_size
        self.last_perms: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        gh, gw = _block_grid(x, self.block_size, "FreshBlockScramble")
        u = torch.rand(x.shape[0], gh * gw, generator=generator, device=_gen_device(generator))
        self.last_perms = u.argsort(-1)
        return scramble_blocks(x, self.last_perms.to(x.device), self.block_size)

    def inverse(self, y: torch.Tensor, perms: torch.Tensor | None = None) -> torch.Tensor:
        """Decrypt with ``perms`` (default: the permutations of the last call)."""
        if perms is None:
            if self.last_perms is None or self.last_perms.shape[0] != y.shape[0]:
                raise ValueError("give perms= (one permutation per image): no matching previous call to reuse")
            perms = self.last_perms
        return unscramble_blocks(y, perms.to(y.device), self.block_size)

    def extra_repr(self) -> str:
        return f"block_size={self.block_size}"


class IndexedBatchLoader(_BatchLoader):
    """A :class:`~ppml.loader.BatchLoader` that also tells index-aware transforms which images
    a batch holds: a transform with ``needs_index = True`` (e.g. :class:`PerImageBlockScramble`)
    is called as ``t(x, generator, index=b)`` with the batch's dataset indices ``b``; every
    other transform as ``t(x, generator)``. Since the base class itself does this, this is the
    same loader under the name that says so (kept for code that imports it).

    >>> imgs = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1)
    >>> class Show(nn.Module):
    ...     needs_index = True
    ...     def forward(self, x, g=None, *, index): return index.view(-1, 1, 1, 1).to(x.dtype)
    >>> l = IndexedBatchLoader(imgs, torch.zeros(4), 2, transforms=[Show()], to_float=False, seed=1)
    >>> all(bool((x.flatten() == l.images[i].flatten()).all()) for (x, _), i in zip(l, l.indices().split(2)))
    True
    """


#: GridMask for 32×32 images: Chen et al.'s ImageNet setting (``--d1 96 --d2 224 --ratio 0.6
#: --rotate 360 --mode 1 --prob 0.8``, their ``start_train.sh``) with d scaled by 32/224.
#: Paper 02 names GridMask but gives no parameters; this is our choice.
GRIDMASK_32 = {"d1": 14, "d2": 32, "ratio": 0.6, "rotate": 360, "mode": 1, "prob": 0.8}

ENCRYPT_MODES = ("none", "per_image", "shared")


class ScramblePipelines:
    """The three places transforms run in paper 02 (Fig. 1), built by :func:`block_scramble_pipelines`.

    * ``train``: client side, training images — augmentation, then encryption (a list for an
      :class:`IndexedBatchLoader`: use :meth:`train_loader`);
    * ``test``: client side, a test image — crop + flip (with augmentation), then K_T
      (:meth:`test_loader`: in order, no shuffling);
    * ``server``: the server's test-time views of the encrypted image, averaged by
      ``ppml.train.evaluate(model, test_loader, transforms=server)`` — ``[identity, hflip]``
      with test-time augmentation, ``[identity]`` without.
    """

    def __init__(self, *, train: list, test: list, server: list, encrypt: str, block_size: int | None,
                 num_keys: int | None, augment: bool, tta: bool) -> None:
        self.train, self.test, self.server = train, test, server
        self.encrypt, self.block_size, self.num_keys = encrypt, block_size, num_keys
        self.augment, self.tta = augment, tta

    def train_loader(self, data: Any, batch_size: int = 128, *, seed: int = 0,
                     device: torch.device | str | None = None) -> "IndexedBatchLoader":
        """Shuffled, per-epoch seeded batches of ``data`` (``.images``/``.labels`` or a pair) through ``train``."""
        return IndexedBatchLoader.from_dataset(data, batch_size, shuffle=True, transforms=self.train, seed=seed, device=device)

    def test_loader(self, data: Any, batch_size: int = 256, *, seed: int = 0,
                    device: torch.device | str | None = None) -> _BatchLoader:
        """In-order batches of ``data`` through the client's ``test`` transforms (seeded: the
        random crops, flips and keys K_T are the same on every evaluation)."""
        return _BatchLoader.from_dataset(data, batch_size, shuffle=False, transforms=self.test, seed=seed, device=device)

    def describe(self) -> str:
        """One line: what the client and the server do."""
        aug = "crop(pad 4)+flip+GridMask" if self.augment else "no augmentation"
        enc = {"none": "no encryption",
               "per_image": f"{self.block_size}×{self.block_size} block scrambling, N={self.num_keys} keys per image, "
                            f"a fresh key K_T per test image",
               "shared": f"{self.block_size}×{self.block_size} block scrambling, one set of N={self.num_keys} keys "
                         f"for all images, test images under a key of the set"}[self.encrypt]
        if self.encrypt == "none":
            test = "crop+flip" if self.augment else "as is"
        else:
            test = "crop+flip, then encrypt" if self.augment else "encrypt only"
        tta = "server TTA: mean over the image and its flip" if self.tta else "no TTA"
        return f"train: {aug}, then {enc}; test: {test}; {tta}"

    def __repr__(self) -> str:
        return f"ScramblePipelines({self.describe()})"


def block_scramble_pipelines(encrypt: str = "per_image", *, num_images: int | None = None, num_keys: int = 4,
                             image_size: Any = 32, block_size: int = 8, augment: bool = True,
                             tta: bool | None = None, crop_padding: int = 4,
                             gridmask: dict[str, Any] | None = None, key_seed: Any = None) -> ScramblePipelines:
    """Paper 02's pipelines (Sec. II): augmentation **then** block scrambling on the client,
    horizontal-flip test-time augmentation of the encrypted image on the server.

    ``encrypt``: ``"per_image"`` (the paper's K_{j,s}: every one of the ``num_images``
    training images has its own ``num_keys`` keys, one drawn anew every epoch; every test
    image its own fresh key K_T), ``"shared"`` (one set of ``num_keys`` keys for all images;
    test images under a key of that set) or ``"none"`` (the plain baseline). ``augment``:
    training random crop (``crop_padding``), flip and GridMask (``gridmask`` kwargs, default
    :data:`GRIDMASK_32`); test crop + flip. ``tta`` (default: ``augment``, as in Fig. 3(b)):
    the server averages over the encrypted image and its flip. ``key_seed``: None draws the
    keys from OS entropy; an int makes them reproducible.

    >>> p = block_scramble_pipelines(num_images=100, key_seed=0)
    >>> [type(t).__name__ for t in p.train], [type(t).__name__ for t in p.test], [f.__name__ for f in p.server]
    (['RandomCrop', 'RandomHorizontalFlip', 'GridMask', 'PerImageBlockScramble'], ['RandomCrop', 'RandomHorizontalFlip', 'FreshBlockScramble'], ['identity', 'hflip'])
    >>> [type(t).__name__ for t in block_scramble_pipelines("none", augment=False).train]
    []
    """
    if encrypt not in ENCRYPT_MODES:
        raise ValueError(f"encrypt must be one of {', '.join(ENCRYPT_MODES)}, got {encrypt!r}")
    if tta is None:
        tta = bool(augment)
    from ppml.keys import check_geometry

    (h, w), b = check_geometry(image_size, block_size)
    if not isinstance(crop_padding, int) or crop_padding < 0:
        raise ValueError(f"crop_padding must be a non-negative int, got {crop_padding!r}")
    train: list = []
    test: list = []
    if augment:
        gm = dict(GRIDMASK_32 if gridmask is None else gridmask)
        train = [RandomCrop((h, w), padding=crop_padding), RandomHorizontalFlip(), GridMask(**gm)]
        test = [RandomCrop((h, w), padding=crop_padding), RandomHorizontalFlip()]
    if encrypt == "per_image":
        if num_images is None:
            raise ValueError("encrypt='per_image' needs num_images= (the training set's size): every training "
                             "image gets its own num_keys keys")
        train.append(PerImageBlockScramble(num_images, num_keys, image_size=(h, w), block_size=b, seed=key_seed))
        test.append(FreshBlockScramble(b))
    elif encrypt == "shared":
        keys = block_scramble_keys(num_keys, image_size=(h, w), block_size=b, seed=key_seed)
        enc = EncryptBatch(keys)
        train.append(enc)
        test.append(EncryptBatch(list(enc.ciphers)))  # same ciphers, its own last_keys
    server = [identity, hflip] if tta else [identity]
    return ScramblePipelines(train=train, test=test, server=server, encrypt=encrypt,
                             block_size=None if encrypt == "none" else b,
                             num_keys=None if encrypt == "none" else num_keys, augment=bool(augment), tta=bool(tta))
