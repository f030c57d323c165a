"""The full data sets through torchvision (Fashion-MNIST raw files, CIFAR, SVHN, Imagenette) and
:func:`load_dataset`, the one entry point by name."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ppml.datasets import base as _base
from ppml.datasets.base import (
    _IMAGENETTE_VARIANTS, FASHION_MNIST_CLASSES, FASHION_MNIST_IDX_SHA256, DatasetCorrupt, ImageData,
    _check_variant, _download_default, _fashion_stems, _norm_name, _norm_split, _not_available, _root,
    dataset_available, dataset_requirements,
)
from ppml.datasets.geometry import _check_channels, _check_size, _colour_geometry, _grey_geometry, _to_channels
from ppml.datasets.smoke import _load_smoke, _sha256_file
from ppml.utils import atomic_write, progress



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
    if all((_base.DEBIAN_FASHION_MNIST / f"{s}.gz").is_file() for s in stems):
        raw.mkdir(parents=True, exist_ok=True)
        for s in stems:
            if not (raw / s).is_file():
                with gzip.open(_base.DEBIAN_FASHION_MNIST / f"{s}.gz", "rb") as src, atomic_write(raw / s) as dst:
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
