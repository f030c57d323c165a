"""Training losses shared by the notebooks: the self-teaching (KL-to-mean) loss of
ScrambleMix, the feature-reconstruction loss of the transformation network and the
image-to-image MSE that trains the ITN-Attack's inverse network and the transformation
network's identity initialisation."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


# --------------------------------------------------------------------------- image reconstruction


def image_mse_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MSE between ``model(x)`` and the target image ``y`` (uint8, divided by 255, or float in
    [0, 1]): a :func:`ppml.train.fit` loss hook for image-to-image networks (the ITN-Attack's
    inverse network, an identity-initialised U-Net).

    >>> image_mse_loss(nn.Identity(), torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))
    tensor(1.)
    """
    out = model(x)
    target = y.float() / 255 if y.dtype == torch.uint8 else y.float()
    return torch.nn.functional.mse_loss(out.float(), target)


# --------------------------------------------------------------------------- feature reconstruction
# (transformation network of Ito, Kinoshita & Kiya; notebook 04)


def feature_reconstruction_loss(features: nn.Module, x: torch.Tensor, x_hat: torch.Tensor, *,
                                reduction: str = "mean", target: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (6) of Ito, Kinoshita & Kiya (after Johnson, Alahi & Fei-Fei 2016):
    ``L_feat(x, x̂) = ||φ_k(x̂) − φ_k(x)||²₂ / (C_k·H_k·W_k)`` per image, the mean squared
    difference of the feature maps of layer k (e.g. ``ppml.metrics.VGG16Features("relu2_2")``).

    ``x`` is the target (plain image): its features are computed without a gradient; the
    gradient flows into ``x_hat`` only. ``reduction``: ``"mean"`` over the batch (what a loss
    needs; equals ``F.mse_loss`` of the feature maps), ``"sum"`` or ``"none"`` (shape (N,)).
    The paper does not clip or bound L_feat; it is bounded in practice because x̂ is a
    sigmoid output in [0, 1]. ``target``: ``features(x)`` already computed (e.g. once for
    several x̂ of the same x), used instead of computing it again.

    >>> import torch.nn as nn
    >>> phi = nn.Identity()
    >>> x, xh = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    >>> feature_reconstruction_loss(phi, x, xh, reduction="none").tolist()
    [1.0, 1.0]
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not (isinstance(x, torch.Tensor) and isinstance(x_hat, torch.Tensor)):
        raise TypeError("x and x_hat must be tensors (N, C, H, W)")
    if x.shape != x_hat.shape or x.ndim != 4:
        raise ValueError(f"x and x_hat must be batches (N, C, H, W) of the same shape, got "
                         f"{tuple(x.shape)} and {tuple(x_hat.shape)}")
    if not (x.is_floating_point() and x_hat.is_floating_point()):
        raise ValueError(f"x and x_hat must be float images in [0, 1], got {x.dtype} and {x_hat.dtype}; "
                         "convert uint8 with x.float() / 255")
    if target is None:
        with torch.no_grad():
            target = features(x)
    diff = (features(x_hat) - target).float()
    per_image = diff.pow(2).flatten(1).mean(1)  # 1/(C_k H_k W_k) · ||·||²₂
    if reduction == "none":
        return per_image
    return per_image.mean() if reduction == "mean" else per_image.sum()


# --------------------------------------------------------------------------- self-teaching loss
# (ScrambleMix of Madono, Tanaka & Onishi; notebook 01)


def self_teaching_loss(logits: torch.Tensor, *, stop_grad: bool = True) -> torch.Tensor:
    """ScrambleMix's self-teaching loss ``L_ST = 1/(BD) Σ_i Σ_d KL(ŷ_{i,d} ‖ ȳ_i)`` (slides
    "Self-Teaching Loss"), with ``ȳ_i = StopGrad[1/D Σ_d ŷ_{i,d}]`` the mean posterior of the
    ``D`` views of image ``i``.

    ``logits``: ``(B, D, K)``. ``stop_grad=False`` keeps the gradient through ``ȳ`` as the
    authors' code did (their generalised Jensen–Shannon term). Both give the same value and
    the same gradient with respect to the logits: ∂L/∂ȳ_k = −1 for every class k, and the
    columns of a softmax Jacobian sum to zero — the option changes only the autograd graph.
    Computed in log space (log ȳ by logsumexp), so it is finite for saturated posteriors.

    >>> z = torch.tensor([[[2.0, 0.0], [2.0, 0.0]]])           # two identical views
    >>> abs(float(self_teaching_loss(z))) < 1e-6
    True
    >>> z = torch.log(torch.tensor([[[0.9, 0.1], [0.1, 0.9]]]))  # ȳ = (0.5, 0.5)
    >>> round(float(self_teaching_loss(z)), 4)                   # = 0.9 ln 1.8 + 0.1 ln 0.2
    0.3681
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3:
        raise ValueError(f"self_teaching_loss: expected logits of shape (B, D, K), got "
                         f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
    logp = torch.log_softmax(logits.float(), dim=-1)
    log_mean = torch.logsumexp(logp, dim=1, keepdim=True) - math.log(logits.shape[1])
    if stop_grad:
        log_mean = log_mean.detach()
    return (logp.exp() * (logp - log_mean)).sum(-1).mean()


def scramblemix_loss(logits: torch.Tensor, target: torch.Tensor, *, lam: float = 1.0,
                     stop_grad: bool = True) -> torch.Tensor:
    """``L = L_CE + λ·L_ST`` with ``L_CE = 1/(BD) Σ_i Σ_d CE(ŷ_{i,d}, y_i)`` for logits
    ``(B, D, K)`` and labels ``(B,)`` (class indices) or ``(B, K)`` (soft). λ = 1 in the
    authors' code; λ = 0 is cross-entropy over the views only.

    >>> z = torch.zeros(2, 3, 4); y = torch.tensor([0, 1])
    >>> round(float(scramblemix_loss(z, y)), 4)  # ln 4, the views agree so L_ST = 0
    1.3863
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3:
        raise ValueError("scramblemix_loss: expected logits of shape (B, D, K)")
    b, d, k = logits.shape
    if target.shape[0] != b:
        raise ValueError(f"scramblemix_loss: {b} images of logits but {target.shape[0]} labels")
    t = target.repeat_interleave(d, 0)
    ce = nn.functional.cross_entropy(logits.reshape(b * d, k).float(), t.float() if t.ndim == 2 else t)
    return ce + lam * self_teaching_loss(logits, stop_grad=stop_grad) if lam else ce


def scramblemix_loss_hook(lam: float = 1.0, *, stop_grad: bool = True):
    """A loss hook ``loss(model, x, y)`` for :func:`ppml.train.fit` on ScrambleMix views.

    ``x`` is ``(B, D, C, H, W)`` (e.g. :class:`ppml.encoders.ScrambleMix` as the loader's last
    transform); the ``B·D`` views go through the model as **one** batch, and the hook returns
    ``(L_CE + λ·L_ST, logits of the first view)`` — accuracy is counted once per image.

    >>> m = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> loss, logits = scramblemix_loss_hook(1.0)(m, torch.rand(4, 2, 3, 2, 2), torch.tensor([0, 1, 2, 0]))
    >>> loss.ndim, logits.shape
    (0, torch.Size([4, 3]))
    """

    def scramblemix_hook(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        if x.ndim != 5:
            raise ValueError(f"the ScrambleMix loss hook needs views (B, D, C, H, W), got shape {tuple(x.shape)}; "
                             "put a ScrambleMix transform last in the loader's transforms")
        b, d = x.shape[:2]
        logits = model(x.reshape(b * d, *x.shape[2:])).view(b, d, -1)
        return scramblemix_loss(logits, y, lam=lam, stop_grad=stop_grad), logits[:, 0]

    scramblemix_hook.__qualname__ = f"scramblemix_hook(lam={lam}, stop_grad={stop_grad})"
    return scramblemix_hook
