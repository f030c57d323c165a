"""Scrambling-parameter (key) generation that improves perceptual information hiding.

Madono, Tanaka, Onishi & Ogawa, "Scrambling Parameter Generation to Improve Perceptual
Information Hiding" (paper 05). The perceptual-information-hiding (PIH) score of a key
``P`` on an image set ``{x_i}`` is Eq. (1),

    rho(P; {x_i}) = 1/M · sum_i LPIPS(x_i, f(x_i; P)),

and Algorithm 1 draws ``N`` random keys and keeps the one with the highest score (a later
key replaces the current best only if its score is *strictly* higher, so ties keep the
earliest). :func:`best_key` does exactly that for any key class with ``generate`` and any
cipher of :mod:`ppml.ciphers` (PE, EtC, LE, ELE, block scrambling), with any metric
``metric(x, y) -> (N,)`` (LPIPS-alex by default), batched: each key costs one encryption
and one metric pass over the image set.

The paper's metric study (its Fig. 3 and Table 1) varies the *intensity inversion ratio* of
pixel-based encryption: :func:`inversion_key` / :func:`invert_fraction` invert exactly a
given fraction of the ``C·H·W`` pixel-channel values (``v → 255 − v``), and
:func:`metric_curves` tracks several metrics against that ratio.

Seeds. ``seed=None`` draws the keys from OS entropy (what a real user should do); an
integer makes the search reproducible — and then anyone who knows the seed knows the key.
Trial ``j`` uses child ``j`` of ``numpy.random.SeedSequence(seed)``, so the first ``n``
scores of a search with ``trials=N`` equal those of a search with ``trials=n`` and
:meth:`KeySearchResult.running_best` gives Algorithm 1's result for every ``n <= N`` at once
(the paper's Figs. 4 and 5).

>>> import torch
>>> from ppml.keys import LEKey
>>> x = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
>>> mse = lambda a, b: ((a - b) ** 2).flatten(1).mean(1)
>>> res = best_key(LEKey, x, trials=5, metric=mse, block_size=4, seed=0)
>>> res.scores.shape, res.best_index == int(res.scores.argmax()), res.best_score == float(res.scores.max())
((5,), True, True)
>>> res.key == res.key_at(res.best_index)
True
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ppml._checks import check_images, check_positive_int
from ppml.ciphers import Cipher, cipher_for
from ppml.keys import Key, PEKey, normalize_image_size
from ppml.utils import progress

__all__ = [
    "Metric", "LPIPSScore", "KeySearchResult", "best_key", "pih_score", "key_scores", "inversion_key",
    "invert_fraction", "metric_curves", "normalise_curve", "running_best", "search_repeats",
]

#: A full-reference metric: ``metric(x, y) -> (N,)`` per-image scores for batches ``x, y``
#: of float images in [0, 1] (shape ``(N, C, H, W)``). Higher = better hiding, unless
#: ``maximize=False`` is passed.
Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- helpers
class LPIPSScore:
    """LPIPS (:func:`ppml.metrics.lpips`) as a key-search metric that embeds the plain images once.

    ``score(x, y)`` equals ``ppml.metrics.lpips(x, y, net)``; ``score.bind(x)`` returns
    ``y -> lpips(x, y)`` with the AlexNet (or VGG) features of ``x`` computed once, so scoring
    ``N`` keys costs ``N + 1`` trunk passes over the image set instead of ``2N``. The paper uses
    LPIPS with AlexNet (the default).

    >>> from ppml.datasets import photo_crops
    >>> x, y = photo_crops(3, 32, seed=0), photo_crops(3, 32, seed=1)
    >>> score = LPIPSScore()
    >>> bool(torch.allclose(score.bind(x)(y), score(x, y), atol=1e-6))
    True
    """

    def __init__(self, net: str = "alex") -> None:
        self.net = net

    def __repr__(self) -> str:
        return f"LPIPSScore(net={self.net!r})"

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from ppml.metrics import lpips  # lazily: the metric loads network weights

        return lpips(x, y, self.net)

    def bind(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        from ppml.metrics import lpips, lpips_model

        lpips(x[:1], x[:1], self.net)  # validates channels, size and range with lpips' own messages
        model = lpips_model(self.net, x.device)
        with torch.no_grad():
            fx = model.embed(_to_float(x) * 2 - 1)

        def score(y: torch.Tensor) -> torch.Tensor:
            if y.shape != x.shape:
                raise ValueError(f"LPIPSScore: expected scrambled images of shape {tuple(x.shape)}, "
                                 f"got {tuple(y.shape)}")
            with torch.no_grad():
                return model.distance(fx, model.embed(_to_float(y) * 2 - 1))

        return score


def _default_metric() -> Metric:
    """LPIPS with the AlexNet trunk, the paper's PIH metric (Sec. "LPIPS")."""
    return LPIPSScore("alex")


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def _seed_sequences(seed: Any, n: int) -> list[np.random.SeedSequence]:
    """Children ``0..n-1`` of the seed: trial j's stream does not depend on ``n``."""
    if seed is None:
        root = np.random.SeedSequence()  # OS entropy
    elif isinstance(seed, np.random.SeedSequence):
        root = seed
    elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and int(seed) >= 0:
        root = np.random.SeedSequence(int(seed))
    else:
        raise ValueError(f"seed must be None, a non-negative int or a numpy SeedSequence, got {seed!r}")
    # spawn() would advance the parent's counter; build the children explicitly instead, so the
    # same seed object gives the same keys every time.
    return [np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, j), pool_size=root.pool_size)
            for j in range(n)]


