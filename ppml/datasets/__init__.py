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

The package: :mod:`~ppml.datasets.base` (:class:`ImageData`, errors, names and splits,
availability), :mod:`~ppml.datasets.geometry` (resize, channels), :mod:`~ppml.datasets.smoke`
(the embedded sample), :mod:`~ppml.datasets.loaders` (torchvision formats, :func:`load_dataset`)
and :mod:`~ppml.datasets.photos` (photo crops). Every name is re-exported here. Module-level
paths that tests repoint (``SMOKE_PATH``, ``DEBIAN_FASHION_MNIST``) live in
:mod:`~ppml.datasets.base` and are read from it at call time, so patch them there.
"""

from __future__ import annotations

from ppml.datasets.base import (  # noqa: F401
    _IMAGENETTE_VARIANTS, _SVHN_FILES, DATASETS, DEBIAN_FASHION_MNIST, FASHION_MNIST_CLASSES,
    FASHION_MNIST_IDX_SHA256, REPO_ROOT, SMOKE_ARRAYS, SMOKE_CONTENT_SHA256, SMOKE_PATH, SMOKE_SHA256, SPLITS,
    DatasetCorrupt, DatasetNotAvailable, ImageData, _check_variant, _download_default, _expected_location,
    _fashion_raw_present, _fashion_stems, _norm_name, _norm_split, _not_available, _root, dataset_available,
    dataset_requirements, default_root, train_val_split,
)
from ppml.datasets.geometry import (  # noqa: F401
    _check_channels, _check_size, _colour_geometry, _grey_geometry, _resize_square, _to_channels,
)
from ppml.datasets.loaders import (  # noqa: F401
    _load_cifar, _load_fashion, _load_imagenette, _load_svhn, _prepare_fashion_raw, _standin_class,
    _torchvision_call, _verify_fashion_raw, load_dataset,
)
from ppml.datasets.photos import PHOTO_SOURCES, _photo, photo_crops  # noqa: F401
from ppml.datasets.smoke import (  # noqa: F401
    _load_smoke, _sha256_file, _smoke_arrays, _smoke_arrays_cached, content_sha256,
)

__all__ = [
    "ImageData", "DatasetNotAvailable", "DatasetCorrupt", "DATASETS", "SPLITS",
    "load_dataset", "dataset_available", "dataset_requirements", "default_root",
    "photo_crops", "PHOTO_SOURCES", "train_val_split",
    "FASHION_MNIST_CLASSES", "SMOKE_PATH", "SMOKE_SHA256", "SMOKE_CONTENT_SHA256",
]
