"""Paper-scale rehearsal: every notebook's paper path on tiny stand-in data, without a GPU.

``python -m ppml.reproduce --scale paper --rehearse [NOTEBOOK …]`` runs each notebook with
``notebooks/params/paper.yaml`` — the papers' models (WRN-40-10, PyramidNet-110 + ShakeDrop,
ResNet-18/20, ConvMixer, ViT-B/16 at 224 px, the U-Net), optimisers, schedules, batch sizes
and code paths — but on stand-in data so that a crash shows up in minutes instead of at
hour nine of a multi-day GPU run. Nothing it writes is a result:

* **Data**: :func:`write_standins` writes CIFAR-10/100 (python pickles), SVHN (``.mat``) and
  Imagenette (the ``imagenette2-320/{train,val}/<wnid>/*.JPEG`` tree) in their real on-disk
  formats into a temporary root (``PPML_DATA``), so they load through
  :func:`ppml.datasets.load_dataset` and torchvision's own readers. A ``.ppml-rehearsal`` marker
  in that root is the only thing that lets :mod:`ppml.datasets` skip torchvision's md5 checks.
* **Weights**: randomly initialised ones where pretrained ones are needed, placed where the
  loaders look, in the temporary root only: ``$TORCH_HOME/hub/checkpoints`` (AlexNet/VGG16
  trunks, the FID Inception) and ``$HF_HOME/hub`` (timm's ViT-B/16 ImageNet-21k weights).
  ``HF_HUB_OFFLINE=1``, ``PPML_DOWNLOAD=0``: nothing downloads.
* **Training**: ``PPML_REHEARSE_STEPS`` (default 1) optimisation steps per epoch, at most
  ``PPML_REHEARSE_EPOCHS`` (1) epochs and a batch of at most ``PPML_REHEARSE_BATCH`` (4),
  honoured by :func:`ppml.train.fit`; bf16 autocast on the CPU (``PPML_CPU_AMP=bf16``) so the
  AMP path runs; the schedules are built for the paper's epochs as in a real run.
* **Counts**: image counts in the parameter file (e.g. ``attack_n_train: 50000``) are scaled
  by the stand-in/real size ratio (:data:`SCALED_COUNTS`), so an index that overruns the
  real data set overruns the stand-in too; repeat counts shrink (:data:`OVERRIDES`).
* **Stamp**: the kernel's :class:`ppml.report.Report` says ``paper (rehearsal)`` in every
  caption and figure, ``results.json`` gets ``"rehearsal": true`` and the checks that failed
  (a check on an accuracy cannot hold on noise: it is recorded, not raised). Everything goes
  to ``build/rehearsal/`` — never to ``figures/``.

One training also runs data-parallel under ``torchrun --nproc_per_node 2`` (gloo):
:func:`ddp_main` (``python -m ppml.rehearsal ddp``).

>>> import tempfile
>>> root = write_standins(tempfile.mkdtemp(), datasets=["cifar10"], weights=False)
>>> from ppml.datasets import load_dataset
>>> d = load_dataset("cifar10", "train", root=root); tuple(d.images.shape), d.num_classes
((200, 3, 32, 32), 10)
"""

from __future__ import annotations

import math
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

__all__ = ["MARKER", "STANDIN_SIZES", "REAL_SIZES", "SCALED_COUNTS", "OVERRIDES", "write_standins",
           "write_weights", "rehearsal_env", "rehearsal_params", "activate_in_kernel", "is_standin_root",
           "ddp_main", "STAMP"]

#: Marker file in a stand-in root: only a root carrying it may skip torchvision's md5 checks.
MARKER = ".ppml-rehearsal"
STAMP = "rehearsal — not results"
#: (train, test) images per stand-in data set (every class of the test split where it has room).
#: CIFAR-10 has 20 per class in train: notebook 02 takes ``train.subset(20)`` (20 per class);
#: CIFAR-100 has every class in test: notebook 04 shows one test image of each class.
STANDIN_SIZES: dict[str, tuple[int, int]] = {"cifar10": (200, 10), "cifar100": (20, 100), "svhn": (20, 10),
                                            "imagenette": (20, 10)}
#: (train, test) images of the real data sets (Imagenette: train / val of the 320 px variant).
REAL_SIZES: dict[str, tuple[int, int]] = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000),
                                         "svhn": (73_257, 26_032), "imagenette": (9_469, 3_925)}
