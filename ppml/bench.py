"""Every scheme of :mod:`ppml.schemes` under the same data, classifier recipe and attacker budget.

One row per scheme, one column per measurement:

* **accuracy** — the same classifier (with the scheme's adaptation network in front where it
  needs one) trained and tested on the scheme's images; ``acc_drop`` in points vs ``plain``;
* **compression** — total JPEG bytes at QF 85 (4:2:0) and lossless PNG bytes of the protected
  images over those of the plain images (each image coded on its own, :mod:`ppml.compression`);
* **lpips** — LPIPS (AlexNet) between each protected image and its plain image;
* **key_space** — log2 of the number of keys, or "randomised" / "public network";
* **throughput** — protected images per second on the CPU (best of a few runs);
* **attacks** — mean SSIM of each applicable attack's reconstructions against the victims'
  plain images, beside the no-attack ``floor`` (SSIM of the attacker's mean image): FR, GAN
  (SIA-GAN), ITN (pairs made with other keys; with the network itself for a public h_θ), the
  jigsaw solver, the LE-statistics key recovery and the attack on mixing (Carlini et al.).
  An attack that does not apply to a scheme is ``"n/a"``, never 0.

Accuracy uses the classification data set of the scale; compression, LPIPS, throughput and the
attacks use real colour photo crops (``ppml.datasets.photo_crops``; victims and attacker from
different photographs), the same for every scheme.

Cells are cached: one JSON per (scale, scheme, column) under ``build/bench/<scale>/`` with a
fingerprint of the settings the column depends on, so a rerun computes only what is missing or
changed. Scales are the flat presets of :data:`CONFIGS`.

>>> CONFIGS["smoke"]["dataset"], sorted(CONFIGS)
('fashion-mnist-smoke', ['cpu', 'paper', 'smoke'])
>>> parse_names("le,etc-8 pe", list_schemes(), "scheme")
['le', 'etc-8', 'pe']
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ppml.schemes import ATTACK_NAMES, Encryption, Scheme, get_scheme, list_schemes
from ppml.utils import atomic_write_json, progress

__all__ = ["CONFIGS", "COLUMNS", "BenchResult", "run_bench", "parse_names", "format_table", "privacy_utility_figure",
           "examples_figure", "reading", "main"]

BENCH_VERSION = 2

# ------------------------------------------------------------------------------------ scales
# One flat preset per scale (airbench / nanoGPT style): every number the bench uses is here.
_SMOKE: dict[str, Any] = dict(
    device="cpu", seed=0, image_size=32,
    # classification: the embedded real Fashion-MNIST sample
    dataset="fashion-mnist-smoke", n_train_per_class=100, n_test_per_class=50,
    model="convmixer", model_kwargs={"dim": 64, "depth": 3, "kernel_size": 5, "patch_size": 4},
    adaptation_out_chans=16, epochs=3, batch_size=64, optimizer="adamw", lr=0.01, weight_decay=0.01,
    schedule="triangular",
    # images for compression, LPIPS, throughput and attacks: real colour photo crops, 32 px
    n_examples=4, n_compress=64, jpeg_quality=85, lossless="png", n_lpips=32, n_throughput=1024, throughput_repeats=3,
    n_victims=32, n_victim_train=256, n_attacker=256,
    # attacker budgets
    gan={"epochs": 1, "width": 8, "d_width": 8, "block_features": 8, "n_res": 1, "batch_size": 32, "lr": 1e-3,
         "lr_d": 1e-3, "fix_polarity": True},
    itn={"epochs": 2, "width": 8, "depth": 2, "batch_size": 32}, itn_keys=2,
    jigsaw_n=4, le_stats={"restarts": 2, "fw_iters": 20},
    mixing={"n_private": 16, "encodings_per_image": 16},
    # the transformation network h_θ (one α) on the bench's training set; "frozen": ψ = the bench's classifier
    # trained on plain images first (the authors' later code; notebook 04's smoke regime), h_θ from an identity init
    transformnet={"alpha": 0.01, "regime": "frozen", "n_train": 1000, "identity_epochs": 4, "identity_lr": 0.01,
                  "epochs": 1, "width": 8, "depth": 1, "batch_size": 64, "optimizer": "adamw", "lr": 0.005,
                  "weight_decay": 0.0, "schedule": "cosine", "milestones": None},
)
_CPU: dict[str, Any] = {
    **_SMOKE, "n_train_per_class": None, "n_test_per_class": None, "epochs": 10,
    "model_kwargs": {"dim": 128, "depth": 4, "kernel_size": 5, "patch_size": 2},
    "n_compress": 256, "n_lpips": 128, "n_victims": 64, "n_victim_train": 1024, "n_attacker": 1024,
    "gan": {**_SMOKE["gan"], "epochs": 8, "width": 16, "d_width": 16, "block_features": 16, "n_res": 3},
    "itn": {"epochs": 10, "width": 16, "depth": 2, "batch_size": 32}, "itn_keys": 4,
    "jigsaw_n": 16, "le_stats": {"restarts": 6, "fw_iters": 40},
    "mixing": {"n_private": 32, "encodings_per_image": 40},
    "transformnet": {**_SMOKE["transformnet"], "n_train": 5000, "epochs": 5, "width": 16, "depth": 2},
}
_PAPER: dict[str, Any] = {
    **_CPU, "device": "cuda", "dataset": "cifar10",
    "model_kwargs": {"dim": 256, "depth": 8, "kernel_size": 9, "patch_size": 1},  # ConvMixer-256/8 (paper 002)
    "epochs": 200, "batch_size": 128, "n_compress": 1000, "n_lpips": 1000, "n_victims": 200, "n_victim_train": 5000,
    "n_attacker": 5000,
    "gan": {"epochs": 100, "width": 64, "d_width": 128, "block_features": 16, "n_res": 3, "batch_size": 128,
            "lr": 2e-4},  # SIA-GAN's own sizes
    "itn": {"epochs": 200, "width": 64, "depth": 4, "batch_size": 128}, "itn_keys": 8,
    "jigsaw_n": 100, "mixing": {"n_private": 100, "encodings_per_image": 40},
    "transformnet": {"alpha": 0.01, "regime": "joint", "n_train": 45000, "identity_epochs": 0, "identity_lr": 0.01,
                     "epochs": 200, "width": 64, "depth": 4, "batch_size": 128, "weight_decay": 5e-4,
                     "optimizer": "sgd", "lr": 0.1, "schedule": "multistep", "milestones": [60, 120, 160]},
}
#: scale → the flat preset (``cpu``: ~30 CPU-minutes; ``paper``: a GPU and CIFAR-10, wired but not run here)
CONFIGS: dict[str, dict[str, Any]] = {"smoke": _SMOKE, "cpu": _CPU, "paper": _PAPER}

#: column → the settings it depends on (its cache fingerprint)
_DATA = ("seed", "image_size")
_PHOTOS = _DATA + ("n_victims", "n_victim_train", "n_attacker")
COLUMNS: dict[str, tuple[str, ...]] = {
    "accuracy": _DATA + ("dataset", "n_train_per_class", "n_test_per_class", "model", "model_kwargs",
                         "adaptation_out_chans", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule"),
    "compression": _DATA + ("n_compress", "jpeg_quality", "lossless"),
    "lpips": _DATA + ("n_lpips",),
    "key_space": _DATA,
    "examples": _DATA + ("n_examples",),
    "throughput": _DATA + ("n_throughput", "throughput_repeats"),
    "fr": _PHOTOS, "gan": _PHOTOS + ("gan",), "itn": _PHOTOS + ("itn", "itn_keys"),
    "jigsaw": _PHOTOS + ("jigsaw_n",), "le_stats": _PHOTOS + ("le_stats",), "mixing": _PHOTOS + ("mixing",),
}
BASE_COLUMNS = ("accuracy", "compression", "lpips", "key_space", "throughput", "examples")


#: the attacker's and the measurements' budgets: a paper-scale rehearsal keeps the paper's data set and
#: classifier (their code paths) and takes these from the smoke preset
_BUDGET_KEYS = ("n_examples", "n_compress", "n_lpips", "n_throughput", "n_victims", "n_victim_train", "n_attacker",
                "gan", "itn", "itn_keys", "jigsaw_n", "le_stats", "mixing", "transformnet")


def _rehearsal_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Inside ``python -m ppml.reproduce --scale paper --rehearse`` (no GPU): the CPU and the smoke
    budgets for everything :func:`ppml.train.fit` does not cap itself."""
    from ppml.train import rehearsal_caps

    if rehearsal_caps()[0] is None or torch.cuda.is_available():
        return cfg
    return {**cfg, "device": "cpu", **{k: CONFIGS["smoke"][k] for k in _BUDGET_KEYS}}


