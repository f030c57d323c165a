"""Tests of ppml.datasets (data sets, the embedded Fashion-MNIST sample, photo crops) and
ppml.transforms (batch augmentation: crop, flip, GridMask; encryption in the pipeline)."""

from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ppml.datasets as data
from ppml.datasets import (DATASETS, PHOTO_SOURCES, SMOKE_CONTENT_SHA256, SMOKE_PATH, SMOKE_SHA256, DatasetCorrupt,
                           DatasetNotAvailable, ImageData, dataset_available, dataset_requirements, load_dataset,
                           photo_crops, train_val_split)
from ppml.transforms import Compose, EncryptBatch, GridMask, RandomCrop, RandomHorizontalFlip, ToFloat

REPO = Path(__file__).resolve().parent.parent
DEBIAN = Path("/usr/share/datasets/fashion-mnist")
HAVE_DEBIAN = all((DEBIAN / f"{s}.gz").is_file() for s in data.FASHION_MNIST_IDX_SHA256)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def build_script():
    spec = importlib.util.spec_from_file_location("build_fm", REPO / "scripts" / "build_fashion_mnist_sample.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def smoke_train() -> ImageData:
    return load_dataset("fashion-mnist-smoke", "train")


# ------------------------------------------------------------------------------- ImageData

def test_imagedata_validates_input():
    x = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8"):
        ImageData(x.float(), [0, 0, 0], ["a"], name="t", description="t")
    with pytest.raises(ValueError, match="one label per image"):
        ImageData(x, [0, 0], ["a"], name="t", description="t")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ImageData(x, [0, 1, 0], ["a"], name="t", description="t")
    d = ImageData(x, np.array([0, 0, 0], dtype=np.uint8), ["a"], name="t", description="t")
    assert d.labels.dtype == torch.int64 and d[2][0].shape == (1, 4, 4) and d[2][1] == 0


def test_subset_is_balanced_deterministic_and_checked(smoke_train):
    a = smoke_train.subset(7, seed=3)
    b = smoke_train.subset(7, seed=3)
    c = smoke_train.subset(7, seed=4)
    assert a.labels.bincount().tolist() == [7] * 10
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert "7/class" in a.description and a.name == "fashion-mnist-smoke"
    with pytest.raises(ValueError, match="fewer than n_per_class"):
        smoke_train.subset(501)
    with pytest.raises(ValueError, match="exactly one"):
        smoke_train.subset()
    assert smoke_train.subset(indices=[4, 2]).labels.tolist() == smoke_train.labels[[4, 2]].tolist()


# ------------------------------------------------------------------------ embedded sample

def test_smoke_sample_shapes_padding_channels_and_description(smoke_train):
    test = load_dataset("fashion-mnist-smoke", "test")
    assert smoke_train.images.shape == (5000, 3, 32, 32) and test.images.shape == (1000, 3, 32, 32)
    assert smoke_train.images.dtype == torch.uint8 and smoke_train.labels.dtype == torch.int64
    assert smoke_train.labels.bincount().tolist() == [500] * 10
    assert test.labels.bincount().tolist() == [100] * 10
    assert smoke_train.classes[0] == "T-shirt/top" and smoke_train.classes[9] == "Ankle boot"
    x = smoke_train.images
    # 2-pixel zero border on every side, identical channels, real (non-trivial) content inside.
    assert x[:, :, :2].eq(0).all() and x[:, :, -2:].eq(0).all()
    assert x[:, :, :, :2].eq(0).all() and x[:, :, :, -2:].eq(0).all()
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert 40 < x[:, :, 2:30, 2:30].float().mean() < 120
    assert smoke_train.description == (
        "Fashion-MNIST embedded smoke sample (real images), train split: 5,000 images (500/class, "
        "drawn with a fixed seed from the official 60,000-image train split), 28×28 grey zero-padded "
        "to 32×32 (2 px each side), replicated to 3 channels")
    raw = load_dataset("fashion-mnist-smoke", "train", size=28, channels=1)
    assert raw.images.shape == (5000, 1, 28, 28) and "no padding" in raw.description
    assert torch.equal(raw.images[:, 0], x[:, 0, 2:30, 2:30])
    odd = load_dataset("fashion-mnist_smoke", "test", size=33)
    assert odd.images.shape[-1] == 33 and "2 px top/left, 3 px bottom/right" in odd.description


def test_smoke_file_checksums_and_size():
    blob = SMOKE_PATH.read_bytes()
    assert hashlib.sha256(blob).hexdigest() == SMOKE_SHA256
    assert len(blob) < 4_000_000
    with np.load(SMOKE_PATH) as z:
        arrays = {k: z[k] for k in z.files}
    assert build_script().content_sha256(arrays) == SMOKE_CONTENT_SHA256
    assert set(arrays) == {"images_train", "labels_train", "indices_train",
                           "images_test", "labels_test", "indices_test"}
    assert arrays["images_train"].dtype == np.uint8 and arrays["images_train"].shape == (5000, 28, 28)
    # source indices are distinct positions in the official splits
    assert len(np.unique(arrays["indices_train"])) == 5000 and arrays["indices_train"].max() < 60000
    assert len(np.unique(arrays["indices_test"])) == 1000 and arrays["indices_test"].max() < 10000
    readme = (REPO / "data" / "README.md").read_text()
    assert SMOKE_SHA256 in readme and "## Weights" in readme


def test_smoke_file_corrupt_replaced_or_missing(tmp_path, monkeypatch):
    # A byte flipped inside the compressed data: unreadable or wrong hash → DatasetCorrupt.
    broken = bytearray(SMOKE_PATH.read_bytes())
    broken[len(broken) // 2] ^= 0xFF
    p = tmp_path / "corrupt.npz"
    p.write_bytes(bytes(broken))
    monkeypatch.setattr(data.base, "SMOKE_PATH", p)
    with pytest.raises(DatasetCorrupt, match="corrupt"):
        load_dataset("fashion-mnist-smoke")
    assert not dataset_available("fashion-mnist-smoke")
    # A well-formed file with different content (one pixel changed) → DatasetCorrupt.
    with np.load(SMOKE_PATH) as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["images_train"][0, 10, 10] ^= 1
    q = tmp_path / "replaced.npz"
    np.savez_compressed(q, **arrays)
    monkeypatch.setattr(data.base, "SMOKE_PATH", q)
    with pytest.raises(DatasetCorrupt, match="replaced"):
        load_dataset("fashion-mnist-smoke")
    # Same arrays re-compressed differently (another zlib, another writer): still accepted.
    arrays["images_train"][0, 10, 10] ^= 1
    r = tmp_path / "recompressed.npz"
    np.savez(r, **arrays)
    monkeypatch.setattr(data.base, "SMOKE_PATH", r)
    assert hashlib.sha256(r.read_bytes()).hexdigest() != SMOKE_SHA256
    assert len(load_dataset("fashion-mnist-smoke", "test")) == 1000
    monkeypatch.setattr(data.base, "SMOKE_PATH", tmp_path / "missing.npz")
    with pytest.raises(DatasetNotAvailable, match="git checkout"):
        load_dataset("fashion-mnist-smoke")


@pytest.mark.skipif(not HAVE_DEBIAN, reason="needs apt-get install -y dataset-fashion-mnist")
def test_build_script_rebuilds_the_sample_bit_for_bit(tmp_path):
    out = tmp_path / "rebuilt.npz"
    assert build_script().main(["--source", str(DEBIAN), "--out", str(out)]) == 0
    assert hashlib.sha256(out.read_bytes()).hexdigest() == SMOKE_SHA256


@pytest.mark.skipif(not HAVE_DEBIAN, reason="needs apt-get install -y dataset-fashion-mnist")
def test_full_fashion_mnist_from_debian_package_matches_sample(tmp_path):
    full = load_dataset("fashion-mnist", "test", root=tmp_path)
    assert full.images.shape == (10000, 3, 32, 32) and full.labels.bincount().tolist() == [1000] * 10
    assert "Fashion-MNIST (full, real images), test split: 10,000 images" in full.description
    assert (tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    assert dataset_available("fashion-mnist", root=tmp_path)
    with np.load(SMOKE_PATH) as z:
        idx = torch.from_numpy(z["indices_test"].astype(np.int64))
    smoke = load_dataset("fashion-mnist-smoke", "test")
    assert torch.equal(full.images[idx], smoke.images) and torch.equal(full.labels[idx], smoke.labels)


def test_full_fashion_mnist_missing_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(data.base, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    monkeypatch.delenv("PPML_DOWNLOAD", raising=False)
    assert not dataset_available("fashion-mnist", root=tmp_path)
    with pytest.raises(DatasetNotAvailable) as e:
        load_dataset("fashion-mnist", "train", root=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in msg and "apt-get install -y dataset-fashion-mnist" in msg


# ------------------------------------------------------------- torchvision sets, arguments

@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                                          ("svhn", "svhn"), ("imagenette", "imagenette2-320")])
def test_missing_torchvision_dataset_gives_clear_error(tmp_path, monkeypatch, name, folder):
    monkeypatch.delenv("PPML_DOWNLOAD", raising=False)
    assert not dataset_available(name, root=tmp_path)
    with pytest.raises(DatasetNotAvailable) as e:
        load_dataset(name, "train", root=tmp_path)
    assert isinstance(e.value, FileNotFoundError)
    msg = str(e.value)
    assert repr(name) in msg and folder in msg and str(tmp_path) in msg and "download=True" in msg
    assert folder in dataset_requirements(name, root=tmp_path)


def test_argument_validation(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="valid names: cifar10, cifar100, svhn, imagenette"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="valid splits: train, test, extra"):
        load_dataset("svhn", "validation")
    with pytest.raises(ValueError, match="valid splits: train, test$"):
        load_dataset("fashion-mnist-smoke", "val")
    with pytest.raises(ValueError, match="channels"):
        load_dataset("fashion-mnist-smoke", channels=2)
    with pytest.raises(ValueError, match="size"):
        load_dataset("fashion-mnist-smoke", size=0)
    with pytest.raises(ValueError, match="never shrunk"):
        load_dataset("fashion-mnist-smoke", size=20)
    with pytest.raises(ValueError, match="variant"):
        load_dataset("imagenette", variant="640px")
    monkeypatch.setenv("PPML_DATA", str(tmp_path))
    assert data.default_root() == tmp_path
    assert set(DATASETS) == set(data.SPLITS)


# ---------------------------------------------------------------------------- photo crops

def test_photo_crops_all_sources_offline_and_deterministic():
    for s in PHOTO_SOURCES:
        x = photo_crops(2, size=32, seed=0, sources=[s])
        assert x.shape == (2, 3, 32, 32) and x.dtype == torch.uint8 and x.float().std() > 1
    a, b, c = photo_crops(16, seed=5), photo_crops(16, seed=5), photo_crops(16, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len({bytes(t.numpy()) for t in a}) == 16  # distinct crops


def test_photo_crops_native_windows_are_exact_pieces_of_the_photo():
    crops = photo_crops(3, size=16, seed=2, sources=["astronaut"], scale=None)
    photo = data._photo("astronaut").numpy()
    rows = np.lib.stride_tricks.sliding_window_view(photo, (3, 1, 16))[0]  # (H, W-15, 3, 1, 16)
    for crop in crops.numpy():
        hits = np.argwhere((rows[..., 0, :] == crop[:, 0, :]).all(axis=(-1, -2)))
        assert any((photo[:, t:t + 16, l:l + 16] == crop).all() for t, l in hits if t + 16 <= photo.shape[1])


def test_photo_crops_validation():
    with pytest.raises(ValueError, match="unknown photo source"):
        photo_crops(1, sources=["lena"])
    with pytest.raises(ValueError, match="larger than photo"):
        photo_crops(1, size=400, sources=["chelsea"])
    with pytest.raises(ValueError, match="non-negative"):
        photo_crops(-1)
    with pytest.raises(ValueError, match="scale"):
        photo_crops(1, scale=(0.5, 0.1))
    assert photo_crops(0).shape == (0, 3, 32, 32)


# ----------------------------------------------------------------------------- RandomCrop

def test_random_crop_padding_zero_is_identity():
    x = torch.randint(0, 256, (8, 3, 12, 10), dtype=torch.uint8, generator=gen(1))
    assert torch.equal(RandomCrop((12, 10), padding=0)(x, gen(0)), x)


def test_random_crop_shifts_content_exactly():
    n, c, h, w, p = 64, 2, 6, 5, 3
    x = torch.randint(1, 256, (n, c, h, w), dtype=torch.uint8, generator=gen(2))
    t = RandomCrop((h, w), padding=p, fill=0)
    top, left = t.offsets(n, h, w, gen(7))
    y = t(x, gen(7))
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert set(top.tolist()) == set(range(2 * p + 1))  # every shift occurs
    for i in range(n):
        dy, dx = int(top[i]) - p, int(left[i]) - p  # output (r, s) shows input (r + dy, s + dx)
        for r in range(h):
            for s in range(w):
                src_r, src_s = r + dy, s + dx
                want = x[i, :, src_r, src_s] if (0 <= src_r < h and 0 <= src_s < w) else torch.zeros(c)
                assert torch.equal(y[i, :, r, s], want.to(torch.uint8))
    # A crop as large as the padded image has only one position: the padded image itself.
    big = RandomCrop((h + 2, w + 2), padding=1, fill=7)(x.float(), gen(0))
    assert torch.equal(big, torch.nn.functional.pad(x.float(), (1, 1, 1, 1), value=7.0))
    with pytest.raises(ValueError, match="larger than the padded image"):
        RandomCrop(20, padding=1)(x, gen(0))
    with pytest.raises(ValueError, match="batch tensor"):
        RandomCrop(4)(x[0], gen(0))


# ---------------------------------------------------------------------------------- Flip

def test_flip():
    x = torch.rand(50, 3, 4, 6, generator=gen(0))
    assert torch.equal(RandomHorizontalFlip(p=1.0)(x, gen(0)), torch.flip(x, dims=[-1]))
    assert torch.equal(RandomHorizontalFlip(p=0.0)(x, gen(0)), x)
    y = RandomHorizontalFlip(p=0.5)(x, gen(3))
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    assert flipped.logical_or((y == x).flatten(1).all(1)).all() and 10 < int(flipped.sum()) < 40
    with pytest.raises(ValueError, match="p must"):
        RandomHorizontalFlip(p=1.5)


# ------------------------------------------------------------------------------ GridMask

def _chen_expected_masked(d1: int, d2: int, ratio: float, prob: float) -> float:
    # Removed stripes of width l = floor(d·ratio + 0.5) every d pixels in both directions: a
    # pixel survives iff its row phase and column phase (each uniform over the d positions of a
    # unit, because the offsets are uniform on [0, d)) both avoid the l removed positions, so
    # P(masked | d) = 1 − (1 − l/d)², averaged over d uniform on [d1, d2), times prob.
    fr = [1 - (1 - math.floor(d * ratio + 0.5) / d) ** 2 for d in range(d1, d2)]
    return prob * sum(fr) / len(fr)


@pytest.mark.parametrize("d1, d2, ratio, prob", [(8, 17, 0.5, 0.8), (3, 12, 0.3, 1.0), (24, 33, 0.6, 0.5)])
def test_gridmask_masked_fraction_matches_expectation(d1, d2, ratio, prob):
    gm = GridMask(d1, d2, ratio=ratio, rotate=1, prob=prob, mode=0)
    n = 3000
    keep = gm.sample_mask(n, 32, 32, gen(11))
    per_image = 1 - keep.float().mean(dim=(1, 2))
    expected = _chen_expected_masked(d1, d2, ratio, prob)
    assert gm.expected_masked_fraction() == pytest.approx(expected)
    tol = 5 * float(per_image.std()) / math.sqrt(n) + 1e-3
    assert abs(float(per_image.mean()) - expected) < tol
    # each image is masked with probability prob
    applied = float((per_image > 0).float().mean())
    assert abs(applied - prob) < 5 * math.sqrt(prob * (1 - prob) / n) + 1e-3


def test_gridmask_with_rotation_keeps_the_fraction_roughly():
    gm = GridMask(8, 17, ratio=0.5, rotate=360, prob=1.0)
    keep = gm.sample_mask(2000, 32, 32, gen(5))
    assert abs(float(1 - keep.float().mean()) - gm.expected_masked_fraction()) < 0.03


def _pil_reference_mask(h, w, d, l, st_h, st_w, angle):
    """Chen et al.'s recipe drawn the slow way: a 1.5× mask of stripes, PIL rotation, centre crop."""
    from PIL import Image
    hh, ww = int(1.5 * h), int(1.5 * w)
    m = np.ones((hh, ww), np.uint8)
    m[(np.arange(hh) - st_h) % d < l, :] = 0
    m[:, (np.arange(ww) - st_w) % d < l] = 0
    m = np.asarray(Image.fromarray(m).rotate(angle))
    return m[(hh - h) // 2:(hh - h) // 2 + h, (ww - w) // 2:(ww - w) // 2 + w].astype(bool)


def test_gridmask_geometry_matches_pil_reference():
    gm = GridMask(3, 20, ratio=0.5, rotate=360)
    rng = np.random.default_rng(0)
    agree = total = 0
    for i in range(60):
        h, w = (32, 32) if i % 2 else (24, 40)
        d = int(rng.integers(3, 20))
        st_h, st_w, angle = int(rng.integers(d)), int(rng.integers(d)), int(rng.integers(360))
        ours = gm.mask_from_params(h, w, torch.tensor([d]), torch.tensor([st_h]), torch.tensor([st_w]),
                                   torch.tensor([angle]))[0].numpy()
        ref = _pil_reference_mask(h, w, d, math.floor(d * 0.5 + 0.5), st_h, st_w, angle)
        if angle == 0:
            assert (ours == ref).all()
        agree += int((ours == ref).sum())
        total += ours.size
    assert agree / total > 0.999  # only pixel centres exactly on a rounding boundary may differ


def test_gridmask_reproducible_modes_and_dtypes():
    x = torch.randint(1, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=gen(0))
    gm = GridMask(8, 17, ratio=0.5, rotate=30, prob=1.0)
    a, b, c = gm(x, gen(1)), gm(x, gen(1)), gm(x, gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.dtype == torch.uint8
    removed = a == 0
    assert torch.equal(removed[:, 0], removed[:, 1]) and torch.equal(removed[:, 0], removed[:, 2])
    f = gm(x.float() / 255, gen(1))
    assert torch.equal(f == 0, removed)
    inv = GridMask(8, 17, ratio=0.5, rotate=30, prob=1.0, mode=1)
    assert torch.equal(inv.sample_mask(16, 32, 32, gen(1)), ~gm.sample_mask(16, 32, 32, gen(1)))
    assert torch.equal(GridMask(8, 17, prob=0.0)(x, gen(1)), x)
    for bad in [dict(d1=5, d2=5), dict(d1=0, d2=4), dict(d1=2, d2=8, rotate=0), dict(d1=2, d2=8, mode=2),
                dict(d1=2, d2=8, prob=2.0), dict(d1=2, d2=8, ratio=-0.1)]:
        with pytest.raises(ValueError):
            GridMask(**bad)


# -------------------------------------------------------------- pipelines and generators

def test_pipeline_is_resumable_from_generator_state(smoke_train):
    t = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), GridMask(8, 17, rotate=1, prob=0.8),
                 ToFloat()])
    x1, x2 = smoke_train.images[:32], smoke_train.images[32:64]
    g = gen(42)
    y1 = t(x1, g)
    state = g.get_state()
    y2 = t(x2, g)
    g_resumed = torch.Generator()
    g_resumed.set_state(state)
    assert torch.equal(t(x2, g_resumed), y2)
    assert y1.dtype == torch.float32 and float(y1.max()) <= 1.0
    assert torch.equal(ToFloat()(y1), y1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_augmentation_on_cpu_and_cuda_with_a_cpu_generator():
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=gen(0))
    t = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), GridMask(8, 17, rotate=360, prob=0.8)])
    assert torch.equal(t(x, gen(3)), t(x.cuda(), gen(3)).cpu())


