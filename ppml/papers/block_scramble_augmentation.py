"""Paper 02 — Chuman & Kiya, "Block Scrambling Image Encryption Used in Combination with Data
Augmentation for Privacy-Preserving DNNs" (no public code; notebook 02): the per-image
block-scrambling pipelines of Sec. II, the jigsaw solver on them, and what the paper states.

* :func:`scramble_blocks` / :func:`unscramble_blocks`: every image's blocks permuted by its own
  key, one gather for the batch; :func:`mirror_block_perm`: the key a horizontal flip turns a
  key into;
* :class:`PerImageBlockScramble` (the keys K_{j,s}), :class:`FreshBlockScramble` (the test key
  K_T), :func:`block_scramble_keys` (the shared-key reading), :class:`IndexedBatchLoader`;
* :func:`block_scramble_pipelines` / :class:`ScramblePipelines`: augmentation then encryption on
  the client, flip test-time augmentation on the server (:mod:`ppml.transforms` does the
  augmentation);
* :func:`augmentation_study`: the jigsaw-puzzle solver with and without that augmentation.

**The paper prints no accuracy numbers.** Fig. 3 ("Image classification accuracy") is a pair of
bar charts — (a) no data augmentation, (b) data augmentation and test-time augmentation —
without printed values, and the text available to us (``shared/papers/001_*.txt``) holds only
the captions, not the bars. So nothing here is a number read from the paper: :data:`FIG3` is
``None`` for every bar, and the notebook shows our numbers with the scale beside them and the
paper's *claims* (:data:`CLAIMS`) in words. What the paper does state — its settings (Sec. II
and III) — is kept (:data:`SETTINGS`) so the notebook's paper-scale parameters can be checked
against it.

>>> FIG3["b"]["plain"] is None and FIG3["a"]["block_scrambled"] is None
True
>>> SETTINGS["block_size"], SETTINGS["num_keys"], SETTINGS["epochs"], SETTINGS["batch_size"]
(8, 4, 250, 128)
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ppml._checks import check_batch, generator_device, seed_generator, seed_sequence
from ppml.attacks.jigsaw import (JigsawResults, _grid, _summ, aligned_reconstruction, score, solve,
                                 true_arrangement)
from ppml.ciphers import BlockGrid
from ppml.keys import BlockScrambleKey, check_geometry
from ppml.loader import BatchLoader
from ppml.transforms import (BatchTransform, EncryptBatch, GridMask, RandomCrop, RandomHorizontalFlip, hflip,
                             identity)

__all__ = [
    "scramble_blocks", "unscramble_blocks", "mirror_block_perm", "block_scramble_keys",
    "PerImageBlockScramble", "FreshBlockScramble", "IndexedBatchLoader", "ScramblePipelines",
    "block_scramble_pipelines", "GRIDMASK_32", "ENCRYPT_MODES", "augmentation_study", "gap_trend",
    "PAPER", "SETTINGS", "FIG3", "CLAIMS", "UNSPECIFIED",
]


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

def _block_grid(x: torch.Tensor, block_size: int, who: str) -> BlockGrid:
    check_batch(x, who)
    return BlockGrid.of(x, block_size, who=who)


def scramble_blocks(x: torch.Tensor, perms: torch.Tensor, block_size: int) -> torch.Tensor:
    """Permute the blocks of every image with its own permutation, in one gather.

    ``perms`` is ``(n_blocks,)`` (one key for the batch) or ``(N, n_blocks)`` (one per image);
    output block ``i`` of image ``k`` is its input block ``perms[k, i]`` (blocks numbered
    row-major, the convention of :class:`ppml.ciphers.BlockScramble`). Exact for any dtype
    (:meth:`ppml.ciphers.BlockGrid.permute_blocks`).

    >>> x = torch.arange(8, dtype=torch.uint8).reshape(1, 1, 2, 4)
    >>> scramble_blocks(x, torch.tensor([1, 0]), 2)[0, 0].tolist()  # the two 2x2 blocks swap
    [[2, 3, 0, 1], [6, 7, 4, 5]]
    """
    grid = _block_grid(x, block_size, "scramble_blocks")
    return grid.permute_blocks(x, torch.as_tensor(perms, device=x.device), who="scramble_blocks")


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
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (the number of keys) must be a positive int, got {n!r}")
    ss = seed_sequence(seed)
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
        (h, w), b = check_geometry(image_size, block_size)
        for name, v in (("num_images", num_images), ("num_keys", num_keys)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.image_size, self.block_size = (h, w), b
        self.grid = BlockGrid((h, w), b).shape
        nb = self.grid[0] * self.grid[1]
        g = seed_generator(seed, mixing="xor31")
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
        grid = _block_grid(x, self.block_size, "PerImageBlockScramble")
        if tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(f"PerImageBlockScramble was built for {self.image_size} images, got "
                             f"{tuple(x.shape[-2:])}")
        idx = self._index(x, index)
        if keys is None:
            keys = torch.randint(0, self.num_keys, (x.shape[0],), generator=generator, device=generator_device(generator))
        s = torch.as_tensor(keys, dtype=torch.int64).cpu()
        s = s.expand(x.shape[0]) if s.ndim == 0 else s.reshape(-1)
        perms = self.key_perms(idx, s)
        self.last_keys = s.clone()
        return grid.permute_blocks(x, perms.to(x.device), who="PerImageBlockScramble")

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
        grid = _block_grid(x, self.block_size, "FreshBlockScramble")
        u = torch.rand(x.shape[0], grid.n_blocks, generator=generator, device=generator_device(generator))
        self.last_perms = u.argsort(-1)
        return grid.permute_blocks(x, self.last_perms.to(x.device), who="FreshBlockScramble")

    def inverse(self, y: torch.Tensor, perms: torch.Tensor | None = None) -> torch.Tensor:
        """Decrypt with ``perms`` (default: the permutations of the last call)."""
        if perms is None:
            if self.last_perms is None or self.last_perms.shape[0] != y.shape[0]:
                raise ValueError("give perms= (one permutation per image): no matching previous call to reuse")
            perms = self.last_perms
        return unscramble_blocks(y, perms.to(y.device), self.block_size)

    def extra_repr(self) -> str:
        return f"block_size={self.block_size}"


class IndexedBatchLoader(BatchLoader):
    """A :class:`~ppml.loader.BatchLoader` that also tells index-aware transforms which images
    a batch holds: a transform with ``needs_index = True`` (e.g. :class:`PerImageBlockScramble`)
    is called as ``t(x, generator, index=b)`` with the batch's dataset indices ``b``; every
    other transform as ``t(x, generator)``. Since the base class itself does this, this is the
    same loader under the name that says so (kept for code that imports it).

    >>> imgs = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1)
    >>> class Show(torch.nn.Module):
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
                    device: torch.device | str | None = None) -> BatchLoader:
        """In-order batches of ``data`` through the client's ``test`` transforms (seeded: the
        random crops, flips and keys K_T are the same on every evaluation)."""
        return BatchLoader.from_dataset(data, batch_size, shuffle=False, transforms=self.test, seed=seed, device=device)

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


