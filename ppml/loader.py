"""An in-memory batch loader with vectorised, seeded batch transforms.

Small image data sets (CIFAR, Fashion-MNIST, the embedded sample) fit in memory as one
uint8 tensor, so instead of a per-image ``Dataset`` + ``DataLoader`` this loader indexes
whole batches and applies transforms (augmentation, ciphers) to the whole batch at once.

Determinism: every random choice of epoch ``e`` (the shuffle order and every transform)
comes from ``torch.Generator`` objects seeded from ``(seed, e)`` only. Epoch ``e``'s batches
are therefore identical whether training ran straight through or was interrupted and
resumed before ``e`` — the property :func:`ppml.train.fit` relies on for exact resume.

Transforms are callables ``t(x, generator) -> x`` applied to a whole batch ``(N, C, H, W)``
(usually uint8, before the conversion to float). The generator is always a **CPU**
generator; a transform draws its random numbers on the CPU (``torch.rand(n, generator=g)``)
and moves them to ``x.device``, which makes results identical on every device.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Sequence

import torch

from ppml._checks import seed_generator

__all__ = ["BatchLoader", "Transform", "make_generator"]

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def make_generator(*entropy: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from a tuple of non-negative integers.

    numpy's ``SeedSequence`` mixes the integers so that nearby tuples (seed, epoch) and
    (seed, epoch + 1) give unrelated streams (:func:`ppml._checks.seed_generator`, its
    ``"concat"`` mixing).

    >>> a, b = make_generator(0, 1), make_generator(0, 1)
    >>> torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))
    True
    """
    if any(int(v) < 0 for v in entropy):
        raise ValueError(f"generator entropy must be non-negative integers, got {entropy}")
    return seed_generator(tuple(int(v) for v in entropy), mixing="concat")