def test_train_val_split():
    d = ImageData(torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 3, 2, 2).contiguous(),
                  [i % 2 for i in range(20)], ["a", "b"], name="toy", description="toy")
    tr, va = train_val_split(d, 5, seed=1)
    ids = sorted(tr.images[:, 0, 0, 0].tolist() + va.images[:, 0, 0, 0].tolist())
    assert len(va) == 5 and ids == list(range(20))
    tr2, va2 = train_val_split(d, 5, seed=1)
    assert torch.equal(va.images, va2.images)
    with pytest.raises(ValueError, match="val_size must be an int in \\(0, 20\\)"):
        train_val_split(d, 20)


# ------------------------------------------------------------------ parameters drawn apart, replay
def test_transforms_draw_parameters_apart_and_replay_them():
    from ppml.transforms import crop, flip_where, gridmask_keep, mask

    x = torch.randint(0, 256, (12, 3, 32, 32), generator=gen(0), dtype=torch.uint8)
    other = torch.randint(0, 256, (12, 3, 32, 32), generator=gen(1), dtype=torch.uint8)
    for t in (RandomCrop(32, padding=4, fill=9), RandomHorizontalFlip(), GridMask(8, 17, rotate=360, prob=0.8),
              EncryptBatch(block_scramble_keys_for_test())):
        y = t(x, gen(5))
        # forward == make_params then apply, drawing the same numbers from the generator
        g = gen(5)
        p = t.make_params(x, g)
        assert torch.equal(t.apply(x, p), y)
        assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=_after(t, x, 5)))
        # replay: the stored parameters transform another batch exactly as a fresh draw would
        assert torch.equal(t.apply(other, t.last_params), t(other, gen(5)))
    # the modules are thin: their output is the kernel of the drawn parameters
    c = RandomCrop((28, 30), padding=2)
    y = c(x, gen(2))
    assert torch.equal(y, crop(x, c.last_params["top"], c.last_params["left"], (28, 30), padding=2))
    f = RandomHorizontalFlip(p=0.5)
    y = f(x, gen(3))
    assert torch.equal(f.inverse(y), x) and torch.equal(y, flip_where(x, f.last_params["flip"]))
    assert 0 < int(f.last_params["flip"].sum()) < 12
    gm = GridMask(8, 17, ratio=0.5, rotate=30, prob=1.0)
    y = gm(x, gen(4))
    q = gm.last_params
    keep = gridmask_keep(32, 32, q["d"], q["st_h"], q["st_w"], q["angle"], ratio=0.5)
    assert torch.equal(y, mask(x, keep))
    with pytest.raises(ValueError, match="no matching previous call"):
        RandomHorizontalFlip().inverse(x)