#: notebook → parameter → (data set, split) whose size the count refers to: scaled by stand-in/real.
SCALED_COUNTS: dict[str, dict[str, tuple[str, str]]] = {
    "03_isotropic_etc": {"table4_n": ("cifar10", "all"), "lpips_n": ("cifar10", "test"),
                         "attack_n_train": ("cifar10", "train"), "attack_n_test": ("cifar10", "test")},
    "04_transformation_network": {"val_size": ("*", "train"), "itn_train_size": ("cifar10", "train")},
    "05_key_generation": {"fig3_images": ("cifar10", "train"), "niqe_images": ("cifar10", "train"),
                          "search_images": ("cifar10", "train"), "train_images": ("cifar10", "train")},
}
#: Loop counts that only repeat a code path (kept >= 2 where a standard deviation is taken),
#: and loops that do not go through ``ppml.train.fit`` (so ignore PPML_REHEARSE_STEPS).
OVERRIDES: dict[str, dict[str, Any]] = {
    # ppml.attacks.gan has its own loop; the Eq. (4)/(5) checks run ~100 ViT-B/16 forwards at 224 px
    # (two probe images); one photo crop per jigsaw puzzle size (the largest, 3,136 pieces, still runs)
    "03_isotropic_etc": {"gan_epochs": 1, "gan_le_epochs": 1, "eq_probe_n": 2, "jigsaw_n": 1},
    # one data set per on-disk format (SVHN .mat, CIFAR pickles: CIFAR-100 also runs the 100-class
    # heads; CIFAR-10's pickles load in every other notebook): 24 of the 36 paper trainings; fewer
    # test-time views (each is a forward pass of WRN-40-10 / PyramidNet over the test set);
    # the InstaHide attack on 8 private images x 8 encodings (its code path at any size)
    "01_scramblemix": {"datasets": ["svhn", "cifar100"], "tta_max": 2, "instahide_tta": 2, "posterior_views": 4,
                       "attack_originals": 8, "attack_encodings_per_image": 8, "attack_public": 32},
    # Fig. 3 scores 11 ratios x repeats with FID/NIQE (Inception at 299 px): a handful of images.
    "05_key_generation": {"fig3_images": 8, "niqe_images": 2, "fig3_lpips_images": 8, "fig3_repeats": 1, "fig3_steps": 2,
                          "trials": 3,
                          "repeats": 2, "train_seeds": 1},
}
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# --------------------------------------------------------------------------- stand-in data
def _images(rng: np.random.Generator, labels: np.ndarray, size: tuple[int, int], classes: int) -> np.ndarray:
    """Smooth class-dependent colour fields plus noise, uint8 (N, H, W, 3): real-looking enough
    for JPEG, LPIPS and attacks to run, cheap to make."""
    n = len(labels)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    hue = (labels[:, None, None, None] / max(classes, 1)) * 2 * np.pi
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1, 3)).astype(np.float32)
    freq = rng.uniform(1, 4, (n, 1, 1, 1)).astype(np.float32) / max(h, w)
    base = 127 + 80 * np.sin(2 * np.pi * freq * (xx[None, :, :, None] + yy[None, :, :, None]) + hue + phase)
    x = base + rng.normal(0, 20, (n, h, w, 3))
    return np.clip(x, 0, 255).astype(np.uint8)