class BatchLoader:
    """Iterate over in-memory ``images``/``labels`` in batches of ``(x, y)``.

    * ``shuffle``: a fresh permutation per epoch (see :meth:`set_epoch`), else in order.
    * ``transforms``: one callable or a sequence, each ``t(x, generator) -> x`` on a batch; one
      with ``needs_index = True`` is called ``t(x, generator, index=b)`` with the batch's dataset
      indices ``b`` (e.g. per-image keys, :class:`ppml.papers.block_scramble_augmentation.PerImageBlockScramble`).
    * ``to_float``: after the transforms, uint8 batches become float32 in [0, 1] (``x / 255``);
      batches a transform already made floating point are left as they are.
    * ``rank``/``world_size``: the shard for data-parallel training. As in
      ``torch.utils.data.DistributedSampler``, the epoch's permutation is padded by
      wrap-around to a multiple of ``world_size`` and rank r takes positions r, r+W, …, so
      shards are disjoint slices of equal size that together cover every sample.
      ``batch_size`` is per process.
    * ``drop_last``: drop this rank's final incomplete batch.
    * ``device``: move each batch there before the transforms (``None``: leave it where the
      data is; put ``images`` on a GPU to index on the GPU).
    * ``labels`` may be any tensor whose first dimension matches ``images`` (class indices,
      soft labels, or target images); it is indexed and moved but never transformed.

    >>> imgs = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2)
    >>> loader = BatchLoader(imgs, torch.arange(10), batch_size=4, shuffle=False)
    >>> len(loader), [y.tolist() for _, y in loader]
    (3, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]])
    >>> next(iter(loader))[0].dtype
    torch.float32
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 shuffle: bool = True, drop_last: bool = False,
                 transforms: Transform | Sequence[Transform] | None = None, seed: int = 0,
                 to_float: bool = True, rank: int = 0, world_size: int = 1,
                 device: torch.device | str | None = None) -> None:
        images = torch.as_tensor(images)
        labels = torch.as_tensor(labels)
        if images.ndim < 1 or len(images) == 0:
            raise ValueError("images must be a non-empty tensor with the samples along dimension 0")
        if len(labels) != len(images):
            raise ValueError(f"images and labels differ in length: {len(images)} vs {len(labels)}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(seed) < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.images = images
        self.labels = labels
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        if transforms is None:
            self.transforms: list[Transform] = []
        elif callable(transforms):
            self.transforms = [transforms]
        else:
            self.transforms = list(transforms)
        if not all(callable(t) for t in self.transforms):
            raise TypeError("transforms must be callables t(x, generator) -> x")
        self.seed = int(seed)
        self.to_float = bool(to_float)
        self.device = torch.device(device) if device is not None else None
        self.epoch = 0
        self.rank = 0
        self.world_size = 1
        self.set_shard(rank, world_size)

    @classmethod
    def from_dataset(cls, ds: Any, batch_size: int, **kwargs: Any) -> "BatchLoader":
        """Build a loader from an object with ``.images`` and ``.labels`` (e.g. ``ppml.datasets.ImageData``)
        or from an ``(images, labels)`` pair; ``kwargs`` as for the constructor.

        >>> from types import SimpleNamespace
        >>> ds = SimpleNamespace(images=torch.zeros(5, 3, 4, 4, dtype=torch.uint8), labels=torch.zeros(5, dtype=torch.long))
        >>> len(BatchLoader.from_dataset(ds, 2))
        3
        """
        if hasattr(ds, "images") and hasattr(ds, "labels"):
            return cls(ds.images, ds.labels, batch_size, **kwargs)
        if isinstance(ds, (tuple, list)) and len(ds) == 2:
            return cls(ds[0], ds[1], batch_size, **kwargs)
        raise TypeError(f"expected an object with .images and .labels or an (images, labels) pair, "
                        f"got {type(ds).__name__}")

    def set_shard(self, rank: int, world_size: int) -> None:
        """Make this loader yield shard ``rank`` of ``world_size`` (data-parallel training)."""
        if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.rank, self.world_size = int(rank), int(world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle order and transform randomness the next iteration uses.

        Every ``iter()`` replays the selected epoch from its start.
        """
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    @property
    def dataset_size(self) -> int:
        """Number of samples in the whole data set."""
        return len(self.images)

    @property
    def num_samples(self) -> int:
        """Samples this rank visits per epoch (before ``drop_last``), padding included."""
        return math.ceil(self.dataset_size / self.world_size)

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def indices(self, epoch: int | None = None) -> torch.Tensor:
        """This rank's sample indices for ``epoch`` (default: the current one), in visiting order.

        >>> l = BatchLoader(torch.zeros(5, 1), torch.zeros(5), 2, world_size=2, rank=1, shuffle=False)
        >>> l.indices().tolist()
        [1, 3, 0]
        """
        epoch = self.epoch if epoch is None else int(epoch)
        n = self.dataset_size
        if self.shuffle:
            # The permutation must be the same on every rank: seed it from (seed, epoch) only.
            perm = torch.randperm(n, generator=make_generator(self.seed, epoch, 0))
        else:
            perm = torch.arange(n)
        total = self.num_samples * self.world_size
        if total > n:  # wrap-around padding, as DistributedSampler does
            perm = torch.cat([perm, perm.repeat(math.ceil(total / n))[: total - n]])
        return perm[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self.indices()
        if self.drop_last:
            idx = idx[: len(self) * self.batch_size]
        # Transform randomness differs per rank (different images get different crops) but is
        # fixed by (seed, epoch, rank).
        gen = make_generator(self.seed, self.epoch, 1, self.rank)
        for start in range(0, len(idx), self.batch_size):
            b = idx[start : start + self.batch_size]
            x = self.images[b.to(self.images.device)]
            y = self.labels[b.to(self.labels.device)]
            if self.device is not None:
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
            for t in self.transforms:  # index-aware ones (needs_index = True) also get the dataset indices
                x = t(x, gen, index=b) if getattr(t, "needs_index", False) else t(x, gen)
            if self.to_float and x.dtype == torch.uint8:
                x = x.float().div_(255)
            yield x, y

    def __repr__(self) -> str:
        return (f"BatchLoader(n={self.dataset_size}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, transforms={len(self.transforms)}, seed={self.seed}, "
                f"epoch={self.epoch}, rank={self.rank}/{self.world_size})")