def augmentation_study(images: torch.Tensor, block_size: int = 8, *, num_keys: int = 4, crop_padding: int = 4,
                       gridmask: Mapping[str, Any] | None = None, seed: int = 0, separate: bool = True,
                       **solve_kwargs: Any) -> JigsawResults:
    """The jigsaw solver (:mod:`ppml.attacks.jigsaw`) on paper 02's block scrambling (per-image
    keys K_{j,s}, :class:`PerImageBlockScramble`) of ``images`` as they are (``"no_augmentation"``)
    and after the paper's training augmentation — random crop with padding, horizontal flip,
    GridMask (:data:`GRIDMASK_32`) — applied before encryption (``"augmentation"``);
    with ``separate``, each augmentation alone too (``"crop"``, ``"flip"``, ``"gridmask"``).

    The target is the image that was encrypted (the augmented one): what a ciphertext-only
    attacker can hope to recover. Scores as :func:`ppml.attacks.jigsaw.score` (no ``colour``: scrambling keeps it).

    >>> from ppml.attacks.jigsaw import smooth_test_image
    >>> x = torch.stack([smooth_test_image(32, seed=s) for s in range(2)])
    >>> r = augmentation_study(x, 8, separate=False)
    >>> sorted(r.record), r.record["no_augmentation"]["direct"]
    (['augmentation', 'no_augmentation'], 1.0)
    """
    _grid(images, block_size, "augmentation_study", name="images")
    if images.dtype != torch.uint8:
        raise ValueError("augmentation_study expects uint8 images")
    n, _, h, w = images.shape
    gm = GridMask(**dict(GRIDMASK_32 if gridmask is None else gridmask))
    crop = RandomCrop((h, w), padding=crop_padding)
    flip = RandomHorizontalFlip()
    settings = {"no_augmentation": [], "augmentation": [crop, flip, gm]}
    if separate:
        settings.update(crop=[crop], flip=[flip], gridmask=[gm])
    enc = PerImageBlockScramble(n, num_keys, image_size=(h, w), block_size=block_size, seed=seed)
    grid = enc.grid
    record: dict[str, dict[str, float]] = {}
    examples: dict[str, dict[str, torch.Tensor]] = {}
    for name, augs in settings.items():
        g = torch.Generator().manual_seed(int(seed))
        x = images
        for t in augs:
            x = t(x, g)
        idx = torch.arange(n)
        y = enc(x, g, index=idx)
        truth = true_arrangement(enc.key_perms(idx, enc.last_keys).numpy(), grid=grid)
        t0 = time.process_time()
        sol = solve(y, block_size, scheme="BlockScramble", **solve_kwargs)
        res = score(sol, truth, original=x, encrypted=y, block_size=block_size)
        record[name] = _summ(res, grid[0] * grid[1], n, time.process_time() - t0, "BlockScramble")
        examples[name] = {"original": x[0], "encrypted": y[0],
                          "reconstruction": aligned_reconstruction(y[:1], sol[0], truth[0], block_size)[0]}
    return JigsawResults(record, examples)