# ------------------------------------------------------------------------------------ names
def parse_names(values: str | Sequence[str] | None, valid: Sequence[str], what: str) -> list[str]:
    """Split comma/space separated names, keep order, drop repeats; an unknown name raises
    ``ValueError`` naming it and the valid ones. ``None`` or ``"all"`` → every valid name."""
    if values is None:
        return list(valid)
    if isinstance(values, str):
        values = [values]
    names: list[str] = []
    for v in values:
        for n in str(v).replace(",", " ").split():
            if n not in names:
                names.append(n)
    if names == ["all"] or not names:
        return list(valid)
    bad = [n for n in names if n not in valid]
    if bad:
        raise ValueError(f"unknown {what}{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))}: "
                         f"choose from {', '.join(valid)}")
    return names


# ------------------------------------------------------------------------------------ context
class _Context:
    """Data and scheme instances shared by the cells of one run, built lazily."""

    def __init__(self, config: Mapping[str, Any]):
        self.cfg = dict(config)
        self._cache: dict[str, Any] = {}
        self._instances: dict[str, Encryption] = {}

    def get(self, name: str, make):
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    def classification(self):
        def make():
            from ppml.datasets import load_dataset

            c, size = self.cfg, self.cfg["image_size"]
            tr = load_dataset(c["dataset"], "train", size=size)
            te = load_dataset(c["dataset"], "test", size=size)
            if c["n_train_per_class"]:
                tr = tr.subset(int(c["n_train_per_class"]))
            if c["n_test_per_class"]:
                te = te.subset(int(c["n_test_per_class"]))
            return tr, te
        return self.get("classification", make)

    def photos(self):
        """(victims, victim labels, victims' other images, attacker's images): photo crops."""
        def make():
            from ppml.attacks.instahide import PRIVATE_SOURCES, PUBLIC_SOURCES, labelled_photo_crops
            from ppml.datasets import photo_crops

            c, s = self.cfg, int(self.cfg["seed"])
            victims, labels = labelled_photo_crops(int(c["n_victims"]), int(c["image_size"]), seed=s)
            order = torch.randperm(len(victims), generator=_gen(s))  # any prefix mixes the source photographs
            victims, labels = victims[order], labels[order]
            victim_train = photo_crops(int(c["n_victim_train"]), int(c["image_size"]), seed=s * 1000 + 7,
                                       sources=list(PRIVATE_SOURCES))
            attacker = photo_crops(int(c["n_attacker"]), int(c["image_size"]), seed=s * 1000 + 1,
                                   sources=list(PUBLIC_SOURCES))
            return victims, labels, victim_train, attacker
        return self.get("photos", make)

    def compress_images(self) -> torch.Tensor:
        def make():
            from ppml.datasets import photo_crops

            c = self.cfg
            return photo_crops(int(c["n_compress"]), int(c["image_size"]), seed=int(c["seed"]) * 1000 + 3)
        return self.get("compress", make)

    def floor(self, n: int | None = None) -> float:
        """SSIM of the attacker's mean image to the first ``n`` victims (all by default): what no
        ciphertext at all gives."""
        def make():
            from ppml.metrics import ssim

            victims, _, _, attacker = self.photos()
            mean = attacker.float().mean(0, keepdim=True).round().to(torch.uint8).expand_as(victims)
            return ssim(mean, victims)
        return float(self.get("floor", make)[:n].mean())

    def instance(self, scheme: Scheme, seed: int | None = None) -> Encryption:
        s = int(self.cfg["seed"]) if seed is None else int(seed)
        k = f"{scheme.name}/{s}"
        if k not in self._instances:
            tr, _ = self.classification() if _needs_train(scheme) else (None, None)
            ctx = {"config": self.cfg}
            if tr is not None:
                ctx["train"] = (tr.images, tr.labels)
            self._instances[k] = scheme.make(image_size=int(self.cfg["image_size"]), channels=3, seed=s, **ctx)
        return self._instances[k]


