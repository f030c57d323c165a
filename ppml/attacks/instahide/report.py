"""The attack report of notebook 01: labelled photo crops, the InstaHide and ScrambleMix challenges
and :func:`attack_report`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .reconstruction import _flat_unit
from .carlini import Challenge, make_challenge, carlini_attack, challenge_scores


#: Default data of :func:`attack_report`: private photos labelled by their source photograph,
#: public photos of other scenes (ppml.datasets.PHOTO_SOURCES).
PRIVATE_SOURCES = ("astronaut", "chelsea", "coffee", "rocket")
PUBLIC_SOURCES = ("china", "flower", "stereo_motorcycle")


def labelled_photo_crops(n: int, size: int = 32, seed: int = 0, *,
                         sources: tuple[str, ...] = PRIVATE_SOURCES) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` real photo crops labelled by their source photograph (``n // len(sources)`` or
    one more per source), uint8 ``(n, 3, size, size)`` and labels ``(n,)``."""
    from ppml.datasets import photo_crops

    per = [n // len(sources) + (i < n % len(sources)) for i in range(len(sources))]
    x = torch.cat([photo_crops(m, size, seed=int(seed) * 1000 + 10 + i, sources=[s])
                   for i, (m, s) in enumerate(zip(per, sources))])
    return x, torch.arange(len(sources)).repeat_interleave(torch.tensor(per))


def instahide_challenge(private: torch.Tensor, labels: torch.Tensor, public: torch.Tensor, *, mode: str = "inside",
                        num_classes: int | None = None, encodings_per_image: int = 40, restarts: int | None = None,
                        seed: int = 0) -> dict:
    """Build a scaled-down InstaHide Challenge from ``private`` images (classes ``labels``) and
    attack it twice: with the true membership and weights (the oracle) and for real
    (membership found, weights from the mixed labels). ``mode``: ``"inside"`` (k = 4, private
    partners) or ``"cross"`` (the Challenge's k = 6: 2 private + 4 from ``public``).

    Returns a dict: ``mean_ssim``, ``max_ssim`` (the Challenge's way), ``challenge_mean_ssim``,
    ``frac_above_0.5``, ``sign_accuracy``, ``per_image_ssim`` (the full attack);
    ``oracle_mean_ssim``, ``oracle_frac_above_0.5``, ``oracle_sign_accuracy``,
    ``oracle_per_image_ssim``; ``floor`` (SSIM of the mean public image); ``images`` (the full
    attack's reconstructions matched to ``originals``), ``oracle_images``, ``originals``
    (float [0, 1]); ``cpu_seconds``; ``n_encodings``.
    """
    import time

    if mode not in ("inside", "cross"):
        raise ValueError(f"mode must be 'inside' or 'cross', got {mode!r}")
    t0 = time.process_time()
    nc = int(torch.as_tensor(labels).max()) + 1 if num_classes is None else int(num_classes)
    kw = dict(k=4) if mode == "inside" else dict(k=6, k_private=2, public=public)
    ch = make_challenge(private, labels, nc, encodings_per_image=encodings_per_image, seed=seed, **kw)
    ch.public = _flat_unit(public)
    n = len(ch.private)
    r_ = (16 if mode == "inside" else 2) if restarts is None else int(restarts)
    common = dict(public=public, k=ch.k, restarts=r_, seed=seed)
    oracle = carlini_attack(encodings=ch.encodings, targets=ch.targets, n_private=n, k_private=ch.k_private,
                            members=ch.members,
                            weights=ch.weights[:, :ch.k_private], classes=ch.labels, **common)
    full = carlini_attack(encodings=ch.encodings, targets=ch.targets, n_private=n, k_private=ch.k_private, **common)
    so, sf = challenge_scores(ch, oracle), challenge_scores(ch, full)
    out = {k: v for k, v in sf.items() if k != "match"}
    out.update({"oracle_mean_ssim": so["mean_ssim"], "oracle_frac_above_0.5": so["frac_above_0.5"],
                "oracle_sign_accuracy": so["sign_accuracy"], "oracle_per_image_ssim": so["per_image_ssim"],
                "images": full.images[sf["match"]], "oracle_images": oracle.images[so["match"]],
                "originals": ch.private, "n_encodings": len(ch.encodings), "mode": mode,
                "cpu_seconds": time.process_time() - t0})
    return out


def scramblemix_challenge(private: torch.Tensor, labels: torch.Tensor, public: torch.Tensor, scramblemix: nn.Module, *,
                          encodings_per_image: int = 40, adaptive: bool = False, seed: int = 0) -> dict:
    """The same pipeline on ScrambleMix views (``encodings_per_image`` views per image, labels
    not mixed, so one member of weight 1 per view): as sent (values in [0, 1]) or
    ``adaptive`` (centred first: PE's negation becomes a sign flip the attack removes).
    Returns ``mean_ssim`` (per image, matched), ``max_ssim``, ``per_image_ssim``, ``images``
    (matched to the originals), ``floor``, ``cpu_seconds``."""
    import time

    t0 = time.process_time()
    x = _flat_unit(private)
    y = torch.as_tensor(labels, dtype=torch.int64)
    n, T = len(x), int(encodings_per_image)
    g = torch.Generator().manual_seed(int(seed))
    enc = scramblemix.views(x, g, num_views=T).transpose(0, 1).reshape(n * T, *x.shape[1:])
    nc = int(y.max()) + 1
    members = torch.arange(n).repeat(T).unsqueeze(1)
    targets = F.one_hot(y[members[:, 0]], nc).double()
    ch = Challenge(enc, targets, members, torch.ones(n * T, 1), members, x, y, _flat_unit(public), 1, 1)
    r = carlini_attack(encodings=enc, targets=targets, n_private=n, k_private=1, public=public,
                       value_range=(0.0, 1.0), centre=bool(adaptive), restarts=2, seed=seed)
    sc = challenge_scores(ch, r)
    return {"mean_ssim": sc["mean_ssim"], "max_ssim": sc["max_ssim"], "frac_above_0.5": sc["frac_above_0.5"],
            "per_image_ssim": sc["per_image_ssim"], "images": r.images[sc["match"]], "floor": sc["floor"],
            "cpu_seconds": time.process_time() - t0}


def attack_report(scramblemix: nn.Module | None = None, *, n_private: int = 32, encodings_per_image: int = 40,
                  size: int = 32, n_public: int = 256, modes: tuple[str, ...] = ("inside", "cross"),
                  primary: str = "inside", private: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                  public: torch.Tensor | None = None, seed: int = 0) -> dict:
    """Notebook 01's security experiment in one call: the attack on InstaHide (each of
    ``modes``, :func:`instahide_challenge`) and on ``scramblemix`` views as sent and adaptive
    (:func:`scramblemix_challenge`), on real photo crops labelled by source photograph
    (private: :data:`PRIVATE_SOURCES`; public: other photographs, :data:`PUBLIC_SOURCES`) or
    the given ``private``/``labels``/``public``.

    Returns ``{"instahide": {mean_ssim, max_ssim, oracle_mean_ssim, sign_accuracy, floor, …}
    of the ``primary`` mode, "modes": {mode: …}, "scramblemix": {mean_ssim, …} (as sent),
    "scramblemix_adaptive": {…}, "floor": …}``; every entry also holds its images for a figure
    (:func:`ppml.plots.attack_figure`).
    """
    if private is None:
        private, labels = labelled_photo_crops(int(n_private), int(size), seed=seed)
    elif labels is None:
        raise ValueError("attack_report: private= needs labels= (the attack reads weights off mixed labels)")
    if public is None:
        from ppml.datasets import photo_crops
        public = photo_crops(int(n_public), int(size), seed=int(seed) * 1000 + 1, sources=list(PUBLIC_SOURCES))
    if primary not in modes:
        raise ValueError(f"primary={primary!r} must be one of modes={modes}")
    res = {m: instahide_challenge(private, labels, public, mode=m, encodings_per_image=encodings_per_image, seed=seed)
           for m in modes}
    out = {"instahide": res[primary], "modes": res, "floor": res[primary]["floor"]}
    if scramblemix is not None:
        out["scramblemix"] = scramblemix_challenge(private, labels, public, scramblemix,
                                                   encodings_per_image=encodings_per_image, seed=seed)
        out["scramblemix_adaptive"] = scramblemix_challenge(private, labels, public, scramblemix, adaptive=True,
                                                            encodings_per_image=encodings_per_image, seed=seed)
    return out