def _key_class(scheme: Any) -> type[Key]:
    """Accept a key class (``LEKey``) or a cipher class (``LE``, via its ``key_type``)."""
    if isinstance(scheme, type) and issubclass(scheme, Cipher):
        return scheme.key_type
    if isinstance(scheme, type) and hasattr(scheme, "generate"):
        return scheme
    raise TypeError(f"expected a key class with .generate (e.g. ppml.keys.LEKey) or a cipher class "
                    f"(e.g. ppml.ciphers.LE), got {scheme!r}")


def _generate_kwargs(key_cls: type[Key], images: torch.Tensor, block_size: int | None,
                     key_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    kw: dict[str, Any] = {"image_size": tuple(images.shape[-2:]), "channels": int(images.shape[1])}
    params = inspect.signature(key_cls.generate).parameters
    if block_size is not None:
        kw["block_size"] = block_size
    elif "block_size" in params and params["block_size"].default is inspect.Parameter.empty:
        raise ValueError(f"{key_cls.__name__}.generate needs a block size: pass block_size=... "
                         f"(e.g. block_size=4 for LE/ELE on 32×32 images)")
    kw.update(key_kwargs or {})
    return kw


def _score_key(cipher: Cipher, chunks: Sequence[torch.Tensor], bound: Sequence[Callable[[torch.Tensor], torch.Tensor]],
               n: int) -> float:
    total = 0.0
    with torch.no_grad():
        for x, score in zip(chunks, bound):
            s = score(_to_float(cipher(x)))
            if s.dim() != 1 or s.shape[0] != x.shape[0]:
                raise ValueError(f"the metric must return one score per image, shape ({x.shape[0]},); "
                                 f"got shape {tuple(s.shape)}")
            total += float(s.double().sum())
    return total / n


def _bind(metric: Metric, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``y -> metric(x, y)``; a metric with ``.bind(x)`` may precompute what depends on ``x``
    only (e.g. LPIPS features of the plain images, shared by every key)."""
    binder = getattr(metric, "bind", None)
    if callable(binder):
        return binder(x)
    xf = _to_float(x)
    return lambda y: metric(xf, y)


def _prepare(images: torch.Tensor, metric: Metric, batch_size: int, device: Any
             ) -> tuple[list[torch.Tensor], list[Callable[[torch.Tensor], torch.Tensor]]]:
    dev = torch.device(device) if device is not None else images.device
    chunks = [images[i:i + batch_size].to(dev) for i in range(0, images.shape[0], batch_size)]
    with torch.no_grad():
        bound = [_bind(metric, c) for c in chunks]
    return chunks, bound


# ----------------------------------------------------------------------------- Eq. (1)
def pih_score(key: Key | Cipher, images: torch.Tensor, metric: Metric | None = None, *,
              batch_size: int = 500, device: torch.device | str | None = None) -> float:
    """Eq. (1): the mean of ``metric(x_i, f(x_i; key))`` over ``images`` (LPIPS-alex by default).

    ``key`` is a key of :mod:`ppml.keys` or a cipher built from one; ``images`` uint8 or
    float in [0, 1], ``(N, C, H, W)``; ``device`` (default: the images') is where the cipher
    and metric run.

    >>> import torch
    >>> from ppml.keys import PEKey
    >>> x = torch.full((2, 3, 4, 4), 10, dtype=torch.uint8)
    >>> mae = lambda a, b: (a - b).abs().flatten(1).mean(1)
    >>> key = inversion_key(4, 1.0, seed=0)  # every value inverted: 10 -> 245
    >>> round(pih_score(key, x, mae), 6) == round(235 / 255, 6)
    True
    """
    images = check_images(images, "images", "pih_score")
    batch_size = check_positive_int(batch_size, "batch_size")
    metric = metric if metric is not None else _default_metric()
    cipher = key if isinstance(key, Cipher) else cipher_for(key)
    chunks, bound = _prepare(images, metric, batch_size, device)
    cipher = cipher.to(chunks[0].device)
    return _score_key(cipher, chunks, bound, images.shape[0])


# ----------------------------------------------------------------------------- Algorithm 1
@dataclasses.dataclass(frozen=True, eq=False)
class KeySearchResult:
    """The outcome of :func:`best_key`.

    Attributes:
        key: the selected key (the highest score; the earliest of equal scores).
        scores: ``(trials,)`` float64 PIH score of every trial key, in trial order.
        best_index: the trial that produced ``key``.
        maximize: whether higher scores were preferred.

    The result holds the seeds of every trial, so :meth:`key_at` can rebuild any trial's
    key: treat it as a secret, like the key. Its ``repr`` shows no key material.
    """

    key: Key
    scores: np.ndarray
    best_index: int
    maximize: bool = True
    _key_cls: type[Key] = dataclasses.field(default=Key, repr=False)
    _generate_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    _seeds: Sequence[np.random.SeedSequence] = dataclasses.field(default=(), repr=False)

    def __repr__(self) -> str:
        return (f"KeySearchResult(scheme={self._key_cls.scheme!r}, trials={len(self.scores)}, "
                f"best_index={self.best_index}, best_score={self.best_score:.4f}, key={self.key.fingerprint!r})")

    @property
    def trials(self) -> int:
        """Number of keys drawn."""
        return len(self.scores)

    @property
    def best_score(self) -> float:
        """The selected key's score, ``scores[best_index]``."""
        return float(self.scores[self.best_index])

    @property
    def first_score(self) -> float:
        """The score of the first (plain random) key — the paper's "original" scheme."""
        return float(self.scores[0])

    def running_best(self) -> np.ndarray:
        """Algorithm 1's selected score for every number of trials ``n = 1..N`` (shape ``(N,)``).

        >>> r = KeySearchResult(Key, np.array([0.2, 0.1, 0.4, 0.3]), 2)
        >>> r.running_best().tolist()
        [0.2, 0.2, 0.4, 0.4]
        """
        return running_best(self.scores, maximize=self.maximize)

    def key_at(self, trial: int) -> Key:
        """Rebuild the key drawn in ``trial`` (0-based); ``key_at(0)`` is the plain random key."""
        if not 0 <= int(trial) < len(self._seeds):
            raise ValueError(f"trial must be in 0..{len(self._seeds) - 1}, got {trial}")
        return self._key_cls.generate(**self._generate_kwargs,
                                      seed=np.random.default_rng(self._seeds[int(trial)]))


def running_best(scores: Sequence[float] | np.ndarray, *, maximize: bool = True) -> np.ndarray:
    """Prefix maxima (or minima) of ``scores``: the score Algorithm 1 returns after n trials.

    Works on the last axis, so a ``(repeats, N)`` array gives one curve per repeat.

    >>> running_best([0.3, 0.1, 0.5]).tolist(), running_best([0.3, 0.1, 0.5], maximize=False).tolist()
    ([0.3, 0.3, 0.5], [0.3, 0.1, 0.1])
    """
    a = np.asarray(scores, dtype=np.float64)
    return (np.maximum if maximize else np.minimum).accumulate(a, axis=-1)


def key_scores(keys: Sequence[Key], images: torch.Tensor, metric: Metric | None = None, *,
               batch_size: int = 500, device: torch.device | str | None = None, desc: str | None = None
               ) -> np.ndarray:
    """Eq. (1) for each of ``keys`` on the same images, shape ``(len(keys),)`` float64.

    What depends on the plain images only is computed once (see :func:`best_key`).

    >>> import torch
    >>> from ppml.keys import PEKey
    >>> x = torch.randint(0, 256, (4, 3, 4, 4), dtype=torch.uint8)
    >>> mse = lambda a, b: ((a - b) ** 2).flatten(1).mean(1)
    >>> s = key_scores([inversion_key(4, r, seed=0) for r in (0.0, 1.0)], x, mse)
    >>> float(s[0]), bool(s[1] > 0)
    (0.0, True)
    """
    images = check_images(images, "images", "key_scores")
    batch_size = check_positive_int(batch_size, "batch_size")
    metric = metric if metric is not None else _default_metric()
    chunks, bound = _prepare(images, metric, batch_size, device)
    out = np.empty(len(keys), dtype=np.float64)
    for j, key in enumerate(progress(keys, desc=desc or "scoring keys", leave=False)):
        out[j] = _score_key(cipher_for(key).to(chunks[0].device), chunks, bound, images.shape[0])
    return out


def best_key(scheme: type[Key] | type[Cipher], images: torch.Tensor, trials: int = 20, *,
             metric: Metric | None = None, block_size: int | None = None,
             key_kwargs: Mapping[str, Any] | None = None, seed: Any = None, maximize: bool = True,
             batch_size: int = 500, device: torch.device | str | None = None) -> KeySearchResult:
    """Algorithm 1: draw ``trials`` random keys, score each by Eq. (1), keep the best.

    Args:
        scheme: a key class (``PEKey``, ``EtCKey``, ``LEKey``, ``ELEKey``, … — anything with
            ``generate(image_size=, channels=, [block_size=], seed=)`` that
            :func:`ppml.ciphers.cipher_for` knows) or a cipher class (``LE``).
        images: the image set ``{x_i}``, uint8 or float in [0, 1], ``(M, C, H, W)``; keys are
            generated for its size and channel count. The authors scored on the whole
            training set.
        trials: ``N``, the number of keys drawn (the paper uses 20).
        metric: ``metric(x, y) -> (M,)`` per-image scores (default: LPIPS-alex from
            :mod:`ppml.metrics`, the paper's choice). A metric object with a ``bind(x)``
            method returning ``y -> scores`` lets the plain-image half be computed once for
            all keys.
        block_size: the schemes' block size (required unless ``generate`` has a default,
            as PE's block size 1 does).
        key_kwargs: more keyword arguments for ``generate``.
        seed: ``None`` (OS entropy) or an int / ``SeedSequence`` for a reproducible search;
            trial ``j`` uses child ``j``, so searches with more trials extend shorter ones.
        maximize: keep the highest score (Algorithm 1); ``False`` keeps the lowest (for
            metrics where lower means better hiding, e.g. SSIM).
        batch_size: images per metric call.
        device: where ciphers and the metric run (default: the images' device).

    Returns a :class:`KeySearchResult` with the selected key and every trial's score.

    >>> import torch
    >>> from ppml.keys import PEKey
    >>> x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    >>> mae = lambda a, b: (a - b).abs().flatten(1).mean(1)
    >>> r20 = best_key(PEKey, x, trials=20, metric=mae, seed=1)
    >>> r5 = best_key(PEKey, x, trials=5, metric=mae, seed=1)
    >>> bool(np.array_equal(r20.scores[:5], r5.scores)), r20.best_score >= r5.best_score
    (True, True)
    """
    key_cls = _key_class(scheme)
    images = check_images(images, "images", "best_key")
    trials = check_positive_int(trials, "trials")
    batch_size = check_positive_int(batch_size, "batch_size")
    metric = metric if metric is not None else _default_metric()
    if not callable(metric):
        raise TypeError(f"metric must be a callable metric(x, y) -> (N,) scores, got {type(metric).__name__}")
    gen_kw = _generate_kwargs(key_cls, images, block_size, key_kwargs)
    seeds = _seed_sequences(seed, trials)
    chunks, bound = _prepare(images, metric, batch_size, device)
    dev = chunks[0].device
    scores = np.empty(trials, dtype=np.float64)
    best: Key | None = None
    best_j = 0
    for j in progress(range(trials), desc=f"key search ({key_cls.__name__})", leave=False):
        key = key_cls.generate(**gen_kw, seed=np.random.default_rng(seeds[j]))
        scores[j] = _score_key(cipher_for(key).to(dev), chunks, bound, images.shape[0])
        better = scores[j] > scores[best_j] if maximize else scores[j] < scores[best_j]
        if j == 0 or better:  # strict: ties keep the earliest key (Algorithm 1, line 6)
            best, best_j = key, j
    if not np.isfinite(scores).all():
        raise ValueError("the metric returned non-finite scores; check the metric and the image range")
    assert best is not None
    return KeySearchResult(best, scores, best_j, maximize, key_cls, dict(gen_kw), tuple(seeds))


# ----------------------------------------------------------------------------- inversion ratio
INVERSION_UNITS = ("value", "pixel")


def inversion_key(image_size: Any, ratio: float, channels: int = 3, seed: Any = None, *,
                  unit: str = "value") -> PEKey:
    """A pixel-based-encryption key that inverts exactly ``round(ratio · C·H·W)`` values.

    The paper's metric study (Sec. "Metric Comparison") scrambles images with pixel-based
    encryption [Sirichotedumrong et al.] whose parameter picks which channels and intensities
    are inverted, and varies the *intensity inversion ratio*. Here the inverted positions are
    a uniformly random subset of that exact size (one mask for the whole image set, as a key
    is); the channel shuffle is the identity, so only the ratio varies. Apply it with
    :func:`ppml.ciphers.cipher_for` or :func:`invert_fraction`.

    ``unit="value"`` (default) draws the subset among the ``C·H·W`` values independently per
    channel, as PE's key does; ``unit="pixel"`` inverts ``round(ratio · H·W)`` whole pixels (all
    channels together, so a grey image stays grey). The paper does not say which; the peak of
    LPIPS over the ratio depends on it (notebook 05).

    >>> k = inversion_key(32, 0.25, seed=0)
    >>> int(k.negpos.sum()), 3 * 32 * 32 // 4, int(k.channel_perm.max())
    (768, 768, 0)
    >>> k = inversion_key(32, 0.25, seed=0, unit="pixel")
    >>> int(k.negpos.sum()), bool((k.negpos == k.negpos[:1]).all())
    (768, True)
    """
    if unit not in INVERSION_UNITS:
        raise ValueError(f"unit must be one of {', '.join(map(repr, INVERSION_UNITS))}, got {unit!r}")
    h, w = normalize_image_size(image_size)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating, np.integer)) \
            or not 0.0 <= float(ratio) <= 1.0:
        raise ValueError(f"ratio must be a number in [0, 1] (the fraction of inverted values), got {ratio!r}")
    c = check_positive_int(channels, "channels")
    rng = np.random.default_rng(seed) if not isinstance(seed, np.random.Generator) else seed
    d = c * h * w if unit == "value" else h * w
    k = int(round(float(ratio) * d))
    mask = np.zeros(d, dtype=np.int64)
    mask[rng.permutation(d)[:k]] = 1
    mask = mask.reshape(c, h, w) if unit == "value" else np.repeat(mask.reshape(1, h, w), c, axis=0)
    return PEKey(mask, np.zeros((h, w), dtype=np.int64))


def invert_fraction(x: torch.Tensor, ratio: float, seed: Any = None, *, unit: str = "value") -> torch.Tensor:
    """Invert (``v → 255 − v``, or ``1 − v`` for floats) a random ``ratio`` of the values of
    every image in ``x`` — the same positions in every image (see :func:`inversion_key`;
    ``unit="pixel"`` inverts whole pixels).

    >>> import torch
    >>> x = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    >>> y = invert_fraction(x, 0.5, seed=0)
    >>> int((y == 255).sum()), bool(torch.equal(y[0], y[1]))
    (48, True)
    >>> torch.equal(invert_fraction(x, 0.0, seed=0), x), int(invert_fraction(x, 1.0).min())
    (True, 255)
    """
    x = check_images(x, "x", "invert_fraction")
    key = inversion_key(tuple(x.shape[-2:]), ratio, channels=x.shape[1], seed=seed, unit=unit)
    return cipher_for(key).to(x.device)(x)


def metric_curves(images: torch.Tensor, ratios: Sequence[float], metrics: Mapping[str, Callable[..., Any]], *,
                  repeats: int = 10, seed: int = 0, batch_size: int = 500,
                  device: torch.device | str | None = None, unit: str = "value") -> dict[str, np.ndarray]:
    """Each metric against the intensity inversion ratio (the paper's Fig. 3, before normalising).

    For every repeat ``r`` and ratio, one inversion mask (:func:`inversion_key`, seeded by
    ``(seed, r, ratio index)``) scrambles all ``images``; each ``metrics[name](x, y)`` is
    called on float batches in [0, 1] of plain ``x`` and scrambled ``y`` and returns either
    one score per image (averaged over the images) or a single number for the batch (a
    set-level metric such as FID: it is then called once with all images, ignoring
    ``batch_size``). No-reference metrics ignore ``x``: pass ``lambda x, y: brisque(y)``.
    ``unit``: invert single values (PE's key, default) or whole pixels (:func:`inversion_key`).

    Returns ``name → (repeats, len(ratios))`` float64 means.

    >>> import torch
    >>> x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    >>> mse = lambda a, b: ((a - b) ** 2).flatten(1).mean(1)
    >>> c = metric_curves(x, [0.0, 0.5, 1.0], {"mse": mse}, repeats=2)
    >>> c["mse"].shape, float(c["mse"][0, 0]), bool((c["mse"][:, 2] > c["mse"][:, 1]).all())
    ((2, 3), 0.0, True)
    """
    images = check_images(images, "images", "metric_curves")
    repeats = check_positive_int(repeats, "repeats")
    batch_size = check_positive_int(batch_size, "batch_size")
    ratios = [float(r) for r in ratios]
    if not ratios:
        raise ValueError("ratios is empty: give the inversion ratios to evaluate, e.g. [0, 0.1, …, 1]")
    if not metrics:
        raise ValueError("metrics is empty: give name → metric(x, y)")
    dev = torch.device(device) if device is not None else images.device
    x_all = images.to(dev)
    out = {name: np.empty((repeats, len(ratios)), dtype=np.float64) for name in metrics}
    set_level: dict[str, bool] = {}
    steps = [(r, i) for r in range(repeats) for i in range(len(ratios))]
    for r, i in progress(steps, desc="inversion ratios", leave=False):
        key = inversion_key(tuple(images.shape[-2:]), ratios[i], channels=images.shape[1],
                            seed=np.random.SeedSequence([int(seed), r, i]), unit=unit)
        cipher = cipher_for(key).to(dev)
        for name, fn in metrics.items():
            with torch.no_grad():
                if set_level.get(name):
                    out[name][r, i] = float(fn(_to_float(x_all), _to_float(cipher(x_all))))
                    continue
                total, n = 0.0, 0
                for s in range(0, x_all.shape[0], batch_size):
                    x = x_all[s:s + batch_size]
                    v = fn(_to_float(x), _to_float(cipher(x)))
                    v = torch.as_tensor(v, dtype=torch.float64)
                    if v.dim() == 0:  # a set-level metric: evaluate it on the whole set instead
                        set_level[name] = True
                        break
                    total += float(v.sum())
                    n += v.shape[0]
                if set_level.get(name):
                    out[name][r, i] = float(fn(_to_float(x_all), _to_float(cipher(x_all))))
                else:
                    out[name][r, i] = total / n
    return out


def normalise_curve(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Min–max normalise a curve to [0, 1] over its finite values (non-finite → NaN).

    Used to draw metrics of different units on one axis (Fig. 3). PSNR is infinite at a
    ratio of 0 (identical images); that point is left out of the scaling and shown as a gap.

    >>> normalise_curve([2.0, 4.0, 3.0]).tolist()
    [0.0, 1.0, 0.5]
    >>> normalise_curve([float("inf"), 10.0, 20.0]).tolist()
    [nan, 0.0, 1.0]
    """
    a = np.asarray(values, dtype=np.float64).copy()
    a[~np.isfinite(a)] = np.nan
    if np.isnan(a).all():
        return a
    lo, hi = np.nanmin(a), np.nanmax(a)
    if hi == lo or not math.isfinite(hi - lo):
        return np.where(np.isnan(a), np.nan, 0.0)
    return (a - lo) / (hi - lo)


# ----------------------------------------------------------------------------- experiments
def search_repeats(scheme: type[Key] | type[Cipher], images: torch.Tensor, *, trials: int = 20, repeats: int = 10,
                   seed: int = 0, **kwargs: Any) -> list[KeySearchResult]:
    """``repeats`` independent runs of :func:`best_key` (the paper's Figs. 4/5 and Table 2).

    Run ``r`` is seeded by ``SeedSequence([seed, r])``; ``kwargs`` go to :func:`best_key`.
    ``np.stack([r.running_best() for r in runs])`` is the ``(repeats, trials)`` array whose
    column means and SDs are Figs. 4 and 5; ``runs[r].key_at(0)`` is run r's random key
    ("original") and ``runs[r].key`` its selected key ("proposed").

    >>> import torch
    >>> from ppml.keys import PEKey
    >>> x = torch.randint(0, 256, (4, 3, 4, 4), dtype=torch.uint8)
    >>> mae = lambda a, b: (a - b).abs().flatten(1).mean(1)
    >>> runs = search_repeats(PEKey, x, trials=3, repeats=2, metric=mae)
    >>> len(runs), runs[0].trials, bool(runs[0].scores[0] != runs[1].scores[0])
    (2, 3, True)
    """
    repeats = check_positive_int(repeats, "repeats")
    return [best_key(scheme, images, trials, seed=np.random.SeedSequence([int(seed), r]), **kwargs)
            for r in range(repeats)]