def _needs_train(scheme: Scheme) -> bool:
    params = inspect.signature(scheme.factory).parameters
    return "train" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _encode(inst: Encryption, x: torch.Tensor, seed: int) -> torch.Tensor:
    y = inst.encode(x, _gen(seed))
    if not isinstance(y, torch.Tensor) or y.shape != x.shape or y.dtype != torch.uint8:
        raise ValueError(f"a scheme's encode must return uint8 images of the input's shape {tuple(x.shape)}, got "
                         f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}")
    return y


# ------------------------------------------------------------------------------------ cells
def _cell_accuracy(scheme: Scheme, ctx: _Context) -> dict[str, Any]:
    from ppml.models import create_model
    from ppml.train import evaluate, fit, seed_everything

    c = ctx.cfg
    tr, te = ctx.classification()
    inst = ctx.instance(scheme)
    k = int(tr.num_classes)
    seed_everything(int(c["seed"]))
    if scheme.adaptation:
        model = create_model("adapted_classifier", adaptation=scheme.adaptation, classifier=c["model"], num_classes=k,
                             image_size=int(c["image_size"]), block_size=int(scheme.block_size),
                             out_chans=int(c["adaptation_out_chans"]), classifier_kwargs=dict(c["model_kwargs"]))
    else:
        model = create_model(c["model"], num_classes=k, **dict(c["model_kwargs"]))
    kw = dict(epochs=int(c["epochs"]), batch_size=int(c["batch_size"]), optimizer=c["optimizer"], lr=float(c["lr"]),
              weight_decay=float(c["weight_decay"]), schedule=c["schedule"], seed=int(c["seed"]), progress=False,
              device=c["device"])
    if inst.train_loss is not None:  # the hook encodes plain batches (mixed targets)
        fit(model, (tr.images, tr.labels), loss=inst.train_loss(k), **kw)
    else:  # encoded per batch: randomised schemes draw fresh randomness every epoch
        fit(model, (tr.images, tr.labels), transforms=inst.encode, **kw)
    model = model.to("cpu") if c["device"] == "cpu" else model
    g = _gen(int(c["seed"]) + 1)
    if inst.predict is not None:
        probs = inst.predict(model, te.images.to(next(model.parameters()).device), g)
        acc = float((probs.argmax(1).cpu() == te.labels).double().mean())
    else:
        acc = float(evaluate(model, (_encode(inst, te.images, int(c["seed"]) + 1), te.labels))["acc"])
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"acc": acc, "params": int(n_params), "n_train": len(tr), "n_test": len(te)}