def block_scramble_keys_for_test():
    from ppml.keys import BlockScrambleKey

    return [BlockScrambleKey.generate(image_size=32, block_size=8, seed=s) for s in range(3)]


def _after(t, x, seed):
    """A generator advanced by one call of ``t`` on ``x``."""
    g = gen(seed)
    t(x, g)
    return g


# --------------------------------------------------------------------------- EncryptBatch

class PixelPermutation(nn.Module):
    """Stand-in cipher: a fixed permutation of the C·H·W values of each image; counts calls."""

    def __init__(self, shape, seed):
        super().__init__()
        n = int(np.prod(shape))
        self.shape = shape
        self.register_buffer("perm", torch.randperm(n, generator=gen(seed)))
        self.register_buffer("inv", torch.argsort(self.perm))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x.flatten(1)[:, self.perm].reshape(x.shape)

    def inverse(self, y):
        return y.flatten(1)[:, self.inv].reshape(y.shape)


def test_encrypt_single_cipher():
    c = PixelPermutation((3, 4, 4), seed=0)
    enc = EncryptBatch(c)
    x = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8, generator=gen(0))
    y = enc(x, gen(0))
    assert torch.equal(y, c(x)) and torch.equal(enc.inverse(y), x) and enc.num_keys == 1
    assert enc.last_keys.tolist() == [0] * 10


