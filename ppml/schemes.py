"""Registry of every image-protection scheme for the benchmark (:mod:`ppml.bench`), timm-style.

A *scheme* is a name and a factory. The factory makes one *instance* — a key (or key set, or
network) and the transform it defines — for an image geometry and a seed::

    from ppml.schemes import Encryption, register_scheme

    @register_scheme("xor", kind="cipher", description="XOR with a secret pad (toy)")
    def xor(image_size, channels, seed):
        g = torch.Generator().manual_seed(seed)
        pad = torch.randint(0, 256, (channels, *image_size), generator=g).to(torch.uint8)
        return Encryption(encode=lambda x, g=None: x ^ pad, inverse=lambda y: y ^ pad,
                          key_space_bits=8.0 * pad.numel())

``encode(x, generator)`` maps uint8 images ``(N, C, H, W)`` to what the data owner *sends*:
uint8 images of the same shape (randomised encoders whose outputs are real-valued are
quantised to 8 bits, as an image file would be). The metadata say what the classifier needs
in front (``adaptation``), which attacks apply and how (``attacks``, ``attack_options``).

Kinds (:data:`KINDS`): ``"none"`` (plain images), ``"cipher"`` (a secret key; invertible with
it), ``"encoder"`` (randomised; no key space, no inverse) and ``"learned"`` (a public trained
network, here the transformation network h_θ: no key at all).

Layering: the registry gathers every scheme, the paper-specific ones too, so it sits above
:mod:`ppml.papers` (whose factories it imports lazily, when a scheme is made) and below
:mod:`ppml.bench`; nothing below imports it.

>>> sorted(list_schemes())[:3]
['block-scramble', 'block-scramble-set', 'datamix']
>>> s = get_scheme("etc-8"); s.kind, s.block_size, s.attacks
('cipher', 8, ('fr', 'gan', 'itn', 'jigsaw'))
>>> import torch
>>> enc = s.make(image_size=(32, 32), channels=3, seed=0)
>>> x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
>>> torch.equal(enc.inverse(enc.encode(x)), x), round(enc.key_space_bits)
(True, 150)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

__all__ = ["KINDS", "ATTACK_NAMES", "Scheme", "Encryption", "register_scheme", "get_scheme", "list_schemes",
           "unregister_scheme", "SCHEMES"]

KINDS = ("none", "cipher", "encoder", "learned")
#: every attack the benchmark knows; a scheme lists those that apply to it
ATTACK_NAMES = ("fr", "gan", "itn", "jigsaw", "le_stats", "mixing")
_DEFAULT_ATTACKS = {"none": (), "cipher": ("fr", "gan", "itn"), "encoder": ("mixing",),
                    "learned": ("fr", "gan", "itn")}


@dataclass
class Encryption:
    """One instance of a scheme: its transform and what the benchmark needs to know of its key.

    Attributes:
        encode: ``(x uint8 (N, C, H, W), generator | None) -> uint8 (N, C, H, W)``, what is sent.
        inverse: decryption with the key (ciphers), else ``None``.
        key_space_bits: log2 of the number of keys; ``None`` when there is no key space.
        key_space_note: what to print instead of bits (``"randomised"``, ``"public network"``).
        train_loss: ``num_classes -> loss hook`` for :func:`ppml.train.fit` when training needs
            more than cross-entropy on encoded images (mixed targets: InstaHide, DataMix); the
            hook receives *plain* images and encodes them itself.
        predict: ``(model, x uint8, generator) -> probabilities (N, K)`` when inference is not
            ``model(encode(x))`` (e.g. DataMix decodes the posterior).
        truth: for the jigsaw attack, ``() -> Arrangement`` of the images of the last ``encode``.
        extras: scheme-specific objects for its attacks (e.g. the ScrambleMix module).
    """

    encode: Callable[..., torch.Tensor]
    inverse: Callable[[torch.Tensor], torch.Tensor] | None = None
    key_space_bits: float | None = None
    key_space_note: str = ""
    train_loss: Callable[[int], Callable] | None = None
    predict: Callable[..., torch.Tensor] | None = None
    truth: Callable[[], Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def key_space(self) -> str:
        """The key-space column: ``"153 bits"``-style text or the note (``"randomised"``)."""
        if self.key_space_bits is None:
            return self.key_space_note or "n/a"
        return f"{self.key_space_bits:,.0f}"


@dataclass(frozen=True)
class Scheme:
    """A registered scheme: its factory and what the benchmark needs to run it fairly.

    ``factory(image_size, channels, seed, **context)`` returns an :class:`Encryption`;
    ``context`` may hold ``train=(images, labels)`` and ``config`` (the bench's scale preset)
    for schemes that learn (h_θ) — a factory receives only the names its signature declares.
    """

    name: str
    factory: Callable[..., Encryption]
    kind: str = "cipher"
    block_size: int | None = None
    adaptation: str | None = None
    attacks: tuple[str, ...] = ()
    attack_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    public: bool = False
    description: str = ""
    paper: str = ""

    def make(self, *, image_size: Any, channels: int = 3, seed: int = 0, **context: Any) -> Encryption:
        """Build an instance (key + transform) for ``image_size`` images; ``seed`` fixes the key.

        Keys made here are for measurement (reproducible from ``seed``); never use them to protect data.
        """
        from ppml.keys import normalize_image_size

        size = normalize_image_size(image_size)
        params = inspect.signature(self.factory).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        ctx = {k: v for k, v in context.items() if takes_all or k in params}
        enc = self.factory(size, int(channels), int(seed), **ctx)
        if not isinstance(enc, Encryption):
            raise TypeError(f"scheme {self.name!r}: its factory must return a ppml.schemes.Encryption, "
                            f"got {type(enc).__name__}")
        return enc

    def needs(self) -> str:
        """What the classifier needs in front: ``"LE adaptation network"`` or ``"none"``."""
        return f"{self.adaptation.upper()} adaptation network" if self.adaptation else "none"


SCHEMES: dict[str, Scheme] = {}


def register_scheme(name: str, *, kind: str = "cipher", block_size: int | None = None, adaptation: str | None = None,
                    attacks: tuple[str, ...] | None = None, attack_options: Mapping[str, Mapping[str, Any]] | None = None,
                    public: bool = False, description: str = "", paper: str = "", replace: bool = False):
    """Decorator registering ``factory(image_size, channels, seed, ...) -> Encryption`` as ``name``.

    ``attacks`` default by kind (ciphers and learned transforms: FR, GAN, ITN; randomised
    encoders: the attack on mixing; plain: none). Registering a taken name raises unless
    ``replace=True``.
    """
    if not isinstance(name, str) or not name or name != name.strip() or "," in name:
        raise ValueError(f"scheme name must be a non-empty string without commas or surrounding spaces, got {name!r}")
    if kind not in KINDS:
        raise ValueError(f"scheme {name!r}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    atk = _DEFAULT_ATTACKS[kind] if attacks is None else tuple(attacks)
    bad = [a for a in atk if a not in ATTACK_NAMES]
    if bad:
        raise ValueError(f"scheme {name!r}: unknown attack(s) {bad}; choose from {', '.join(ATTACK_NAMES)}")
    if adaptation not in (None, "le", "ele"):
        raise ValueError(f"scheme {name!r}: adaptation must be None, 'le' or 'ele', got {adaptation!r}")

    def deco(factory: Callable[..., Encryption]) -> Callable[..., Encryption]:
        if not callable(factory):
            raise TypeError(f"register_scheme({name!r}) decorates a factory function, got {type(factory).__name__}")
        if name in SCHEMES and not replace and SCHEMES[name].factory is not factory:
            raise ValueError(f"scheme {name!r} is already registered; pick another name or pass replace=True")
        SCHEMES[name] = Scheme(name, factory, kind, block_size, adaptation, atk, dict(attack_options or {}),
                               public, description, paper)
        return factory

    return deco


def unregister_scheme(name: str) -> None:
    """Remove ``name`` from the registry (tests register toy schemes and clean up)."""
    SCHEMES.pop(name, None)


def list_schemes() -> list[str]:
    """Registered scheme names, in registration order (plain first)."""
    return list(SCHEMES)


def get_scheme(name: str) -> Scheme:
    """The registered scheme ``name``; an unknown name raises ``ValueError`` listing the valid ones.

    >>> get_scheme("nope")
    Traceback (most recent call last):
    ...
    ValueError: unknown scheme 'nope': registered schemes are plain, block-scramble, block-scramble-set, le, ele, pe, etc-4, etc-8, etc-16, scramblemix, instahide, datamix, transformnet (register your own with ppml.schemes.register_scheme)
    """
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown scheme {name!r}: registered schemes are {', '.join(SCHEMES)} "
                         "(register your own with ppml.schemes.register_scheme)") from None


# ------------------------------------------------------------------------------------ helpers
def _seed(seed: int, i: int = 0) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), int(i)])


def _to_uint8(u: torch.Tensor) -> torch.Tensor:
    """Float in [0, 1] → the 8-bit image that would be sent."""
    return (u.clamp(0, 1) * 255).round().to(torch.uint8)


def _cipher_instance(key: Any) -> Encryption:
    from ppml.ciphers import cipher_for

    c = cipher_for(key)
    return Encryption(encode=lambda x, g=None: c(x), inverse=c.inverse, key_space_bits=key.key_space_bits(),
                      extras={"key": key, "cipher": c})


def _single_key_block_cipher(key: Any) -> Encryption:
    """A one-key block cipher whose jigsaw ground truth is the key's arrangement for every image
    of the last batch it encoded."""
    inst = _cipher_instance(key)
    holder = {"n": 0}
    enc = inst.encode

    def encode(x, g=None):
        holder["n"] = len(x)
        return enc(x)

    def truth():
        from ppml.attacks.jigsaw import Arrangement, true_arrangement

        return Arrangement.concat([true_arrangement(key)] * holder["n"])

    inst.encode, inst.truth = encode, truth
    return inst


# ------------------------------------------------------------------------------------ the registry
@register_scheme("plain", kind="none", description="no protection (the reference row)")
def _plain(image_size, channels, seed):
    return Encryption(encode=lambda x, g=None: x.clone(), inverse=lambda y: y.clone(), key_space_bits=0.0)


@register_scheme("block-scramble", block_size=8, attacks=("fr", "gan", "itn", "jigsaw"),
                 attack_options={"gan": {"block_size": 8}, "jigsaw": {"scheme": "BlockScramble"}},
                 description="block scrambling, one key", paper="001 (Chuman & Kiya)")
def _block_scramble(image_size, channels, seed):
    from ppml.keys import BlockScrambleKey

    key = BlockScrambleKey.generate(image_size=image_size, block_size=8, channels=channels, seed=_seed(seed))
    return _single_key_block_cipher(key)


#: keys in the per-image key set of paper 001 (N = 4 there)
BLOCK_SCRAMBLE_SET_SIZE = 4


@register_scheme("block-scramble-set", block_size=8, attacks=("fr", "gan", "itn", "jigsaw"),
                 attack_options={"gan": {"block_size": 8}, "jigsaw": {"scheme": "BlockScramble"}},
                 description=f"block scrambling, a key per image drawn from a set of N = {BLOCK_SCRAMBLE_SET_SIZE}",
                 paper="001 (Chuman & Kiya)")
def _block_scramble_set(image_size, channels, seed):
    from ppml.transforms import EncryptBatch
    from ppml.keys import BlockScrambleKey

    keys = [BlockScrambleKey.generate(image_size=image_size, block_size=8, channels=channels, seed=_seed(seed, i))
            for i in range(BLOCK_SCRAMBLE_SET_SIZE)]
    batch = EncryptBatch(keys)

    def encode(x, g=None):
        return batch(x, g if g is not None else torch.Generator().manual_seed(seed))

    def truth():
        from ppml.attacks.jigsaw import Arrangement, true_arrangement

        one = [true_arrangement(k) for k in keys]
        return Arrangement.concat([one[int(i)] for i in batch.last_keys])

    return Encryption(encode=encode, inverse=None, key_space_bits=len(keys) * keys[0].key_space_bits(),
                      truth=truth, extras={"keys": keys, "batch": batch})


@register_scheme("le", block_size=4, adaptation="le", attacks=("fr", "gan", "itn", "le_stats"),
                 attack_options={"gan": {"block_size": 4, "input": "nibbles", "shared_blocks": True, "body": False},
                                 "le_stats": {"block_size": 4}},
                 description="learnable encryption (Tanaka 2018), block 4", paper="002 baseline")
def _le(image_size, channels, seed):
    from ppml.keys import LEKey

    return _cipher_instance(LEKey.generate(image_size=image_size, block_size=4, channels=channels, seed=_seed(seed)))


@register_scheme("ele", block_size=4, adaptation="ele", attacks=("fr", "gan", "itn", "le_stats"),
                 attack_options={"gan": {"block_size": 4, "input": "nibbles"}, "le_stats": {"block_size": 4}},
                 description="extended learnable encryption (Madono et al. 2020), block 4", paper="002 baseline")
def _ele(image_size, channels, seed):
    from ppml.keys import ELEKey

    return _cipher_instance(ELEKey.generate(image_size=image_size, block_size=4, channels=channels, seed=_seed(seed)))


@register_scheme("pe", block_size=1, attack_options={"gan": {"block_size": 1}},
                 description="pixel-based encryption (negate + channel shuffle per pixel)", paper="002 baseline")
def _pe(image_size, channels, seed):
    from ppml.keys import PEKey

    return _cipher_instance(PEKey.generate(image_size=image_size, channels=channels, seed=_seed(seed)))


def _etc_factory(b: int):
    def factory(image_size, channels, seed):
        from ppml.keys import EtCKey

        key = EtCKey.generate(image_size=image_size, block_size=b, channels=channels, seed=_seed(seed))
        return _single_key_block_cipher(key)
    factory.__name__ = factory.__qualname__ = f"etc_{b}"
    return factory


for _b in (4, 8, 16):
    register_scheme(f"etc-{_b}", block_size=_b, attacks=("fr", "gan", "itn", "jigsaw"),
                    attack_options={"gan": {"block_size": _b}, "jigsaw": {"scheme": "EtC"}},
                    description=f"encryption-then-compression, block {_b}", paper="002 (MaungMaung & Kiya)")(_etc_factory(_b))


@register_scheme("scramblemix", kind="encoder", block_size=1,
                 description="ScrambleMix: P = 4 PE key pairs mixed with m ~ Beta(5e-3, 5e-3); one view per image",
                 paper="000 (Madono, Tanaka & Onishi)")
def _scramblemix(image_size, channels, seed):
    from ppml.encoders import ScrambleMix

    sm = ScrambleMix.generate(num_pairs=4, scheme="pe", image_size=image_size, seed=seed)

    def encode(x, g=None):
        return _to_uint8(sm.sample(x, g))
    return Encryption(encode=encode, key_space_note="randomised", extras={"module": sm})


@register_scheme("instahide", kind="encoder",
                 description="InstaHide, k = 4 private images mixed, random sign per value", paper="000 baseline")
def _instahide(image_size, channels, seed):
    from ppml.encoders import InstaHide
    from ppml.encoders.instahide import instahide_loss_hook

    ih = InstaHide(k=4)

    def encode(x, g=None):  # sent in [−1, 1]; as an 8-bit image: (e + 1) / 2
        return _to_uint8((ih(x, g) + 1) / 2)

    def train_loss(num_classes):
        return instahide_loss_hook(ih, num_classes)

    def predict(model, x, g=None):  # the edge sends one encoding per image (T = 1), partners from the batch
        model.eval()
        with torch.no_grad():
            return torch.cat([model(ih(xb, g)).float().softmax(-1) for xb in x.split(256)])
    return Encryption(encode=encode, key_space_note="randomised", train_loss=train_loss, predict=predict,
                      extras={"module": ih})


@register_scheme("datamix", kind="encoder", block_size=1,
                 description="DataMix (pixel-space variant): mix with a partner (λ ≥ 0.5), then PE",
                 paper="000 baseline")
def _datamix(image_size, channels, seed):
    from ppml.encoders import DataMix
    from ppml.encoders.datamix import datamix_loss_hook
    from ppml.keys import PEKey

    dm = DataMix(PEKey.generate(image_size=image_size, channels=channels, seed=_seed(seed)))

    def encode(x, g=None):
        return _to_uint8(dm(x, g))

    def train_loss(num_classes):
        return datamix_loss_hook(dm, num_classes)
    return Encryption(encode=encode, key_space_note="randomised", train_loss=train_loss, extras={"module": dm})


@register_scheme("transformnet", kind="learned", public=True, attack_options={"gan": {"block_size": 4}},
                 description="image transformation network h_θ (one α), trained on the bench's training set",
                 paper="003 (Ito, Kinoshita & Kiya)")
def _transformnet(image_size, channels, seed, train=None, config=None):
    """h_θ trained on Eq. (4) (paper 003) with a classifier ψ of the bench's own recipe;
    ``config["transformnet"]``: ``alpha``, ``n_train``, ``regime`` (``"joint"``: the paper's text,
    ψ trained with h_θ; ``"frozen"``: the authors' later code, ψ first trained on plain images),
    ``identity_epochs`` / ``identity_lr`` (> 0: start h_θ from
    :func:`~ppml.papers.transformation_network.identity_init`, a CPU shortcut not in the paper) and :func:`~ppml.papers.transformation_network.train_transformnet` arguments."""
    from ppml.models import create_model
    from ppml.papers.transformation_network import identity_init, protect, train_transformnet

    if train is None:
        raise ValueError("scheme 'transformnet' learns h_θ from the training images: pass train=(images, labels) "
                         "to Scheme.make (ppml.bench does)")
    config = dict(config or {})
    cfg = dict(config.get("transformnet", {}))
    images, labels = train
    n = int(cfg.pop("n_train", len(images)))
    alpha = float(cfg.pop("alpha", 0.01))
    id_epochs = int(cfg.pop("identity_epochs", 0))
    id_lr = float(cfg.pop("identity_lr", 1e-3))
    k = int(labels.max()) + 1
    h0 = None
    if id_epochs > 0:
        h0 = identity_init(images[:n], width=int(cfg.get("width", 64)), depth=int(cfg.get("depth", 4)),
                           epochs=id_epochs, batch_size=int(cfg.get("batch_size", 128)), lr=id_lr, seed=seed,
                           progress=False)
    regime = str(cfg.pop("regime", "joint"))
    psi = create_model(config["model"], num_classes=k, **dict(config.get("model_kwargs", {}))) \
        if "model" in config else None
    if regime == "frozen":  # ψ: the bench's classifier recipe trained on plain images first, then frozen
        from ppml.train import fit

        if psi is None:
            raise ValueError("transformnet regime 'frozen' needs config['model'] (the classifier ψ to pre-train)")
        fit(psi, (images, labels), epochs=int(config.get("epochs", 1)), batch_size=int(config.get("batch_size", 64)),
            optimizer=config.get("optimizer", "adamw"), lr=float(config.get("lr", 0.01)),
            weight_decay=float(config.get("weight_decay", 0.01)), schedule=config.get("schedule", "triangular"),
            seed=seed, progress=False, device=config.get("device"))
        psi = psi.cpu() if config.get("device", "cpu") == "cpu" else psi
    model, _ = train_transformnet((images[:n], labels[:n]), alpha=alpha, regime=regime, num_classes=k, psi=psi,
                                  h_init=h0, seed=seed, progress=False, **cfg)
    h = model.h.eval()
    return Encryption(encode=lambda x, g=None: protect(h, x), key_space_note="public network",
                      extras={"network": h, "alpha": alpha})
