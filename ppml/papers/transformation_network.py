"""The image transformation network of Ito, Kinoshita & Kiya ("Image Transformation Network
for Privacy-Preserving Deep Neural Networks and Its Security Evaluation", paper 04): the
code only this paper uses, and the numbers it prints (end of the module).

A public U-Net h_θ turns a plain image x into a visually protected image x̂ = h_θ(x) that a
classifier ψ on the cloud still classifies. h_θ is trained with Eq. (3)–(4):

    L_trans(x, x̂, y) = L_class(x̂, y) − α · L_feat(x, x̂),

L_class the cross-entropy of ψ(x̂) (Eq. 5) and L_feat the squared feature distance of Eq. (6)
at layer k of a fixed network (VGG16 relu2_2, ImageNet weights and normalisation, as the
authors' code and Johnson et al. 2016). The minus sign is the point: minimising L_trans
*maximises* the feature distance, so x̂ stops looking like x, while the cross-entropy keeps
it classifiable. L_feat is not clipped in the paper; it is bounded because x̂ is a sigmoid
output in [0, 1], so a large α (0.1 in Table I) lets the feature term win and accuracy collapses.

Two training regimes (``regime=``):

* ``"joint"`` — the paper's text (§II-B, Fig. 2, §III-A: "we utilized 45,000 images ... to
  train both ψ and h_θ"): ψ and h_θ are trained together from scratch on L_trans.
* ``"frozen"`` — the authors' later code (journal follow-up): ψ is a ResNet-20 first trained
  on plain images, then frozen (weights *and* BatchNorm statistics), and only h_θ is trained
  on L_trans. h_θ must then produce images that the plain-trained ψ still recognises, which
  is a stronger constraint on x̂ than the joint regime (where ψ adapts to whatever h_θ emits)
  and needs no classifier re-training per α. (Per step it costs about as much as the joint
  regime: the gradient still flows back through ψ to h_θ.)

>>> import torch
>>> from ppml.models import create_model
>>> net = TransformNet(create_model("transformation_network", width=4, depth=1),
...                    create_model("resnet20", num_classes=3), freeze_psi=True)
>>> net.train().psi.training, net(torch.rand(2, 3, 8, 8)).shape
(False, torch.Size([2, 3]))

Reported numbers — Table I (§III-A, p. 3): test accuracy (%) of ResNet-20 ψ on images from
h_θ trained with weight α, on plain images, and on the two perceptual-encryption baselines.
Figs. 3–5 are images and a box plot (PSNR of ITN-Attack estimates on the 10,000 CIFAR-100
test images, α = 0.005) without printed numbers, so they have no entries here.

>>> TABLE1[0.005]
{'cifar10': 91.72, 'cifar100': 70.78}
>>> table1_rows()[4]
{'method': 'Plain image', 'alpha': None, 'cifar10': 91.23, 'cifar100': 67.9}
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ppml._checks import ShapeError, check_images
from ppml.losses import feature_reconstruction_loss, image_mse_loss
from ppml.metrics.pixel import psnr as _psnr
from ppml.metrics.pixel import ssim as _ssim
from ppml.models import create_model
from ppml.train import FitResult, fit

__all__ = ["REGIMES", "TransformNet", "TransformationLoss", "build_transformnet", "protect",
           "feature_distances", "protection_metrics", "train_transformnet", "identity_init", "TrainingTrace",
           "trend_figure", "protection_verdict", "UNRECOGNISABLE_SSIM",
           "PAPER", "TABLE1", "TABLE1_PLAIN", "TABLE1_BASELINES", "SETTINGS", "table1_rows"]

#: Training regimes of h_θ (see the module docstring).
REGIMES = ("joint", "frozen")


def _check_images(x: Any, name: str) -> torch.Tensor:
    check_images(x, name, "transformation_network", allow_empty=True, value_range=None)
    if x.shape[1] != 3:
        raise ShapeError(f"transformation_network: {name} must be a batch of RGB images (N, 3, H, W), got shape "
                         f"{tuple(x.shape)}; replicate grey images to 3 channels")
    return x


class TransformNet(nn.Module):
    """ψ(h_θ(x)): the public transformation network ``h`` followed by the classifier ``psi``.

    ``forward(x)`` returns ψ's logits (so :func:`ppml.train.evaluate` scores plain test images
    end to end); ``forward(x, return_images=True)`` returns ``(logits, h(x))`` so a loss hook
    calls the (possibly DDP-wrapped) model once per step. With ``freeze_psi=True`` ψ's
    parameters get ``requires_grad=False`` and ψ stays in eval mode (BatchNorm statistics fixed)
    even while the whole module is in training mode.
    """

    def __init__(self, h: nn.Module, psi: nn.Module, *, freeze_psi: bool = False) -> None:
        super().__init__()
        self.h = h
        self.psi = psi
        self.freeze_psi = bool(freeze_psi)
        if self.freeze_psi:
            psi.requires_grad_(False)
            psi.eval()

    def train(self, mode: bool = True) -> "TransformNet":
        super().train(mode)
        if self.freeze_psi:
            self.psi.eval()
        return self

    def forward(self, x: torch.Tensor, return_images: bool = False) -> Any:
        xh = self.h(x)
        logits = self.psi(xh)
        return (logits, xh) if return_images else logits


def build_transformnet(num_classes: int = 10, *, width: int = 64, depth: int = 4, classifier: str = "resnet20",
                       psi: nn.Module | None = None, regime: str = "joint",
                       h_init: nn.Module | None = None) -> TransformNet:
    """A fresh h_θ (``transformation_network`` U-Net of ``width``/``depth``; or a deep copy of
    ``h_init``, to fine-tune an already trained h_θ, e.g. warm-start α > 0 from α = 0) and ψ: a fresh
    ``classifier`` from the model registry for ``regime="joint"``, or the given pre-trained
    ``psi`` (required, then frozen) for ``regime="frozen"``.

    >>> build_transformnet(3, width=4, depth=1).psi.fc.out_features
    3
    """
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {', '.join(REGIMES)}, got {regime!r}")
    if regime == "frozen" and psi is None:
        raise ValueError("regime='frozen' needs psi=, a classifier already trained on plain images "
                         "(train one with ppml.train.fit first), or use regime='joint'")
    if h_init is not None:
        h = copy.deepcopy(h_init.h if isinstance(h_init, TransformNet) else h_init)
    else:
        h = create_model("transformation_network", width=width, depth=depth)
    if psi is None:
        psi = create_model(classifier, num_classes=num_classes)
    return TransformNet(h, psi, freeze_psi=regime == "frozen")


class TransformationLoss:
    """The loss hook of Eq. (4) for :func:`ppml.train.fit` / :func:`ppml.train.evaluate`:
    ``loss(model, x, y) -> (L_trans, logits)`` with
    ``L_trans = CE(ψ(h(x)), y) − alpha · L_feat(x, h(x))`` averaged over the batch.

    ``model`` is a :class:`TransformNet` (or its DDP wrapper); ``x`` float images in [0, 1].
    ``features`` is the layer-k network φ_k of Eq. (6); by default
    ``ppml.metrics.VGG16Features(layer)`` (real ImageNet VGG16, ImageNet normalisation inside),
    built on first use and moved to the batch's device. The batch means of the two terms of the
    last call are kept in ``last`` (``{"ce": ..., "feat": ...}``) for logging. The instance's
    ``__qualname__`` names α and the layer, so :func:`fit`'s checkpoint fingerprint tells runs
    with different α apart.

    >>> import torch.nn as nn
    >>> from ppml.models import create_model
    >>> net = build_transformnet(2, width=4, depth=1)
    >>> hook = TransformationLoss(0.5, features=nn.Identity())
    >>> loss, logits = hook(net, torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]))
    >>> bool(torch.isclose(loss, torch.tensor(hook.last["ce"] - 0.5 * hook.last["feat"])))
    True
    """

    def __init__(self, alpha: float, *, layer: str = "relu2_2", features: nn.Module | None = None) -> None:
        alpha = float(alpha)
        if not alpha >= 0.0 or alpha != alpha or alpha == float("inf"):
            raise ValueError(f"alpha must be a finite number >= 0 (the weight of -L_feat in Eq. 4), got {alpha!r}")
        self.alpha = alpha
        self.layer = layer
        self.features = features
        self.last: dict[str, float] = {}
        self.__qualname__ = f"TransformationLoss(alpha={alpha:g}, layer={layer})"

    def _phi(self, device: torch.device) -> nn.Module:
        if self.features is None:
            from ppml.metrics import VGG16Features  # heavy: built on first use only

            self.features = VGG16Features(layer=self.layer)
        self.features.requires_grad_(False).eval()
        p = next(iter(self.features.parameters()), None)
        if p is not None and p.device != device:
            self.features.to(device)
        return self.features

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, xh = model(x, return_images=True)
        ce = F.cross_entropy(logits, y)
        if self.alpha == 0.0:
            feat = ce.new_zeros(())
        else:
            feat = feature_reconstruction_loss(self._phi(x.device), x, xh)
        self.last = {"ce": float(ce.detach()), "feat": float(feat.detach())}
        return ce - self.alpha * feat, logits

    def __repr__(self) -> str:
        return self.__qualname__


@torch.no_grad()
def protect(h: nn.Module, images: torch.Tensor, *, batch_size: int = 256,
            device: torch.device | str | None = None) -> torch.Tensor:
    """Protected images ``h(x)`` of a whole set, in batches, in eval mode, on the CPU;
    uint8 in → uint8 out (rounded), float in [0, 1] → float. ``h`` may be a
    :class:`TransformNet` (its ``h`` is used) or the bare transformation network.

    >>> from ppml.models import create_model
    >>> h = create_model("transformation_network", width=4, depth=1)
    >>> y = protect(h, torch.zeros(3, 3, 8, 8, dtype=torch.uint8)); y.shape, y.dtype
    (torch.Size([3, 3, 8, 8]), torch.uint8)
    """
    _check_images(images, "images")
    net = h.h if isinstance(h, TransformNet) else h
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    was = net.training
    net.eval()
    out = []
    try:
        for i in range(0, len(images), batch_size):
            xb = images[i:i + batch_size].to(dev)
            xb = xb.float() / 255 if xb.dtype == torch.uint8 else xb.float()
            out.append(net(xb).float().clamp(0, 1).cpu())
    finally:
        net.train(was)
    res = torch.cat(out) if out else torch.zeros(0, *images.shape[1:])
    return (res * 255).round().to(torch.uint8) if images.dtype == torch.uint8 else res.to(images.dtype)


@torch.no_grad()
def feature_distances(features: nn.Module, x: torch.Tensor, x_hat: torch.Tensor, *,
                      batch_size: int = 256) -> torch.Tensor:
    """Per-image L_feat of Eq. (6) between plain ``x`` and protected ``x_hat`` (uint8 or
    float, same shape), computed in batches on ``features``' device; returns (N,) on the CPU.

    >>> feature_distances(nn.Identity(), torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)).tolist()
    [1.0, 1.0]
    """
    _check_images(x, "x")
    _check_images(x_hat, "x_hat")
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat differ in shape: {tuple(x.shape)} vs {tuple(x_hat.shape)}")
    p = next(iter(features.parameters()), None)
    dev = p.device if p is not None else torch.device("cpu")
    out = []
    for i in range(0, len(x), batch_size):
        a, b = (t[i:i + batch_size].to(dev) for t in (x, x_hat))
        a, b = (t.float() / 255 if t.dtype == torch.uint8 else t.float() for t in (a, b))
        out.append(feature_reconstruction_loss(features, a, b, reduction="none").cpu())
    return torch.cat(out)


@torch.no_grad()
def protection_metrics(nets: dict[Any, nn.Module], images: torch.Tensor, features: nn.Module, *,
                       batch_size: int = 256) -> dict[Any, dict[str, float]]:
    """Mean PSNR, SSIM and L_feat between ``images`` (uint8) and their protected versions
    ``protect(net, images)``, for every network of ``nets`` (e.g. α → trained h_θ):
    ``{key: {"psnr", "ssim", "feat"}}``. The same numbers as :func:`protect` +
    :func:`~ppml.metrics.psnr` / :func:`~ppml.metrics.ssim` / :func:`feature_distances` per
    network, but the plain images' features φ(x) are computed once per batch for all networks
    (six VGG16 passes over the images instead of ten for five networks).

    >>> from ppml.models import create_model
    >>> h = create_model("transformation_network", width=4, depth=1)
    >>> m = protection_metrics({0.0: h}, torch.zeros(3, 3, 8, 8, dtype=torch.uint8), nn.Identity())
    >>> sorted(m[0.0])
    ['feat', 'psnr', 'ssim']
    """
    _check_images(images, "images")
    if images.dtype != torch.uint8:
        raise ValueError(f"protection_metrics: images must be uint8 (the data sets' format), got {images.dtype}")
    if not nets:
        raise ValueError("protection_metrics: nets is empty; pass {key: trained h_theta}")
    p = next(iter(features.parameters()), None)
    dev = p.device if p is not None else torch.device("cpu")
    per: dict[Any, dict[str, list]] = {k: {"psnr": [], "ssim": [], "feat": []} for k in nets}
    for i in range(0, len(images), batch_size):
        xb = images[i:i + batch_size]
        xf = xb.to(dev).float() / 255
        target = features(xf)
        for k, net in nets.items():
            pb = protect(net, xb, batch_size=batch_size)
            per[k]["psnr"].append(_psnr(pb, xb))
            per[k]["ssim"].append(_ssim(pb, xb))
            per[k]["feat"].append(feature_reconstruction_loss(features, xf, pb.to(dev).float() / 255,
                                                              reduction="none", target=target).cpu())
    return {k: {m: float(torch.cat(v).mean()) for m, v in d.items()} for k, d in per.items()}


def train_transformnet(train_data: Any, *, alpha: float, regime: str = "joint", psi: nn.Module | None = None,
                       num_classes: int | None = None, width: int = 64, depth: int = 4,
                       classifier: str = "resnet20", layer: str = "relu2_2", features: nn.Module | None = None,
                       h_init: nn.Module | None = None, val_data: Any = None, epochs: int = 200,
                       optimizer: str = "sgd", lr: float = 0.1,
                       momentum: float = 0.9, weight_decay: float = 5e-4, schedule: str = "multistep",
                       milestones: Sequence[int] | None = (60, 120, 160), gamma: float = 0.2,
                       batch_size: int = 128, transforms: Any = None, select_best: str | None = "auto",
                       seed: int = 0, trace: "TrainingTrace | None" = None,
                       **fit_kwargs: Any) -> tuple[TransformNet, FitResult]:
    """Train h_θ (and ψ, for ``regime="joint"``) on Eq. (4) and return ``(model, history)``.

    Defaults are the paper's (§III-A): 200 epochs, SGD momentum 0.9, weight decay 5e-4, lr 0.1
    × 0.2 at epochs 60/120/160, batch 128; ``select_best="auto"`` keeps the epoch with the
    lowest validation L_trans when ``val_data`` is given ("we selected the network that
    provided the lowest loss value under the use of the validation set"). ``train_data`` and
    ``val_data`` are anything :func:`ppml.train.fit` takes (e.g. :class:`ppml.datasets.ImageData`);
    ``transforms`` are the training augmentations (the paper: random crop and flip).
    ``regime="frozen"`` needs ``psi`` (trained on plain images); only h_θ is trained then.
    ``num_classes`` defaults to ``train_data.num_classes``. ``h_init`` starts h_θ from a copy
    of a trained network instead of a fresh U-Net (not in the paper, which trains every α from
    scratch; the CPU smoke run uses it to afford five values of α). Other keyword arguments go to
    :func:`ppml.train.fit` (``device``, ``checkpoint_dir``, ``progress``, ...). For the
    milestones to scale with a shorter run, pass ``milestones=None`` (50 %/75 %) or your own.
    ``trace`` (a :class:`TrainingTrace`) records SSIM(h(x), x) and ψ's accuracy on its probe
    images during training and once more on the returned model.
    """
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {', '.join(REGIMES)}, got {regime!r}")
    if num_classes is None:
        num_classes = getattr(train_data, "num_classes", None)
        if num_classes is None and psi is None:
            raise ValueError("num_classes is needed when train_data has no .num_classes")
    model = build_transformnet(num_classes or 10, width=width, depth=depth, classifier=classifier, psi=psi,
                               regime=regime, h_init=h_init)
    hook = TransformationLoss(alpha, layer=layer, features=features)
    if select_best == "auto":
        select_best = "val_loss" if val_data is not None else None
    res = fit(model, train_data, epochs=epochs, val_data=val_data, batch_size=batch_size, transforms=transforms,
              optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay, schedule=schedule,
              milestones=milestones, gamma=gamma, loss=hook if trace is None else trace.wrap(hook),
              select_best=select_best, seed=seed, **fit_kwargs)
    if trace is not None:
        trace.measure(model, step=trace.step_count, final=True)
    return model, res


def identity_init(images: torch.Tensor, *, width: int = 64, depth: int = 4, epochs: int = 2, batch_size: int = 128,
                  lr: float = 1e-3, seed: int = 0, **fit_kwargs: Any) -> nn.Module:
    """A ``transformation_network`` U-Net trained with MSE to reproduce its input (h(x) ≈ x) on
    ``images`` (uint8 or float in [0, 1]), with AdamW and a cosine schedule.

    Not part of the paper (h_θ starts from a random initialisation there). It is a cheap
    starting point for CPU smoke runs: from it, α = 0 keeps images that look like the plain
    ones (as the paper's Fig. 3 shows for α = 0), so SSIM(h(x), x) means something (a random
    h_θ already scores ≈ 0 at α = 0 while the garments' outlines stay visible), and training
    with α > 0 shows how the feature term drives the images away from the plain ones. Note
    that L_feat is a squared distance: its gradient is zero at h(x) = x, so the push away from
    the identity starts slowly; in the joint regime it takes under an epoch of the smoke run,
    in the frozen regime (ψ fixed) much longer.

    >>> h = identity_init(torch.rand(8, 3, 8, 8), width=4, depth=1, epochs=1, batch_size=4, progress=False)
    >>> h(torch.rand(2, 3, 8, 8)).shape
    torch.Size([2, 3, 8, 8])
    """
    _check_images(images, "images")
    torch.manual_seed(seed)
    h = create_model("transformation_network", width=width, depth=depth)
    fit(h, (images, images), epochs=epochs, batch_size=batch_size, optimizer="adamw", lr=lr, weight_decay=0.0,
        schedule="cosine", loss=image_mse_loss, seed=seed, **fit_kwargs)
    return h.eval()


# --------------------------------------------------------------------------------------------
# The trend during training (how fast h_θ(x) leaves x, and what ψ(h_θ(x)) keeps)
# --------------------------------------------------------------------------------------------

#: Mean SSIM(h(x), x) at or below which the protected images count as unrecognisable. Calibrated
#: by eye on Fashion-MNIST smoke runs (32×32): SSIM 0.12 was stripes over plainly visible garments,
#: 0.03 faint silhouettes in a few images, 0.007 a uniform stripe pattern with no object left; a
#: blurred or edge-only copy of the garment can score 0.1–0.2 or even below 0 (see
#: :func:`protection_verdict` for that blind spot).
UNRECOGNISABLE_SSIM = 0.05


class TrainingTrace:
    """SSIM(h(x), x) and the accuracy of ψ(h(x)) on fixed probe images, measured during the
    training of h_θ: before every ``every``-th optimisation step (step 0 is the starting h_θ)
    and, through :func:`train_transformnet` (``trace=``), once more on the returned model.

    ``images`` uint8 or float in [0, 1] (N, 3, H, W), ``labels`` (N,). Measured in eval mode
    (BatchNorm running statistics), without gradients and without autocast, on the model's
    device; the model's training mode is restored. Lists ``steps``, ``ssim`` and ``acc`` (and
    ``as_dict()`` for ``results.json``). Wrapping a loss hook (:meth:`wrap`) changes nothing in
    the optimisation; under DDP every rank measures its own copy (identical weights). A run
    resumed from a checkpoint traces only the steps it trains.

    >>> net = build_transformnet(2, width=4, depth=1)
    >>> tr = TrainingTrace(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]), every=2)
    >>> hook = tr.wrap(TransformationLoss(0.0))
    >>> for _ in range(3):
    ...     _ = hook(net.train(), torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]))
    >>> tr.steps, len(tr.ssim), net.training
    ([0, 2], 2, True)
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, every: int = 10, batch_size: int = 256) -> None:
        _check_images(images, "images")
        labels = torch.as_tensor(labels)
        if labels.shape != (len(images),):
            raise ShapeError(f"TrainingTrace: labels must have shape ({len(images)},), got {tuple(labels.shape)}")
        if len(images) == 0:
            raise ValueError("TrainingTrace: no probe images")
        if int(every) < 1:
            raise ValueError(f"TrainingTrace: every must be >= 1, got {every!r}")
        self.images, self.labels = images, labels
        self.every, self.batch_size = int(every), int(batch_size)
        self.step_count = 0
        self.steps: list[int] = []
        self.ssim: list[float] = []
        self.acc: list[float] = []

    @torch.no_grad()
    def measure(self, model: nn.Module, *, step: int | None = None, final: bool = False) -> tuple[float, float]:
        """Measure now (at ``step``, default the current step count) and append; returns
        ``(ssim, acc)``. ``final=True`` replaces a point already recorded at the same step."""
        net = getattr(model, "module", model)  # DDP
        if not isinstance(net, TransformNet):
            raise TypeError(f"TrainingTrace measures a TransformNet, got {type(net).__name__}")
        step = self.step_count if step is None else int(step)
        dev = next(net.parameters()).device
        was = net.training
        net.eval()
        s_sum, correct = 0.0, 0
        try:
            with torch.autocast(device_type=dev.type, enabled=False):
                for i in range(0, len(self.images), self.batch_size):
                    xb = self.images[i:i + self.batch_size]
                    xb = xb.float() / 255 if xb.dtype == torch.uint8 else xb.float()
                    logits, xh = net(xb.to(dev), return_images=True)
                    correct += int((logits.argmax(1).cpu() == self.labels[i:i + self.batch_size]).sum())
                    s_sum += float(_ssim(xh.float().clamp(0, 1).cpu(), xb).sum())
        finally:
            net.train(was)
        s, a = s_sum / len(self.images), correct / len(self.images)
        if final and self.steps and self.steps[-1] == step:
            self.ssim[-1], self.acc[-1] = s, a
        else:
            self.steps.append(step)
            self.ssim.append(s)
            self.acc.append(a)
        return s, a

    def wrap(self, hook: Any) -> "_TracedLoss":
        """``hook`` (a loss hook ``(model, x, y) -> (loss, logits)``) measuring this trace
        before every ``every``-th training step (calls in eval mode, i.e. validation, are not
        counted)."""
        return _TracedLoss(hook, self)

    def first_step_at_or_below(self, ssim: float = UNRECOGNISABLE_SSIM) -> int | None:
        """The first traced step whose SSIM(h(x), x) is at most ``ssim`` (None if none is)."""
        return next((s for s, v in zip(self.steps, self.ssim) if v <= ssim), None)

    def as_dict(self) -> dict[str, list]:
        """``{"step": [...], "ssim": [...], "acc": [...]}`` (JSON-serialisable)."""
        return {"step": list(self.steps), "ssim": [round(v, 4) for v in self.ssim],
                "acc": [round(v, 4) for v in self.acc]}


