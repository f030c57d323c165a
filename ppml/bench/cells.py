"""The column computations: the shared context (data, photos, trained classifiers) and one cell function
per column (accuracy, compression, LPIPS, key space, throughput, examples, the attacks)."""

from __future__ import annotations

import inspect
import math
from typing import Any, Mapping

import torch

from ppml.schemes import Encryption, Scheme


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
