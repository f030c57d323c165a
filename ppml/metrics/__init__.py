"""Image-quality metrics on batches, in three modules re-exported here (``ppml.metrics.ssim``
etc. work as they are):

* :mod:`ppml.metrics.pixel`: MSE, PSNR, SSIM (= scikit-image's);
* :mod:`ppml.metrics.perceptual`: LPIPS v0.1 (alex/vgg), VGG16 features and their distance,
  FID and the Inception Score — real ImageNet-trained networks only (:mod:`ppml.pretrained`);
* :mod:`ppml.metrics.noref`: the no-reference BRISQUE, NIQE, PIQE.

Every full-reference metric takes two batches ``(N, C, H, W)`` — uint8 (0–255) or float in
[0, 1] — and returns a per-image tensor ``(N,)``; no-reference metrics take one batch. When
the real weights a metric needs cannot be found, :class:`WeightsNotAvailable` says how to
get them; :func:`fid_available` tells notebooks whether FID / IS can run here.

>>> import torch
>>> x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8); y = x.clone(); y[1] = 255
>>> mse(x, y)
tensor([0., 1.])
>>> psnr(x, y)
tensor([inf, 0.])
"""

from __future__ import annotations

from ppml.metrics.noref import NIQE_MIN_SIZE, brisque, niqe, piqe
from ppml.metrics.perceptual import (FID_WEIGHTS_FILE, LPIPS, VGG16_LAYERS, VGG16Features, WeightsNotAvailable,
                                     feature_distance, fid, fid_available, fid_unavailable_reason,
                                     inception_score, lpips, lpips_model, vgg16_features)
from ppml.metrics.pixel import mse, psnr, ssim

__all__ = ["mse", "psnr", "ssim", "LPIPS", "lpips", "lpips_model", "VGG16_LAYERS", "VGG16Features",
           "vgg16_features", "feature_distance", "FID_WEIGHTS_FILE", "fid_available",
           "fid_unavailable_reason", "fid", "inception_score", "brisque", "niqe", "NIQE_MIN_SIZE", "piqe",
           "WeightsNotAvailable"]