class _TracedLoss:
    """A loss hook that lets a :class:`TrainingTrace` measure before every ``every``-th step."""

    def __init__(self, hook: Any, trace: TrainingTrace) -> None:
        self.hook, self.trace = hook, trace
        self.__qualname__ = f"{getattr(hook, '__qualname__', type(hook).__qualname__)}+trace"

    @property
    def last(self) -> dict[str, float]:
        return getattr(self.hook, "last", {})

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Any:
        if model.training:
            if self.trace.step_count % self.trace.every == 0:
                self.trace.measure(model)
            self.trace.step_count += 1
        return self.hook(model, x, y)

    def __repr__(self) -> str:
        return self.__qualname__


def _trace_dict(t: Any) -> dict[str, list]:
    return t.as_dict() if isinstance(t, TrainingTrace) else {k: list(t[k]) for k in ("step", "ssim", "acc")}


def trend_figure(traces: dict[float, Any], *, plain_acc: float | None = None, steps_per_epoch: int | None = None,
                 ssim_line: float | None = UNRECOGNISABLE_SSIM, title: str | None = None):
    """SSIM(h(x), x) (left) and accuracy of ψ(h(x)) (right) across the training of h_θ, one line
    per α. ``traces``: α → :class:`TrainingTrace` or its ``as_dict()``. ``plain_acc`` draws ψ's
    accuracy on plain images; ``steps_per_epoch`` puts the x axis in epochs; ``ssim_line``
    draws the SSIM level below which the images count as unrecognisable.

    >>> fig = trend_figure({0.0: {"step": [0, 5], "ssim": [0.9, 0.8], "acc": [0.5, 0.6]},
    ...                     0.01: {"step": [0, 5], "ssim": [0.9, 0.2], "acc": [0.5, 0.55]}}, plain_acc=0.6)
    >>> len(fig.axes), len(fig.axes[0].lines)
    (2, 3)
    """
    import matplotlib.pyplot as plt

    if not traces:
        raise ValueError("trend_figure: no traces")
    fig, (ax_s, ax_a) = plt.subplots(1, 2, figsize=(7.2, 2.9))
    div = float(steps_per_epoch) if steps_per_epoch else 1.0
    for i, a in enumerate(sorted(traces)):
        d = _trace_dict(traces[a])
        x = [s / div for s in d["step"]]
        kw = {"color": f"C{i}", "marker": ".", "label": f"α = {a:g}"}
        ax_s.plot(x, d["ssim"], **kw)
        ax_a.plot(x, [100 * v for v in d["acc"]], **kw)
    if ssim_line is not None:
        ax_s.axhline(ssim_line, color="0.4", ls=":", lw=1, label=f"SSIM {ssim_line:g}")
    if plain_acc is not None:
        ax_a.axhline(100 * plain_acc, color="k", ls="--", lw=1, label="ψ on plain x")
    xl = "epoch of h_θ" if steps_per_epoch else "optimisation step of h_θ"
    ax_s.set(xlabel=xl, ylabel="SSIM(h(x), x)", title="similarity to the plain image")
    ax_a.set(xlabel=xl, ylabel="accuracy of ψ(h(x)) (%)", title="classification accuracy")
    ax_a.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def protection_verdict(ssim: dict[float, float], acc: dict[Any, float], *, alphas: Sequence[float] = (0.005, 0.01),
                       max_ssim: float = UNRECOGNISABLE_SSIM, max_drop: float = 0.05,
                       min_reference_ssim: float | None = 0.5) -> tuple[bool, str]:
    """Does the run show the paper's claim "h_θ(x) is unrecognisable while ψ keeps its
    accuracy" at ``alphas``? ``ssim``: α → mean SSIM(h(x), x); ``acc``: α → accuracy of
    ψ(h(x)) and ``"plain"`` → ψ on plain images. Holds when, at every α of ``alphas``,
    SSIM ≤ ``max_ssim`` and the accuracy is at most ``max_drop`` below plain, and — so that a
    low SSIM means something — the α = 0 network (no feature loss; recognisable images in the
    paper's Fig. 3) keeps SSIM ≥ ``min_reference_ssim`` (skipped when α = 0 was not run or
    ``min_reference_ssim`` is None): SSIM is blind to images that keep the object's outline in
    other colours, which an h_θ from a random start produces at α = 0 too. Returns
    ``(holds, why)``; ``why`` names every failed condition ("" when it holds).

    >>> protection_verdict({0.0: 0.85, 0.005: 0.01, 0.01: 0.02}, {"plain": 0.7, 0.005: 0.69, 0.01: 0.68})
    (True, '')
    >>> protection_verdict({0.0: 0.85, 0.005: 0.7, 0.01: 0.55}, {"plain": 0.7, 0.005: 0.7, 0.01: 0.7})[0]
    False
    """
    missing = [a for a in alphas if a not in ssim or a not in acc]
    if missing or "plain" not in acc:
        raise KeyError(f"protection_verdict: need ssim and acc at alphas {list(alphas)} and acc['plain']; "
                       f"missing {missing or ['plain']}")
    why = []
    high = {a: ssim[a] for a in alphas if ssim[a] > max_ssim}
    if high:
        why.append("h(x) stays similar to x: SSIM " + ", ".join(f"{v:.2f} at α = {a:g}" for a, v in high.items())
                   + f" > {max_ssim:g}")
    lost = {a: acc[a] for a in alphas if acc[a] < acc["plain"] - max_drop}
    if lost:
        why.append("accuracy lost: " + ", ".join(f"{100 * v:.1f} % at α = {a:g}" for a, v in lost.items())
                   + f" vs {100 * acc['plain']:.1f} % on plain images (more than {100 * max_drop:g} points)")
    if min_reference_ssim is not None and 0.0 in ssim and ssim[0.0] < min_reference_ssim:
        why.append(f"SSIM does not tell recognisable images here: α = 0 (no feature loss) already has SSIM "
                   f"{ssim[0.0]:.2f} < {min_reference_ssim:g}")
    return not why, "; ".join(why)