def gap_trend(curves: Mapping[tuple[str, bool], Sequence[float]]) -> dict[str, Any]:
    """Fig. 3's quantity against compute: the plain − block-scrambled test-accuracy gap after
    every epoch, without augmentation and with augmentation + server TTA.

    ``curves`` maps ``(encrypt, augment)`` — ``("none" | "per_image", False | True)``, the four
    Fig. 3 runs — to their test accuracy after each epoch (``fit(..., val_data=...)``'s
    ``val_acc``; all four the same length). Returns ``epochs`` (1-based), ``no_augmentation``
    and ``augmentation_tta`` (the gap per epoch), their ``final`` values, ``narrower`` (per
    epoch: is the gap with augmentation the smaller one) and ``crossing_epoch``: the first
    epoch from which the augmented gap stays below the other one to the end (``None`` if it
    does not end below).

    >>> t = gap_trend({("none", False): [.5, .7, .8], ("per_image", False): [.3, .6, .7],
    ...                ("none", True): [.4, .6, .8], ("per_image", True): [.1, .55, .75]})
    >>> [round(g, 2) for g in t["augmentation_tta"]], t["crossing_epoch"], round(t["final"]["no_augmentation"], 2)
    ([0.3, 0.05, 0.05], 2, 0.1)
    """
    need = [("none", False), ("per_image", False), ("none", True), ("per_image", True)]
    missing = [k for k in need if k not in curves]
    if missing:
        raise ValueError(f"gap_trend needs the four Fig. 3 runs {need}; missing {missing}")
    cs = {k: [float("nan") if v is None else float(v) for v in curves[k]] for k in need}
    n = len(cs[need[0]])
    if n == 0 or any(len(c) != n for c in cs.values()) or any(v != v for c in cs.values() for v in c):
        raise ValueError("gap_trend: the four accuracy curves must be non-empty, equally long and without NaN "
                         f"(lengths {[len(c) for c in cs.values()]}); pass val_data to fit to measure every epoch")
    a = [p - q for p, q in zip(cs[("none", False)], cs[("per_image", False)])]
    b = [p - q for p, q in zip(cs[("none", True)], cs[("per_image", True)])]
    narrower = [y < x for x, y in zip(a, b)]
    crossing = None
    for e in range(n, 0, -1):
        if not narrower[e - 1]:
            break
        crossing = e
    return {"epochs": list(range(1, n + 1)), "no_augmentation": a, "augmentation_tta": b, "narrower": narrower,
            "crossing_epoch": crossing, "final": {"no_augmentation": a[-1], "augmentation_tta": b[-1]},
            "accuracy": {f"{enc}{'_aug_tta' if aug else ''}": cs[(enc, aug)] for enc, aug in need}}


