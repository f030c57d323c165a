"""Data sets by name, the embedded Fashion-MNIST default, real photo crops.

Everything here keeps a whole data set in memory as one ``uint8`` tensor ``(N, C, H, W)``
(:class:`ImageData`); :mod:`ppml.loader` batches it with tensor indexing and the batch
transforms of :mod:`ppml.transforms` augment whole batches at once.

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
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ppml.utils import atomic_write, progress

__all__ = [
    "ImageData", "DatasetNotAvailable", "DatasetCorrupt", "DATASETS", "SPLITS",
    "load_dataset", "dataset_available", "dataset_requirements", "default_root",
    "photo_crops", "PHOTO_SOURCES", "train_val_split",
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