def _cell_compression(scheme: Scheme, ctx: _Context) -> dict[str, Any]:
    from ppml.compression import encoded_size

    c = ctx.cfg
    x = ctx.compress_images()
    y = _encode(ctx.instance(scheme), x, int(c["seed"]) + 2)
    q = int(c["jpeg_quality"])
    return {"jpeg_ratio": encoded_size(y, "jpeg", q) / encoded_size(x, "jpeg", q),
            "lossless_ratio": encoded_size(y, c["lossless"]) / encoded_size(x, c["lossless"]), "n": len(x)}


def _cell_lpips(scheme: Scheme, ctx: _Context) -> dict[str, Any]:
    from ppml.metrics import lpips

    c = ctx.cfg
    x = ctx.photos()[0][: int(c["n_lpips"])]
    y = _encode(ctx.instance(scheme), x, int(c["seed"]) + 3)
    try:
        d = lpips(y, x, "alex")
    except Exception as e:  # weights missing offline: the column says why
        if type(e).__name__ != "WeightsNotAvailable":
            raise
        return {"lpips": None, "note": f"LPIPS weights not available: {e}"}
    return {"lpips": float(d.mean()), "n": len(x)}


def _cell_key_space(scheme: Scheme, ctx: _Context) -> dict[str, Any]:
    inst = ctx.instance(scheme)
    return {"bits": inst.key_space_bits, "text": inst.key_space()}


def _cell_throughput(scheme: Scheme, ctx: _Context) -> dict[str, Any]:
    from ppml.utils import best_time

    c = ctx.cfg
    base = ctx.photos()[0]
    n = int(c["n_throughput"])
    x = base.repeat(math.ceil(n / len(base)), 1, 1, 1)[:n].contiguous()
    inst = ctx.instance(scheme)
    g = _gen(int(c["seed"]) + 4)
    wall, _ = best_time(lambda: inst.encode(x, g), repeats=int(c["throughput_repeats"]))
    return {"images_per_s": n / max(wall, 1e-9), "n": n, "threads": torch.get_num_threads()}


def _cell_examples(scheme: Scheme, ctx: _Context) -> dict[str, Any]:
    """The first victims as sent (uint8 lists), for the figure of example images."""
    x = ctx.photos()[0][: int(ctx.cfg["n_examples"])]
    return {"images": _encode(ctx.instance(scheme), x, int(ctx.cfg["seed"]) + 5).tolist()}


def _attack_result(rec: torch.Tensor, ctx: _Context) -> dict[str, Any]:
    """Mean SSIM of reconstructions of the first ``len(rec)`` victims, and the floor on the same victims."""
    from ppml.metrics import ssim

    victims = ctx.photos()[0]
    n = min(len(rec), len(victims))
    return {"ssim": float(ssim(rec[:n], victims[:n]).mean()), "floor": ctx.floor(n), "n": n}


def _cell_fr(scheme: Scheme, ctx: _Context) -> dict[str, Any]:
    from ppml.attacks.fr import fr_attack

    victims, _, _, attacker = ctx.photos()
    y = _encode(ctx.instance(scheme), victims, int(ctx.cfg["seed"]) + 10)
    return _attack_result(fr_attack(test_protected=y, train_plain=attacker), ctx)


def _cell_gan(scheme: Scheme, ctx: _Context) -> dict[str, Any]:
    from ppml.attacks.gan import gan_attack

    c = ctx.cfg
    victims, _, victim_train, attacker = ctx.photos()
    inst = ctx.instance(scheme)
    opts = {"block_size": scheme.block_size or 4, **dict(scheme.attack_options.get("gan", {})), **dict(c["gan"])}
    rec = gan_attack(train_plain=attacker, train_protected=_encode(inst, victim_train, int(c["seed"]) + 11),
                     test_protected=_encode(inst, victims, int(c["seed"]) + 10), seed=int(c["seed"]), **opts)
    return {**_attack_result(rec, ctx), "steps": int(c["gan"]["epochs"]) * math.ceil(len(victim_train) / int(opts["batch_size"]))}


