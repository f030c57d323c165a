"""Training losses shared by the notebooks: the self-teaching (KL-to-mean) loss of
ScrambleMix and the feature-reconstruction loss of the transformation network."""

from __future__ import annotations

import torch
import torch.nn as nn


# --------------------------------------------------------------------------- feature reconstruction
# (transformation network of Ito, Kinoshita & Kiya; notebook 04)


def feature_reconstruction_loss(features: nn.Module, x: torch.Tensor, x_hat: torch.Tensor, *,
                                reduction: str = "mean") -> torch.Tensor:
    """Eq. (6) of Ito, Kinoshita & Kiya (after Johnson, Alahi & Fei-Fei 2016):
    ``L_feat(x, x̂) = ||φ_k(x̂) − φ_k(x)||²₂ / (C_k·H_k·W_k)`` per image, the mean squared
    difference of the feature maps of layer k (e.g. ``ppml.metrics.VGG16Features("relu2_2")``).

    ``x`` is the target (plain image): its features are computed without a gradient; the
    gradient flows into ``x_hat`` only. ``reduction``: ``"mean"`` over the batch (what a loss
    needs; equals ``F.mse_loss`` of the feature maps), ``"sum"`` or ``"none"`` (shape (N,)).
    The paper does not clip or bound L_feat; it is bounded in practice because x̂ is a
    sigmoid output in [0, 1].

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
    with torch.no_grad():
        target = features(x)
    diff = (features(x_hat) - target).float()
    per_image = diff.pow(2).flatten(1).mean(1)  # 1/(C_k H_k W_k) · ||·||²₂
    if reduction == "none":
        return per_image
    return per_image.mean() if reduction == "mean" else per_image.sum()