# --------------------------------------------------------------------------------------------
# What the paper states (for notebook 02's paper-vs-ours table)
# --------------------------------------------------------------------------------------------

PAPER = ("T. Chuman and H. Kiya, Block Scrambling Image Encryption Used in Combination with Data "
         "Augmentation for Privacy-Preserving DNNs (shared/papers/001)")

#: The settings the paper states (Sec. II "Proposed scheme", Sec. III "Simulation condition").
SETTINGS = {
    "dataset": "cifar10",            # 50,000 train / 10,000 test, 32×32, 10 classes
    "model": "ResNet-18",            # our registry: resnet18_cifar
    "block_size": 8,                 # "Bx = By = 8 is used as a block size" (Fig. 2, Sec. II)
    "num_keys": 4,                   # "4 permuted images were generated from every modified image, namely N = 4"
    "key_per_image": True,           # K_{j,s}: image j's own keys; "all images are encrypted by using different security keys"
    "key_redrawn": "every epoch",    # "s is randomly chosen per each epoch"
    "epochs": 250,
    "optimizer": "sgd",
    "batch_size": 128,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "max_lr": 5e-4,                  # "maximum learning rate of 0.0005" (the schedule is not named)
    "train_augmentation": ("random crop, padding 4", "random horizontal flip", "GridMask [Chen et al. 2020]"),
    "augment_before_encryption": True,
    "test_client_augmentation": ("random crop, padding 4", "random horizontal flip"),
    "test_key": "K_T",               # a key of its own for the test image (Sec. II, test step 2)
    "server_tta": ("horizontal flip of the encrypted image",),
}

#: What the paper leaves open, and what this package does about it.
UNSPECIFIED = {
    "lr_schedule": "only a 'maximum learning rate' is given; paper scale uses a one-cycle schedule peaking there",
    "gridmask_parameters": "not given; we use Chen et al.'s ImageNet setting scaled to 32 px (GRIDMASK_32 above)",
    "tta_averaging": "not said how the two predictions are combined; we average softmax probabilities",
    "test_key_relation": "K_T's relation to the training keys is not stated; we draw a fresh key per test image",
}

#: Fig. 3 bar heights: the paper prints none (see the module docstring).
FIG3 = {
    "a": {"caption": "No data augmentation", "plain": None, "block_scrambled": None},
    "b": {"caption": "Data augmentation and test time augmentation", "plain": None, "block_scrambled": None},
}

#: The paper's claims about Fig. 3 (Sec. III "Simulation result"), quoted.
CLAIMS = (
    "the proposed method was confirmed to improve a classification performance under the use of not only "
    "plain images but also encrypted ones",
    "the difference of accuracies between plain images and encrypted ones was reduced compared to the "
    "difference in Fig. 3(a)",
)