def _cell_itn(scheme: Scheme, ctx: _Context) -> dict[str, Any]:
    from ppml.attacks.itn import itn_attack

    c = ctx.cfg
    victims, _, _, attacker = ctx.photos()
    s = int(c["seed"])
    victim_enc = _encode(ctx.instance(scheme), victims, s + 10)
    if scheme.public:  # the transform is public: exact pairs under the victim's own transform
        pairs = _encode(ctx.instance(scheme), attacker, s + 12)
    else:  # pairs made with keys of the attacker's own, one drawn per image
        k = int(c["itn_keys"])
        parts = attacker.chunk(k)
        pairs = torch.cat([_encode(ctx.instance(scheme, seed=s + 2000 + i), p, s + 12 + i) for i, p in enumerate(parts)])
    rec = itn_attack(train_plain=attacker, train_protected=pairs, test_protected=victim_enc, seed=s, progress=False,
                     **dict(c["itn"]))
    return _attack_result(rec, ctx)


def _cell_jigsaw(scheme: Scheme, ctx: _Context) -> dict[str, Any]:
    from ppml.attacks.jigsaw import jigsaw_attack

    c = ctx.cfg
    inst = ctx.instance(scheme)
    if inst.truth is None:
        raise ValueError(f"scheme {scheme.name!r} lists the jigsaw attack but its Encryption has no truth= "
                         "(the arrangement that decrypts, for scoring)")
    x = ctx.photos()[0][: int(c["jigsaw_n"])]
    y = _encode(inst, x, int(c["seed"]) + 13)
    r = jigsaw_attack(test_protected=y, block_size=int(scheme.block_size), truth=inst.truth(), test_plain=x,
                      **dict(scheme.attack_options.get("jigsaw", {})))
    return {**_attack_result(r["reconstruction"], ctx), "neighbour": float(r["neighbour"])}


def _cell_le_stats(scheme: Scheme, ctx: _Context) -> dict[str, Any]:
    from ppml.attacks.le_stats import le_statistics_attack

    c = ctx.cfg
    victims, _, _, attacker = ctx.photos()
    y = _encode(ctx.instance(scheme), victims, int(c["seed"]) + 10)
    opts = {"block_size": scheme.block_size or 4, **dict(scheme.attack_options.get("le_stats", {})), **dict(c["le_stats"])}
    r = le_statistics_attack(train_plain=attacker, test_protected=y, seed=int(c["seed"]), **opts)
    return _attack_result(r.images, ctx)


class _Views:
    """``views(x, g, num_views)`` for any encoder module ``forward(x, g)`` (DataMix)."""

    def __init__(self, module: Any):
        self.module = module

    def views(self, x: torch.Tensor, generator: torch.Generator | None = None, *, num_views: int = 1) -> torch.Tensor:
        return torch.stack([self.module(x, generator).float() for _ in range(int(num_views))], 1)


def _cell_mixing(scheme: Scheme, ctx: _Context) -> dict[str, Any]:
    from ppml.attacks import instahide as ih

    c = ctx.cfg
    victims, labels, _, attacker = ctx.photos()
    m = dict(c["mixing"])
    n = min(int(m["n_private"]), len(victims))
    priv, lab = victims[:n], labels[:n]
    module = ctx.instance(scheme).extras.get("module")
    from ppml.encoders import InstaHide

    if isinstance(module, InstaHide):
        r = ih.instahide_challenge(priv, lab, attacker, mode="inside", encodings_per_image=int(m["encodings_per_image"]),
                                   seed=int(c["seed"]))
    elif module is not None:  # the same pipeline on the encoder's views, centred first (adaptive)
        views = module if hasattr(module, "views") else _Views(module)
        r = ih.scramblemix_challenge(priv, lab, attacker, views, encodings_per_image=int(m["encodings_per_image"]),
                                     adaptive=True, seed=int(c["seed"]))
    else:
        raise ValueError(f"scheme {scheme.name!r} lists the attack on mixing but its Encryption has no "
                         "extras['module'] (an encoder with forward(x, generator))")
    rec = (r["images"].float().clamp(0, 1) * 255).round().to(torch.uint8)  # matched to the victims, in order
    return {**_attack_result(rec, ctx), "challenge_mean_ssim": float(r["mean_ssim"])}