def _labels(n: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    per = np.arange(n) % classes if n >= classes else rng.choice(classes, n, replace=False)
    return np.sort(per).astype(np.int64)


def _dump(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _write_cifar(root: Path, name: str, rng: np.random.Generator) -> None:
    ntr, nte = STANDIN_SIZES[name]
    classes = 10 if name == "cifar10" else 100
    split = {}
    for sp, n in (("train", ntr), ("test", nte)):
        y = _labels(n, classes, rng)
        x = _images(rng, y, (32, 32), classes).transpose(0, 3, 1, 2).reshape(n, 3072)  # CHW rows, as CIFAR
        split[sp] = (x, y)
    if name == "cifar10":
        d = root / "cifar-10-batches-py"
        x, y = split["train"]
        for i, part in enumerate(np.array_split(np.arange(ntr), 5), 1):
            _dump(d / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5 (rehearsal stand-in)",
                                          "labels": y[part].tolist(), "data": x[part],
                                          "filenames": [f"standin_{j}.png" for j in part]})
        x, y = split["test"]
        _dump(d / "test_batch", {"batch_label": "testing batch 1 of 1 (rehearsal stand-in)", "labels": y.tolist(),
                                 "data": x, "filenames": [f"standin_{j}.png" for j in range(nte)]})
        _dump(d / "batches.meta", {"num_cases_per_batch": max(1, ntr // 5), "label_names": list(CIFAR10_NAMES),
                                   "num_vis": 3072})
    else:
        d = root / "cifar-100-python"
        for sp in ("train", "test"):
            x, y = split[sp]
            _dump(d / sp, {"filenames": [f"standin_{j}.png" for j in range(len(y))], "batch_label": f"{sp} (stand-in)",
                           "fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist(), "data": x})
        _dump(d / "meta", {"fine_label_names": [f"class{i:02d}" for i in range(100)],
                           "coarse_label_names": [f"super{i:02d}" for i in range(20)]})


def _write_svhn(root: Path, rng: np.random.Generator) -> None:
    import scipy.io

    d = root / "svhn"
    d.mkdir(parents=True, exist_ok=True)
    for sp, n in zip(("train", "test"), STANDIN_SIZES["svhn"]):
        y = _labels(n, 10, rng)
        x = _images(rng, y, (32, 32), 10).transpose(1, 2, 3, 0)  # (32, 32, 3, N) as the .mat files
        yy = np.where(y == 0, 10, y).astype(np.uint8)[:, None]  # SVHN writes digit 0 as label 10
        scipy.io.savemat(d / f"{sp}_32x32.mat", {"X": x, "y": yy}, do_compression=False)


def _write_imagenette(root: Path, rng: np.random.Generator) -> None:
    from PIL import Image
    from torchvision.datasets import Imagenette

    wnids = sorted(Imagenette._WNID_TO_CLASS)
    base = root / "imagenette2-320"
    for sp, n in zip(("train", "val"), STANDIN_SIZES["imagenette"]):
        y = _labels(n, len(wnids), rng)
        for i, lab in enumerate(y):
            w = int(rng.integers(320, 480))  # the 320 px variant: shorter side 320, as the real files
            img = _images(rng, np.array([lab]), (320, w), len(wnids))[0]
            p = base / sp / wnids[lab] / f"{wnids[lab]}_{i:05d}.JPEG"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(p, "JPEG", quality=90)


def write_standins(root: str | os.PathLike, *, datasets: Iterable[str] | None = None, weights: bool = True,
                   seed: int = 0) -> Path:
    """Write stand-in data sets (and, with ``weights``, random weights) into ``root``.

    Returns ``root``. The marker file :data:`MARKER` says the root holds stand-ins.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("stand-in data and random weights for `ppml.reproduce --rehearse`: not real data\n")
    rng = np.random.default_rng(seed)
    for name in (datasets if datasets is not None else STANDIN_SIZES):
        if name in ("cifar10", "cifar100"):
            _write_cifar(root, name, rng)
        elif name == "svhn":
            _write_svhn(root, rng)
        elif name == "imagenette":
            _write_imagenette(root, rng)
        else:
            raise ValueError(f"no stand-in for data set {name!r}; stand-ins: {', '.join(STANDIN_SIZES)}")
    if weights:
        write_weights(root)
    return root


def is_standin_root(root: str | os.PathLike) -> bool:
    """True when ``root`` was written by :func:`write_standins` (its marker file is there)."""
    return (Path(root) / MARKER).is_file()


# --------------------------------------------------------------------------- random weights
def _random_state(module: Any, seed: int = 0, dtype: Any = None) -> dict:
    """Random weights for ``module``'s state-dict layout (built on the meta device: no init cost).
    BatchNorm-style running variances are 1 so that activations stay finite."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in module.state_dict().items():
        if not v.is_floating_point():
            out[k] = torch.zeros(v.shape, dtype=v.dtype)
        elif k.endswith(("running_var", ".weight")) and v.ndim == 1:
            out[k] = torch.ones(v.shape)
        elif k.endswith(("running_mean", "bias")):
            out[k] = torch.zeros(v.shape)
        else:
            fan_in = max(1, int(np.prod(v.shape[1:])))
            out[k] = torch.randn(v.shape, generator=g) * (2.0 / fan_in) ** 0.5
        if dtype is not None and out[k].is_floating_point():
            out[k] = out[k].to(dtype)
    return out


def write_weights(root: str | os.PathLike) -> None:
    """Random weights where the real ones are looked for, all under ``root``:
    ``root/torch/hub/checkpoints`` (TORCH_HOME) and ``root/hf/hub`` (HF_HOME)."""
    import torch
    import torchvision.models as tvm

    root = Path(root)
    ck = root / "torch" / "hub" / "checkpoints"
    ck.mkdir(parents=True, exist_ok=True)
    (ck.parent / MARKER).write_text("random weights (rehearsal): torchvision/pytorch-fid files without their real hashes\n")
    torch.manual_seed(0)
    # ppml.pretrained reads only the ``features.*`` entries of torchvision's files.
    for name, make in (("alexnet-owt-7be5be79.pth", tvm.alexnet), ("vgg16-397923af.pth", tvm.vgg16)):
        with torch.device("meta"):
            feats = make().features
        torch.save({f"features.{k}": v for k, v in _random_state(feats).items()}, ck / name)
    try:  # pytorch-fid's Inception (FID and Inception Score); optional dependency
        from pytorch_fid import inception as fi

        with torch.device("meta"):
            net = fi._inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
        for attr, mod in (("Mixed_5b", fi.FIDInceptionA(192, pool_features=32)),
                          ("Mixed_5c", fi.FIDInceptionA(256, pool_features=64)),
                          ("Mixed_5d", fi.FIDInceptionA(288, pool_features=64)),
                          ("Mixed_6b", fi.FIDInceptionC(768, channels_7x7=128)),
                          ("Mixed_6c", fi.FIDInceptionC(768, channels_7x7=160)),
                          ("Mixed_6d", fi.FIDInceptionC(768, channels_7x7=160)),
                          ("Mixed_6e", fi.FIDInceptionC(768, channels_7x7=192)),
                          ("Mixed_7b", fi.FIDInceptionE_1(1280)), ("Mixed_7c", fi.FIDInceptionE_2(2048))):
            setattr(net, attr, mod.to("meta"))
        torch.save(_random_state(net), ck / "pt_inception-2015-12-05-6726825d.pth")
    except ImportError:
        pass
    _write_timm_hf(root / "hf" / "hub", "vit_base_patch16_224.augreg_in21k")


def _write_timm_hf(hub: Path, name: str) -> None:
    """timm's pretrained weights ``name`` as a Hugging Face cache entry (random, float16 to halve the file)."""
    import timm
    import torch
    from safetensors.torch import save_file

    arch, _, tag = name.partition(".")
    cfg = timm.models.get_pretrained_cfg(name)
    repo = cfg.hf_hub_id or f"timm/{name}"
    with torch.device("meta"):
        skeleton = timm.create_model(arch, pretrained=False, num_classes=cfg.num_classes)
    state = _random_state(skeleton, dtype=torch.float16)
    rev = "0" * 40
    d = hub / f"models--{repo.replace('/', '--')}"
    snap = d / "snapshots" / rev
    snap.mkdir(parents=True, exist_ok=True)
    (d / "refs").mkdir(exist_ok=True)
    (d / "refs" / "main").write_text(rev)
    save_file(state, str(snap / "model.safetensors"))


# --------------------------------------------------------------------------- parameters and environment
def _scale(value: Any, ds: str, split: str) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, Mapping):
        return {k: _scale(v, k if ds == "*" else ds, split) for k, v in value.items()}
    if ds not in REAL_SIZES:
        return value
    real, stand = REAL_SIZES[ds], STANDIN_SIZES[ds]
    if split == "all":
        r, s = sum(real), sum(stand)
    else:
        i = 0 if split == "train" else 1
        r, s = real[i], stand[i]
    return max(1, math.ceil(int(value) * s / r)) if isinstance(value, (int, float)) else value


def rehearsal_params(stem: str, params: Mapping[str, Any], extra: Mapping[str, Any] | None = None,
                     declared: Iterable[str] = ()) -> tuple[dict, dict]:
    """The paper parameters with counts scaled to the stand-ins and :data:`OVERRIDES` applied
    (to the given parameters and to those the notebook ``declared``, i.e. its defaults).

    Returns ``(params, changes)``; ``changes`` maps each changed name to ``(paper, rehearsal)``.

    >>> rehearsal_params("03_isotropic_etc", {"attack_n_train": 50000, "epochs": 300})[1]
    {'attack_n_train': (50000, 200)}
    """
    out = dict(params)
    for key, (ds, split) in SCALED_COUNTS.get(stem, {}).items():
        if key in out:
            out[key] = _scale(out[key], ds, split)
    declared = set(declared)
    for key, v in {**OVERRIDES.get(stem, {}), **(extra or {})}.items():
        if key in out or key in declared or key in (extra or {}):
            out[key] = v
    changes = {k: (params.get(k), out[k]) for k in out if params.get(k) != out[k]}
    return out, changes


def rehearsal_env(root: str | os.PathLike, *, steps: int = 1, epochs: int = 1, batch: int = 2,
                  amp: str = "bf16") -> dict[str, str]:
    """Environment variables that point every loader at the stand-in root and cap training."""
    root = Path(root)
    env = os.environ  # a caller's own caps win (scripts/gpu_check.sh sets PPML_REHEARSE_STEPS=2)
    return {
        "PPML_REHEARSE": "1", "PPML_REHEARSE_STEPS": env.get("PPML_REHEARSE_STEPS", str(steps)),
        "PPML_REHEARSE_EPOCHS": env.get("PPML_REHEARSE_EPOCHS", str(epochs)),
        "PPML_REHEARSE_BATCH": env.get("PPML_REHEARSE_BATCH", str(batch)), "PPML_CPU_AMP": env.get("PPML_CPU_AMP", amp),
        "PPML_DATA": str(root), "PPML_WEIGHTS": str(root / "weights"), "PPML_DOWNLOAD": "0",
        "TORCH_HOME": str(root / "torch"), "HF_HOME": str(root / "hf"), "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
        "IPYTHONDIR": str(root / "ipython"),
    }


_STARTUP = """# written by ppml.rehearsal: stamp every output of this kernel as a rehearsal
try:
    from ppml.rehearsal import activate_in_kernel
    activate_in_kernel()
except Exception as e:  # never hide a broken rehearsal: say so in the notebook
    print(f"ppml rehearsal: could not activate the rehearsal stamp ({type(e).__name__}: {e})")
    raise
"""


def write_kernel_startup(root: str | os.PathLike) -> Path:
    """IPython start-up file (under ``$IPYTHONDIR``) that activates the stamp in each kernel."""
    p = Path(root) / "ipython" / "profile_default" / "startup" / "00-ppml-rehearsal.py"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(_STARTUP)
    return p


def prepare(root: str | os.PathLike | None = None) -> Path:
    """Make a stand-in root (a new temporary folder unless ``root`` is given): data, weights,
    the kernel start-up file. Returns it."""
    root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="ppml-rehearsal-"))
    stamp = root / ".ppml-rehearsal-version"
    if not (is_standin_root(root) and stamp.is_file() and stamp.read_text() == _VERSION):
        write_standins(root)
        stamp.write_text(_VERSION)
    write_kernel_startup(root)
    return root


# --------------------------------------------------------------------------- inside the kernel
_ACTIVE = False
#: Bump when the stand-ins change, so that a kept ``--rehearse-root`` is rewritten.
_VERSION = "3"


def activate_in_kernel() -> None:
    """Stamp :class:`ppml.report.Report` as a rehearsal (called by the kernel start-up file).

    Scale label ``paper (rehearsal)``; every caption and figure says :data:`STAMP`;
    ``results.json`` gets ``"rehearsal": true`` and the failed checks; ``Report.check`` records
    a failure instead of raising (an accuracy threshold cannot hold on stand-in noise)."""
    global _ACTIVE
    if _ACTIVE or os.environ.get("PPML_REHEARSE", "") != "1":
        return
    import json

    from ppml import report as R
    from ppml.utils import atomic_write_text

    cls = R.Report
    init0, caption0, figure0, save0 = cls.__init__, cls._caption, cls.figure, cls.save

    def __init__(self, *a: Any, **k: Any) -> None:
        init0(self, *a, **k)
        self.scale = f"{self.scale} (rehearsal)"
        self.rehearsal_failed_checks = []

    def _caption(self, title: str) -> str:
        return f"{caption0(self, title)} [{STAMP}]"

    def figure(self, fig: Any, artifact: str, title: str, **k: Any) -> Any:
        fig.text(0.5, 0.5, STAMP.upper(), ha="center", va="center", rotation=25, fontsize=28,
                 color="red", alpha=0.25, transform=fig.transFigure, zorder=1000)
        return figure0(self, fig, artifact, f"{title} [{STAMP}]", **k)

    def check(self, condition: Any, message: str) -> None:
        if condition:
            print(f"✓ {message}")
            return
        self.rehearsal_failed_checks.append(message)
        print(f"✗ (rehearsal: not expected to hold on stand-in data) {message}")

    def save(self) -> Path:
        path = save0(self)
        res = json.loads(path.read_text())
        res.update(rehearsal=True, rehearsal_note=f"{STAMP}: stand-in data, random weights, "
                   f"{os.environ.get('PPML_REHEARSE_STEPS', '?')} step(s) per epoch",
                   rehearsal_failed_checks=list(self.rehearsal_failed_checks))
        atomic_write_text(path, json.dumps(res, indent=2, default=str) + "\n")
        return path

    cls.__init__, cls._caption, cls.figure, cls.check, cls.save = __init__, _caption, figure, check, save
    _ACTIVE = True
    print(f"*** {STAMP.upper()}: paper-scale code paths on stand-in data "
          f"(root {os.environ.get('PPML_DATA')}), random weights, "
          f"{os.environ.get('PPML_REHEARSE_STEPS')} step(s) per epoch ***")


# --------------------------------------------------------------------------- DDP rehearsal
def ddp_main(out: str | None = None) -> int:
    """One paper training under ``torchrun --nproc_per_node 2``: notebook 02's ResNet-18 on
    block-scrambled, augmented stand-in CIFAR-10 (per-image keys, SGD, one-cycle), with the
    paper's parameters, the AMP path and a checkpoint. Run with the rehearsal environment."""
    import torch
    import torch.distributed as dist
    import yaml

    from ppml import datasets as D
    from ppml.papers.block_scramble_augmentation import block_scramble_pipelines
    from ppml.models import create_model
    from ppml.train import fit

    torch.set_num_threads(1)
    p = yaml.safe_load((Path(__file__).resolve().parents[1] / "notebooks" / "params" / "paper.yaml").read_text())
    p = p["02_block_scramble_augmentation"]
    train = D.load_dataset(p["dataset"], "train")
    pipe = block_scramble_pipelines("per_image", num_images=len(train), num_keys=p["num_keys"],
                                    block_size=p["block_size"], augment=True, key_seed=0)
    net = create_model(p["model"], num_classes=train.num_classes, **p["model_kwargs"])
    ck = Path(out or tempfile.mkdtemp()) / "ddp_ck"
    res = fit(net, pipe.train_loader(train, p["batch_size"], seed=0), epochs=p["epochs"], optimizer=p["optimizer"],
              lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"], schedule=p["schedule"], seed=0,
              device="cpu", checkpoint_dir=ck, progress=False)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    digest = float(sum(v.double().sum() for v in net.state_dict().values() if v.is_floating_point()))
    print(f"rank {rank}/{world}: {len(res.history)} epoch(s), loss {res.history[-1]['train_loss']:.4f}, "
          f"weights checksum {digest:.6f}, per-process batch {res.config['batch_size']}", flush=True)
    if out:
        torch.save({"world": world, "digest": digest, "history": res.history, "config": res.config},
                   Path(out) / f"ddp_rank{rank}.pt")
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # see tests/_ddp_worker.py: skip gloo's occasionally aborting interpreter teardown


def main(argv: list[str] | None = None) -> int:
    """``python -m ppml.rehearsal standins ROOT`` | ``ddp [OUT]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["standins"] and len(argv) == 2:
        t = time.time()
        print(prepare(argv[1]), f"({time.time() - t:.1f} s)")
        return 0
    if argv[:1] == ["ddp"]:
        return ddp_main(argv[1] if len(argv) > 1 else None)
    print(main.__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