def test_encrypt_per_image_keys_redrawn_each_call_loop_over_keys():
    ciphers = [PixelPermutation((3, 4, 4), seed=s) for s in range(4)]
    enc = EncryptBatch(ciphers)
    x = torch.randint(0, 256, (200, 3, 4, 4), dtype=torch.uint8, generator=gen(0))
    g = gen(9)
    y = enc(x, g)
    k1 = enc.last_keys.clone()
    for i in range(len(x)):
        assert torch.equal(y[i], ciphers[int(k1[i])](x[i:i + 1])[0])
    assert sorted(set(k1.tolist())) == [0, 1, 2, 3]
    for c in ciphers:
        c.calls = 0
    enc(x, g)
    k2 = enc.last_keys.clone()
    assert [c.calls for c in ciphers] == [1, 1, 1, 1]  # one call per key, not per image
    assert not torch.equal(k1, k2)  # re-drawn on every call (every epoch)
    assert torch.equal(enc.inverse(enc(x, gen(9))), x)
    y_again = enc(x, gen(9))
    assert torch.equal(y_again, y) and torch.equal(enc.last_keys, k1)  # reproducible from the seed
    fixed = enc(x, keys=2)
    assert torch.equal(fixed, ciphers[2](x)) and torch.equal(enc.inverse(fixed, keys=2), x)
    with pytest.raises(ValueError, match="one index per image"):
        enc(x, keys=[0, 1])
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        enc(x, keys=5)
    with pytest.raises(ValueError, match="at least one"):
        EncryptBatch([])