# --------------------------------------------------------------------------------------------
# The numbers the paper prints (for the paper-vs-ours tables of notebook 04)
# --------------------------------------------------------------------------------------------

PAPER = ("H. Ito, Y. Kinoshita and H. Kiya, \"Image Transformation Network for Privacy-Preserving Deep "
         "Neural Networks and Its Security Evaluation\"")

#: Table I, "Proposed" rows: α → accuracy (%) on CIFAR-10 and CIFAR-100.
TABLE1: dict[float, dict[str, float]] = {
    0.005: {"cifar10": 91.72, "cifar100": 70.78},
    0.01: {"cifar10": 91.41, "cifar100": 70.08},
    0.05: {"cifar10": 89.63, "cifar100": 42.91},
    0.1: {"cifar10": 39.92, "cifar100": 1.00},
}

#: Table I, "Plain image" row (ψ trained and tested on plain images).
TABLE1_PLAIN: dict[str, float] = {"cifar10": 91.23, "cifar100": 67.9}

#: Table I, conventional methods: Tanaka's learnable encryption [15] and the pixel-based
#: encryption [16], [17].
TABLE1_BASELINES: dict[str, dict[str, float]] = {
    "Tanaka [15]": {"cifar10": 85.18, "cifar100": 60.08},
    "Pixel-based [16], [17]": {"cifar10": 90.99, "cifar100": 60.50},
}

#: §III-A: training settings of every network (h_θ, ψ).
SETTINGS: dict[str, object] = {
    "h": "U-Net [23]", "psi": "ResNet-20 [24]",
    "train_val": {"cifar10": (45_000, 5_000), "cifar100": (47_500, 2_500)},
    "epochs": 200, "optimizer": "SGD", "momentum": 0.9, "weight_decay": 5e-4, "lr": 0.1,
    "milestones": (60, 120, 160), "gamma": 0.2, "batch_size": 128,
    "augmentation": "random crop, horizontal flip", "selection": "lowest validation loss",
    "fig3_alphas": (0.0, 0.005, 0.01), "fig3_dataset": "cifar100",
    "fig4_alpha": 0.005, "fig4_dataset": "cifar100", "fig5_images": 10_000,
}


def table1_rows() -> list[dict[str, object]]:
    """Table I as rows in the paper's order: method, α (None for non-proposed rows), accuracies."""
    rows: list[dict[str, object]] = [{"method": "Proposed", "alpha": a, **v} for a, v in TABLE1.items()]
    rows.append({"method": "Plain image", "alpha": None, **TABLE1_PLAIN})
    rows += [{"method": k, "alpha": None, **v} for k, v in TABLE1_BASELINES.items()]
    return rows
