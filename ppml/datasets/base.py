"""The in-memory data set (:class:`ImageData`), its errors, the registry of names and splits,
locations, availability and the messages that say how to get a data set."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset


__all__ = [
    "ImageData", "DatasetNotAvailable", "DatasetCorrupt", "DATASETS", "SPLITS",
    "dataset_available", "dataset_requirements", "default_root", "train_val_split",
    "FASHION_MNIST_CLASSES", "SMOKE_PATH", "SMOKE_SHA256", "SMOKE_CONTENT_SHA256",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
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
    from ppml.datasets.smoke import _smoke_arrays  # smoke.py imports this module

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