def test_encrypt_with_real_block_scramble(smoke_train):
    from ppml.ciphers import BlockScramble, cipher_for
    from ppml.keys import BlockScrambleKey

    keys = [BlockScrambleKey.generate(image_size=32, block_size=8, seed=s) for s in range(4)]
    enc = EncryptBatch(keys)  # key objects → ciphers via cipher_for
    assert all(isinstance(c, BlockScramble) for c in enc.ciphers)
    pipeline = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), GridMask(8, 17, prob=0.8), enc])
    x = smoke_train.images[:64]
    y = pipeline(x, gen(0))
    assert y.dtype == torch.uint8 and y.shape == x.shape
    plain = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), GridMask(8, 17, prob=0.8)])(x, gen(0))
    for i in range(len(x)):
        assert torch.equal(y[i:i + 1], cipher_for(keys[int(enc.last_keys[i])])(plain[i:i + 1]))
    assert torch.equal(enc.inverse(y), plain)  # encryption came after augmentation, exactly


def test_encrypt_batch_follows_to_and_keeps_pipelines_whole():
    from ppml.ciphers import cipher_for
    from ppml.keys import BlockScrambleKey

    keys = [BlockScrambleKey.generate(image_size=32, block_size=8, seed=s) for s in range(3)]
    enc = EncryptBatch(keys)
    assert enc.to("cpu") is enc  # nn.Module._apply must not be shadowed
    pipeline = Compose([RandomCrop(32, padding=4), enc]).to("cpu")
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    assert pipeline(x, gen(1)).shape == x.shape
    # a Sequential is one cipher (a pipeline), not a key set
    seq = nn.Sequential(cipher_for(keys[0]), cipher_for(keys[1]))
    one = EncryptBatch(seq)
    assert one.num_keys == 1 and torch.equal(one(x, gen(0)), seq(x))
    with pytest.raises(ValueError, match="neither a cipher module, a callable nor a ppml key"):
        EncryptBatch([object()])