_CELLS = {"accuracy": _cell_accuracy, "compression": _cell_compression, "lpips": _cell_lpips,
          "key_space": _cell_key_space, "examples": _cell_examples, "throughput": _cell_throughput, "fr": _cell_fr, "gan": _cell_gan,
          "itn": _cell_itn, "jigsaw": _cell_jigsaw, "le_stats": _cell_le_stats, "mixing": _cell_mixing}


# ------------------------------------------------------------------------------------ cache
def _fingerprint(scheme: Scheme, column: str, config: Mapping[str, Any]) -> str:
    keys = COLUMNS[column] + (("transformnet",) if _needs_train(scheme) else ())
    if _needs_train(scheme) and column != "accuracy":  # a learned scheme depends on its training data
        keys += COLUMNS["accuracy"]
    spec = {"bench": BENCH_VERSION, "column": column, "config": {k: config.get(k) for k in sorted(set(keys))},
            "scheme": {"name": scheme.name, "kind": scheme.kind, "block_size": scheme.block_size,
                       "adaptation": scheme.adaptation, "public": scheme.public,
                       "options": scheme.attack_options.get(column, {}),
                       "factory": f"{scheme.factory.__module__}.{scheme.factory.__qualname__}"}}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cell_path(out: Path, scale: str, scheme: str, column: str) -> Path:
    return out / scale / scheme / f"{column}.json"


def _read_cell(path: Path, fingerprint: str) -> dict[str, Any] | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # missing or unreadable: recompute
    return d if isinstance(d, dict) and d.get("fingerprint") == fingerprint else None


# ------------------------------------------------------------------------------------ the run
@dataclass
class BenchResult:
    """``cells[scheme][column]`` (the cached JSON of each cell), the scale, the schemes and
    attacks asked for, and which cells this run computed (``computed``) vs read from cache."""

    scale: str
    schemes: list[str]
    attacks: list[str]
    cells: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    computed: list[tuple[str, str]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per scheme: every column, "n/a" where an attack does not apply."""
        plain = self.cells.get("plain", {}).get("accuracy", {}).get("acc")
        out = []
        for name in self.schemes:
            sc, cells = get_scheme(name), self.cells.get(name, {})
            acc = cells.get("accuracy", {}).get("acc")
            comp = cells.get("compression", {})
            row: dict[str, Any] = {
                "scheme": name, "kind": sc.kind, "block": sc.block_size if sc.block_size else "–",
                "needs": sc.needs(),
                "acc %": _r(None if acc is None else 100 * acc, 1),
                "Δacc pp": _r(None if acc is None or plain is None else 100 * (acc - plain), 1),
                "JPEG85 ×": _r(comp.get("jpeg_ratio"), 2), "lossless ×": _r(comp.get("lossless_ratio"), 2),
                "LPIPS": _r(cells.get("lpips", {}).get("lpips"), 3),
                "key space (bits)": cells.get("key_space", {}).get("text"),
                "enc img/s": _r(cells.get("throughput", {}).get("images_per_s"), -1),
            }
            best = None
            for a in self.attacks:
                if a not in sc.attacks:
                    row[f"{a} SSIM"] = "n/a"
                    continue
                cell = cells.get(a, {})
                row[f"{a} SSIM"] = _r(cell.get("ssim"), 3)
                if cell.get("ssim") is not None:
                    gap = cell["ssim"] - cell["floor"]
                    best = gap if best is None else max(best, gap)
            floors = [cells[a]["floor"] for a in self.attacks if a in cells and a != "mixing"]
            row["floor"] = _r(floors[0] if floors else cells.get("mixing", {}).get("floor"), 3)
            row["best attack − floor"] = _r(best, 3) if best is not None else "n/a"
            out.append(row)
        return out

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds per column, summed over schemes (what each column costs)."""
        tot: dict[str, float] = {}
        for cells in self.cells.values():
            for col, cell in cells.items():
                tot[col] = round(tot.get(col, 0.0) + float(cell.get("cpu_s", 0.0)), 1)
        return tot

    def privacy_utility(self) -> list[dict[str, Any]]:
        """Per scheme: accuracy drop (pp), best attack SSIM above its floor (plain: its own images,
        SSIM 1), JPEG ratio — the points of :func:`privacy_utility_figure`."""
        pts = []
        for r in self.rows():
            gap = r["best attack − floor"]
            if r["kind"] == "none" and r["floor"] is None:
                gap = 1.0 - self._floor()
            if r["Δacc pp"] is None or not isinstance(gap, float):
                continue
            pts.append({"scheme": r["scheme"], "acc_drop": -r["Δacc pp"], "attack_gap": gap, "jpeg": r["JPEG85 ×"]})
        return pts

    def _floor(self) -> float:
        for cells in self.cells.values():
            for a in ATTACK_NAMES:
                if a in cells and a != "mixing":
                    return float(cells[a]["floor"])
        return 0.0

    def per_scheme(self) -> dict[str, dict[str, Any]]:
        """``scheme → {column: value}`` for ``results.json``."""
        return {r["scheme"]: {k: v for k, v in r.items() if k != "scheme"} for r in self.rows()}


def _r(v: Any, nd: int) -> Any:
    if v is None:
        return None
    return int(round(v)) if nd < 0 else round(float(v), nd)


def run_bench(schemes: str | Sequence[str] | None = None, attacks: str | Sequence[str] | None = None, *,
              scale: str = "smoke", out_dir: str | Path = "build/bench", config: Mapping[str, Any] | None = None,
              recompute: bool = False, show_progress: bool | None = None) -> BenchResult:
    """Fill every (scheme, column) cell of the table, reusing cached cells; return the result.

    ``schemes`` / ``attacks``: names (a list, or comma/space separated), default all; ``plain``
    is always added first (the reference of the accuracy drop). ``config`` overrides entries of
    the scale's preset (:data:`CONFIGS`) — e.g. a tiny run in a test. ``recompute`` ignores the
    cache. Each cell is written atomically to ``out_dir/<scale>/<scheme>/<column>.json``.
    """
    if scale not in CONFIGS:
        raise ValueError(f"unknown scale {scale!r}: choose from {', '.join(CONFIGS)}")
    names = parse_names(schemes, list_schemes(), "scheme")
    if "plain" not in names and "plain" in list_schemes():
        names = ["plain"] + names
    atk = parse_names(attacks, list(ATTACK_NAMES), "attack")
    cfg = {**CONFIGS[scale], **dict(config or {})}
    unknown = set(config or {}) - set(CONFIGS[scale])
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)}: valid keys are {', '.join(CONFIGS[scale])}")
    cfg = _rehearsal_config(cfg)
    if str(cfg["device"]).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"scale {scale!r} runs on {cfg['device']!r} but no GPU is visible: run it on a GPU "
                           "machine, or use --scale smoke / cpu")
    out = Path(out_dir)
    res = BenchResult(scale, names, atk, config=cfg)
    todo = []
    for name in names:
        sc = get_scheme(name)
        cols = list(BASE_COLUMNS) + [a for a in atk if a in sc.attacks]
        for col in cols:
            fp = _fingerprint(sc, col, cfg)
            cached = None if recompute else _read_cell(_cell_path(out, scale, name, col), fp)
            if cached is not None:
                res.cells.setdefault(name, {})[col] = cached
            else:
                todo.append((sc, col, fp))
    ctx = _Context(cfg)
    bar = progress(todo, desc=f"bench ({scale})", unit="cell",
                   **({} if show_progress is None else {"disable": not show_progress}))
    for sc, col, fp in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(f"{sc.name}: {col}")
        t0 = time.process_time()
        value = _CELLS[col](sc, ctx)
        cell = {"scheme": sc.name, "column": col, "scale": scale, "fingerprint": fp,
                "cpu_s": round(time.process_time() - t0, 2), **value}
        atomic_write_json(_cell_path(out, scale, sc.name, col), cell, indent=1)
        res.cells.setdefault(sc.name, {})[col] = cell
        res.computed.append((sc.name, col))
    return res


