"""The whole attack after Carlini et al.: the InstaHide Challenge (:class:`Challenge`,
:func:`make_challenge`, :func:`public_offset`), :func:`carlini_attack` and its scores
(:func:`challenge_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ppml._checks import ShapeError, check_finite, check_images
from .baseline import abs_features
from .reconstruction import _flat_unit, _centred, mixing_matrix, reconstruct_signed, align_pixel_signs, global_sign
from .membership import find_membership, recode_members, weights_from_labels


# ----------------------------------------------------------------------------- the whole attack
@dataclass
class Challenge:
    """An InstaHide Challenge data set (:func:`make_challenge`) with its ground truth."""

    encodings: torch.Tensor  #: (M, C, H, W) encodings in [−1, 1] (what the attacker sees)
    targets: torch.Tensor    #: (M, K) mixed labels (what the attacker sees)
    members: torch.Tensor    #: (M, k_private) private images in each encoding (ground truth)
    weights: torch.Tensor    #: (M, k) mixing weights, private slots first (ground truth)
    partners: torch.Tensor   #: (M, k) all partners (−1 − i: public image i), as InstaHideBatch.partners
    private: torch.Tensor    #: (N, C, H, W) the private images in [0, 1]
    labels: torch.Tensor     #: (N,) their classes
    public: torch.Tensor     #: (P, C, H, W) the public pool in [0, 1] (known to the attacker)
    k: int
    k_private: int


def make_challenge(private: torch.Tensor, labels: torch.Tensor, num_classes: int, *, k: int = 4,
                   k_private: int | None = None, public: torch.Tensor | None = None,
                   encodings_per_image: int = 40, seed: int = 0) -> Challenge:
    """Encode ``private`` images the InstaHide Challenge's way, scaled down: one InstaHide epoch
    after another (every image once as the protected image, partners re-drawn) until each image
    lies in about ``encodings_per_image`` encodings (``⌈T / k_private⌉`` epochs). Inside-dataset
    ``k=4``; cross-dataset ``k=6, k_private=2`` with a ``public`` pool (as the Challenge and the
    authors' ``train_cross.py``). Labels are mixed as the authors do (not renormalised)."""
    from ppml.encoders.instahide import InstaHide

    x = _flat_unit(private)
    y = torch.as_tensor(labels, dtype=torch.int64)
    if x.dim() != 4 or y.shape != (len(x),):
        raise ValueError(f"make_challenge: expected private (N, C, H, W) and labels (N,), got {tuple(x.shape)}, {tuple(y.shape)}")
    if int(encodings_per_image) < 1:
        raise ValueError(f"encodings_per_image must be >= 1, got {encodings_per_image}")
    ih = InstaHide(k=k, k_private=k_private, public=public)
    g = torch.Generator().manual_seed(int(seed))
    epochs = -(-int(encodings_per_image) // ih.k_private)
    bs = [ih.encode(x, g, y=y, num_classes=int(num_classes)) for _ in range(epochs)]
    pub = ih.public if len(ih.public) else torch.empty(0, *x.shape[1:])
    return Challenge(torch.cat([b.images for b in bs]), torch.cat([b.targets for b in bs]),
                     torch.cat([b.partners[:, :ih.k_private] for b in bs]), torch.cat([b.weights for b in bs]),
                     torch.cat([b.partners for b in bs]), x, y, pub, ih.k, ih.k_private)


def public_offset(targets: torch.Tensor, public: torch.Tensor, shape: tuple[int, ...], *, k: int = 6,
                  k_private: int = 2, noise_scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The public part of each mixture in the cross-dataset mode, as the attacker models it:
    its known mean, the public share ``s_t = 1 − Σ y_t`` (mixed labels are not renormalised, so
    they reveal it) times the mean centred public image, and its variance
    ``noise_scale · s_t² · E[Σλ_pub²/s²] · Var(public pixel)`` (the expectation over the
    scheme's own weight rule, for the ``k − k_private`` public slots). Returns
    ``(offset (M, *shape), variance (M, *shape))`` float64, or zeros and ``None`` in the
    inside-dataset mode (labels summing to 1)."""
    from ppml.encoders.instahide import InstaHide

    share = (1 - torch.as_tensor(targets, dtype=torch.float64).sum(1)).clamp_min(0)
    if len(public) == 0 or float(share.max()) < 1e-6 or k_private >= k:
        return torch.zeros(len(share), *shape, dtype=torch.float64), None
    pub = _centred(public)
    view = (-1, *([1] * len(shape)))
    w = InstaHide(k=k, k_private=k_private, public=public[:1]).sample_weights(4096, torch.Generator().manual_seed(0))
    wp = w[:, k_private:].double()
    c = float(((wp ** 2).sum(1) / wp.sum(1).clamp_min(1e-12) ** 2).mean())
    var = float(noise_scale) * c * share.pow(2).view(view) * pub.var(0, unbiased=False)
    return share.view(view) * pub.mean(0), var


def public_partners(abs_enc: torch.Tensor, targets: torch.Tensor, public: torch.Tensor, *, k: int = 6,
                    k_private: int = 2, noise_scale: float = 2.0, radius: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`public_offset` sharpened by finding the public partners: the attacker holds the
    public pool, so each encoding's ``k − k_private`` public partners are coded with their
    known energy atoms ``hp(|ũ|²)`` (greedy non-negative sparse coding of ``hp(|e|²)``; the
    coefficient of atom ``j`` estimates ``μ_j²``). The offset becomes ``Σ_j μ̂_j ũ_j`` plus the
    share left unexplained times the mean public image, ``μ̂`` the square roots of the
    coefficients scaled to at most the public share; the variance shrinks by the explained
    share. Inside-dataset: as :func:`public_offset`."""
    from .membership import _code, _energy_features

    shape = tuple(abs_enc.shape[1:])
    off, var = public_offset(targets, public, shape, k=k, k_private=k_private, noise_scale=noise_scale)
    if var is None:
        return off, var
    t = torch.as_tensor(targets, dtype=torch.float64)
    share = (1 - t.sum(1)).clamp_min(0)
    f = _energy_features(abs_enc, radius)
    pub = _centred(public)
    pa = _energy_features(pub.abs(), radius)
    M = len(f)
    _, Z, _ = _code(f, f.mean(0), pa, torch.ones(M, len(pa), dtype=torch.bool), int(k) - int(k_private))
    mu = Z.clamp_min(0).sqrt()
    tot = mu.sum(1)
    mu = mu * torch.where(tot > share, share / tot.clamp_min(1e-12), torch.ones_like(tot))[:, None]
    rest = share - mu.sum(1)
    view = (-1, *([1] * len(shape)))
    off = (mu @ pub.flatten(1)).view(M, *shape) + rest.view(view) * pub.mean(0)
    frac = (rest / share.clamp_min(1e-12)).clamp(0, 1)
    var = var * frac.pow(2).clamp_min(0.25).view(view)
    return off, var


@dataclass
class CarliniResult:
    """What :func:`carlini_attack` returns."""

    images: torch.Tensor   #: (N, C, H, W) reconstructions in [0, 1]
    signed: torch.Tensor   #: (N, C, H, W) centred estimates after the sign fixes
    members: torch.Tensor  #: (M, k_private) private images assigned to each encoding
    weights: torch.Tensor  #: (M, k_private) their weights
    classes: torch.Tensor  #: (N,) class of each reconstruction
    flips: torch.Tensor    #: (C, H, W) per-position signs applied (× the global sign)
    residual: torch.Tensor  #: (C, H, W) misfit per pixel of the phase retrieval


def carlini_attack(*, encodings: torch.Tensor, targets: torch.Tensor, n_private: int, k_private: int,
                   public: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0), centre: bool = False,
                   members: torch.Tensor | None = None, weights: torch.Tensor | None = None,
                   classes: torch.Tensor | None = None, k: int | None = None, restarts: int = 16,
                   iters: int = 40, robust: int = 0, rounds: int = 1, recode_iters: int = 3,
                   find_public: bool = True, seed: int = 0) -> CarliniResult:
    """The attack on InstaHide after Carlini et al. (2021), on the true forward model.

    From the encodings ``(M, C, H, W)`` (sent in ``value_range``; ``centre`` as in
    :func:`abs_features`), the mixed labels ``targets`` ``(M, K)``, the number of private
    images and the public pool: absolute values → membership (:func:`find_membership`, or the
    given ``members``/``classes``: the oracle) → weights from the labels
    (:func:`weights_from_labels`, or the given ``weights``) → signed phase retrieval with the
    public share as a known offset (:func:`reconstruct_signed`; :func:`public_partners` with
    ``find_public``, which also strips the public partners from the membership features, else
    :func:`public_offset`) → ``rounds`` times (not for the oracle): membership again from the
    reconstructions (:func:`recode_members`, ``recode_iters`` alternations) and a new fit → one
    sign per pixel position (:func:`align_pixel_signs`) → the global sign (:func:`global_sign`).
    """
    check_finite(check_images(encodings, "encodings", "carlini_attack", value_range=None), "encodings",
                 "carlini_attack")
    t = torch.as_tensor(targets, dtype=torch.float64)
    if t.dim() != 2 or t.shape[0] != encodings.shape[0]:
        raise ShapeError(f"carlini_attack: targets must be (M={encodings.shape[0]}, K), got {tuple(t.shape)}")
    a = abs_features(encodings.cpu(), value_range=value_range, centre=centre).double()
    k = int(k_private if k is None else k)
    oracle = members is not None
    cross = bool(find_public) and len(public) > 0 and k > k_private and float(t.sum(1).min()) < 1 - 1e-6
    if members is None:
        members, classes = find_membership(a, t, n_private, k_private, public=public if cross else None,
                                           k_public=k - k_private if cross else 0)
    elif classes is None and weights is None:
        raise ValueError("carlini_attack: with members= give classes= (to read weights off labels) or weights=")
    members = torch.as_tensor(members, dtype=torch.int64)
    if weights is None:
        weights = weights_from_labels(t, members, classes)
    weights = torch.as_tensor(weights, dtype=torch.float64)[:, : members.shape[1]]
    if classes is None:
        classes = torch.full((int(n_private),), -1, dtype=torch.int64)
    if find_public:
        off, var = public_partners(a, t, public, k=k, k_private=k_private)
    else:
        off, var = public_offset(t, public, tuple(a.shape[1:]), k=k, k_private=k_private)
    W = mixing_matrix(members, weights, n_private)
    X, res = reconstruct_signed(a, W, offset=off, noise_var=var, restarts=restarts, iters=iters, seed=seed)
    for _ in range(int(robust) if not oracle else 0):
        # down-weight encodings the fit explains badly (mostly wrong memberships): scaling row t
        # of W, |e| and O by √ω_t keeps the model |W X + O| = |e| and weights its misfit by ω_t
        fit = ((W @ X.flatten(1) + off.flatten(1)).abs() - a.flatten(1)).pow(2).mean(1)
        om = (fit.median() / fit.clamp_min(1e-12)).clamp(max=1.0).sqrt()
        view = (-1, *([1] * (a.dim() - 1)))
        X, res = reconstruct_signed(a * om.view(view), W * om[:, None], offset=off * om.view(view),
                                    noise_var=None if var is None else var * om.view(view) ** 2,
                                    restarts=restarts, iters=iters, seed=seed)
    for _ in range(int(rounds) if oracle is False else 0):  # membership ↔ reconstruction
        members = recode_members(a, t, X, classes, k_private, iters=recode_iters, public=public if cross else None,
                                 k_public=k - k_private if cross else 0)
        weights = weights_from_labels(t, members, classes)
        W = mixing_matrix(members, weights, n_private)
        X, res = reconstruct_signed(a, W, offset=off, noise_var=var, restarts=restarts, iters=iters, seed=seed)
    f = align_pixel_signs(X)
    X = X * f
    s = global_sign(X, public, mix=W, abs_enc=a, offset=off)
    X = X * s
    img = ((X + 1) / 2).clamp(0, 1).float()
    return CarliniResult(img, X.float(), members, weights, torch.as_tensor(classes), (f * s).float(), res.float())


def sign_accuracy(signed: torch.Tensor, private: torch.Tensor) -> float:
    """Share of pixel positions whose recovered sign is right: ``⟨X̂_d, x̃_d⟩ > 0`` over the
    images, ``x̃ = 2x − 1`` the centred originals (``private`` uint8 or [0, 1])."""
    return float(((signed.double() * _centred(private)).sum(0) > 0).double().mean())


def challenge_scores(challenge: Challenge, result: CarliniResult) -> dict:
    """Scores of a reconstruction, per image and the InstaHide Challenge's way.

    - ``per_image_ssim`` ``(N,)``: SSIM of each original with the reconstruction matched to it
      one-to-one (Hungarian, maximal total SSIM: the evaluation, not the attacker, knows the
      originals); ``mean_ssim`` its mean, ``frac_above_0.5``.
    - ``max_ssim`` / ``challenge_mean_ssim``: the Challenge's metrics. Each encoding is
      "decrypted" to the reconstruction of the private image the attack gave the largest
      weight in it; score = max (resp. mean) SSIM of that decryption with the encoding's true
      private images, averaged over the encodings.
    - ``sign_accuracy`` (with the matching), ``floor``: SSIM of each original with the mean
      public image (what an attacker gets without the encodings).
    """
    from scipy.optimize import linear_sum_assignment

    from ppml import metrics

    x = challenge.private
    n = len(x)
    rec = result.images
    # SSIM of every original with every reconstruction: (N, N)
    ii, jj = torch.meshgrid(torch.arange(n), torch.arange(len(rec)), indexing="ij")
    S = metrics.ssim(x[ii.flatten()], rec[jj.flatten()]).double().view(n, len(rec))
    rows, cols = linear_sum_assignment(-S.numpy())
    match = torch.as_tensor(cols)[torch.as_tensor(rows).argsort()]
    per = S[torch.arange(n), match]
    best = result.weights.argmax(1)
    dec = result.members.gather(1, best[:, None]).squeeze(1)  # reconstruction index per encoding
    sc = S.T[dec]  # (M, N): SSIM of each decryption with every original
    true = sc.gather(1, challenge.members)
    pubmean = challenge.public.mean(0, keepdim=True).expand_as(x) if len(challenge.public) else None
    floor = float(metrics.ssim(x, pubmean).mean()) if pubmean is not None else float("nan")
    return {"per_image_ssim": per.float(), "mean_ssim": float(per.mean()), "frac_above_0.5": float((per > 0.5).double().mean()),
            "max_ssim": float(true.max(1).values.mean()), "challenge_mean_ssim": float(true.mean(1).mean()),
            "sign_accuracy": sign_accuracy(result.signed[match], x), "floor": floor, "match": match}