@pytest.mark.parametrize("scheme", ["EtCKey", "LEKey", "PEKey"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_encrypt_batch_of_ppml_ciphers_is_one_key_set_equal_to_the_loop_over_keys(scheme, dtype):
    import ppml.keys as pk
    from ppml.ciphers import cipher_for

    cls = getattr(pk, scheme)
    kw = {} if scheme == "PEKey" else {"block_size": 4}
    keys = [cls.generate(image_size=8, seed=s, **kw) for s in range(3)]
    enc = EncryptBatch(keys)
    x = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=gen(2))
    x = x if dtype == torch.uint8 else x.to(dtype) / 255
    y = enc(x, gen(4))
    key_set = enc._key_set()
    assert key_set is not None and key_set.num_keys == 3 and key_set.keys == tuple(keys)
    # image n under key last_keys[n], exactly the single-key cipher's result
    for k in range(3):
        sel = enc.last_keys == k
        assert torch.equal(y[sel], cipher_for(keys[k])(x[sel]))
    assert torch.equal(enc.inverse(y), x if dtype == torch.uint8 else (x * 255).round() / 255)
    # the key set is a cache: state_dict holds the ciphers' tables once, as before
    assert sorted(enc.state_dict()) == sorted(f"ciphers.{i}.{n}" for i, c in enumerate(enc.ciphers)
                                              for n in c.state_dict())
    assert enc._key_set() is key_set  # built once
    enc.ciphers[1] = cipher_for(keys[0])  # swapping a cipher rebuilds it
    assert enc._key_set() is not key_set and enc._key_set().keys == (keys[0], keys[0], keys[2])


def test_encrypt_batch_falls_back_to_the_loop_over_keys_for_other_modules():
    from ppml.ciphers import cipher_for
    from ppml.keys import EtCKey

    ks = EtCKey.generate_many(2, image_size=8, block_size=4, seed=0)
    mixed = EncryptBatch([cipher_for(ks[0]), nn.Sequential(cipher_for(ks[1]))])  # not one key set
    assert mixed._key_set() is None
    x = torch.randint(0, 256, (9, 3, 8, 8), dtype=torch.uint8, generator=gen(0))
    y = mixed(x, gen(1))
    for k in range(2):
        sel = mixed.last_keys == k
        assert torch.equal(y[sel], cipher_for(ks[k])(x[sel]))