# ------------------------------------------------------------------------------------ output
_MARKERS = "osD^vP*Xp<>hH8d"


def privacy_utility_figure(result: BenchResult):
    """Scatter: accuracy drop (x, pp) vs best attack SSIM above the floor (y); marker = scheme,
    colour = JPEG size ratio at the bench's QF. Lower-left is better on both axes."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    pts = result.privacy_utility()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    jp = [p["jpeg"] for p in pts if p["jpeg"] is not None] or [1.0]
    norm = Normalize(vmin=min(1.0, min(jp)), vmax=max(1.05, max(jp)))
    cmap = plt.get_cmap("viridis")
    for i, p in enumerate(pts):
        ax.scatter(p["acc_drop"], p["attack_gap"], marker=_MARKERS[i % len(_MARKERS)], s=90, edgecolors="black",
                   linewidths=0.6, color=cmap(norm(p["jpeg"] if p["jpeg"] is not None else 1.0)), label=p["scheme"])
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("accuracy drop vs plain (points)")
    ax.set_ylabel("best attack SSIM − no-attack floor")
    ax.set_title(f"Privacy vs utility (scale: {result.scale})")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label=f"JPEG size ×plain (QF {result.config.get('jpeg_quality')})")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.25, 1.0), frameon=False)
    return fig


def examples_figure(result: BenchResult):
    """One row per scheme: the first victims (real photo crops) as the scheme sends them."""
    import matplotlib.pyplot as plt

    rows = [(n, result.cells.get(n, {}).get("examples", {}).get("images")) for n in result.schemes]
    rows = [(n, torch.tensor(v, dtype=torch.uint8)) for n, v in rows if v]
    if not rows:
        raise ValueError("no example images in the result: run run_bench with the 'examples' column first")
    k = max(len(v) for _, v in rows)
    cell, left, top = 1.1, 1.5, 0.45  # inches: image side, row labels, title
    width, height = left + cell * k, top + cell * len(rows)
    fig, axes = plt.subplots(len(rows), k, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=left / width, right=0.99, bottom=0.01, top=1 - top / height, wspace=0.06, hspace=0.06)
    for i, (name, imgs) in enumerate(rows):
        for j in range(k):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(imgs):
                ax.imshow(imgs[j].permute(1, 2, 0).numpy(), interpolation="nearest")
            if j == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"Example images as sent, per scheme (real photo crops, 32 px; scale: {result.scale})", fontsize=9,
                 y=1 - 0.1 / height)
    return fig


def reading(result: BenchResult) -> str:
    """A few sentences reading the table, computed from it (every number with its scale)."""
    rows = {r["scheme"]: r for r in result.rows()}
    sc = result.scale
    out = []
    acc = [(r["acc %"], n) for n, r in rows.items() if r["acc %"] is not None and n != "plain"]
    if acc and rows.get("plain", {}).get("acc %") is not None:
        best, worst = max(acc), min(acc)
        out.append(f"Accuracy (scale {sc}): plain {rows['plain']['acc %']} %; best protected {best[1]} {best[0]} %, "
                   f"worst {worst[1]} {worst[0]} %.")
    jp = [(r["JPEG85 ×"], n) for n, r in rows.items() if isinstance(r["JPEG85 ×"], float) and n != "plain"]
    if jp:
        near = sorted(n for v, n in jp if v <= 1.1)
        far = sorted(n for v, n in jp if v > 1.3)
        out.append(f"JPEG size within 10 % of plain: {', '.join(near) or 'none'}; more than 30 % larger: "
                   f"{', '.join(far) or 'none'} (scale {sc}).")
    broken = sorted((r["best attack − floor"], n) for n, r in rows.items()
                    if isinstance(r["best attack − floor"], float) and r["best attack − floor"] > 0.1)
    safe = sorted(n for n, r in rows.items()
                  if isinstance(r["best attack − floor"], float) and r["best attack − floor"] <= 0.0)
    if broken:
        out.append("An attack beats the no-attack floor by more than 0.1 SSIM on: "
                   + ", ".join(f"{n} (+{v:.2f})" for v, n in reversed(broken)) + f" (scale {sc}).")
    if safe:
        out.append(f"No attack run here beats the floor on: {', '.join(safe)} (scale {sc}; at this attacker budget).")
    return "\n".join(out)


def format_table(result: BenchResult) -> str:
    """The table as Markdown, with the scale in its caption."""
    from ppml.report import Table

    return Table(result.rows(), caption=f"Schemes benchmark (scale: {result.scale}; accuracy on "
                 f"{result.config.get('dataset')}, everything else on 32-px photo crops)").to_markdown(max_columns=99)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ppml.bench [--schemes …] [--attacks …] [--scale smoke|cpu|paper]``."""
    p = argparse.ArgumentParser(prog="python -m ppml.bench", description=__doc__.split("\n")[0])
    p.add_argument("--schemes", nargs="+", default=None, help=f"scheme names (default all): {', '.join(list_schemes())}")
    p.add_argument("--attacks", nargs="+", default=None, help=f"attacks (default all): {', '.join(ATTACK_NAMES)}")
    p.add_argument("--scale", default="smoke", choices=list(CONFIGS))
    p.add_argument("--out", default="build/bench", help="cache folder (default build/bench)")
    p.add_argument("--recompute", action="store_true", help="ignore cached cells")
    p.add_argument("--list", action="store_true", help="list the registered schemes and exit")
    a = p.parse_args(argv)
    if a.list:
        for n in list_schemes():
            s = get_scheme(n)
            print(f"{n:<20} {s.kind:<8} block {s.block_size or '–':<3} needs {s.needs():<26} {s.description}")
        return 0
    try:
        parse_names(a.schemes, list_schemes(), "scheme")
        parse_names(a.attacks, list(ATTACK_NAMES), "attack")
    except ValueError as e:
        p.error(str(e))
    res = run_bench(a.schemes, a.attacks, scale=a.scale, out_dir=a.out, recompute=a.recompute)
    print(format_table(res))
    print(f"\ncomputed {len(res.computed)} cell(s), read the rest from {a.out}/{a.scale}/; CPU seconds per column "
          f"(scale {a.scale}): " + ", ".join(f"{k} {v}" for k, v in res.cpu_seconds().items()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
