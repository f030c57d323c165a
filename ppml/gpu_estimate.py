"""Time the paper models and estimate the GPU-hours of each notebook at paper scale.

``python -m ppml.gpu_estimate [--steps N] [--device cuda] [--amp bf16|fp16|none]`` times
``N`` optimisation steps (after warm-up) of every paper training configuration of
``notebooks/params/paper.yaml`` — model, input size, batch size — and multiplies by the steps
per epoch, the epochs and the number of such trainings each notebook runs (:data:`TRAININGS`).
Evaluation, test-time augmentation, attacks and metric curves are not counted: the estimate is
a lower bound on the training part, good to a factor of about 1.3. ``scripts/gpu_check.sh``
runs it on a GPU machine.

>>> [t.notebook for t in TRAININGS if t.model == "vit_b16"][:1]
['03_isotropic_etc']
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from typing import Any, Callable

import torch
import torch.nn as nn

__all__ = ["Training", "TRAININGS", "time_step", "estimate", "main"]


@dataclasses.dataclass(frozen=True)
class Training:
    """``count`` trainings of ``model`` for ``epochs`` epochs over ``n`` images of ``size`` px."""

    notebook: str
    what: str
    model: str
    kwargs: dict
    size: int
    batch: int
    n: int
    epochs: float
    count: int
    num_classes: int = 10

    @property
    def steps(self) -> float:
        return math.ceil(self.n / self.batch) * self.epochs * self.count


_WRN = {"depth": 40, "widen_factor": 10}
_SHAKE = {"depth": 110, "alpha": 270}
_C10, _C100, _SVHN, _NETTE = 50_000, 50_000, 73_257, 9_469
#: The trainings of each notebook at paper scale (see notebooks/params/paper.yaml and the notebooks).
TRAININGS: tuple[Training, ...] = (
    # 01: 3 data sets x 2 networks x 6 methods (DataMix, InstaHide, LE, Random PE, ScrambleMix, λ=0), 200 epochs
    *(Training("01_scramblemix", f"{m} {ds} x6 methods", m, kw, 32, 128, n, 200, 6, nc)
      for ds, n, nc in (("cifar10", _C10, 10), ("cifar100", _C100, 100), ("svhn", _SVHN, 10))
      for m, kw in (("wideresnet", _WRN), ("pyramidnet_shakedrop", _SHAKE))),
    # 02: 4 runs of Fig. 3 + 4 more of the N / block sweep + the shared-key run, 250 epochs each
    Training("02_block_scramble_augmentation", "ResNet-18 x9", "resnet18_cifar", {}, 32, 128, _C10, 250, 9),
    # 03: ConvMixer plain/EtC/JPEG85/JPEG80 (300 epochs), ViT-B/16 plain 103 + EtC 205 + 2 JPEG x 205 epochs (CIFAR-10),
    # 541 + 1082 + 2 x 1082 (Imagenette), baselines 300 epochs
    Training("03_isotropic_etc", "ConvMixer-256/8 cifar10 x4", "convmixer",
             {"dim": 256, "depth": 8, "kernel_size": 9, "patch_size": 1}, 32, 64, _C10, 300, 4),
    Training("03_isotropic_etc", "ConvMixer-384/8 imagenette x4", "convmixer",
             {"dim": 384, "depth": 8, "kernel_size": 9, "patch_size": 4}, 224, 64, _NETTE, 300, 4),
    Training("03_isotropic_etc", "ViT-B/16 cifar10 (103+3x205 epochs)", "vit_b16", {}, 224, 512, _C10, 103 + 3 * 205, 1),
    Training("03_isotropic_etc", "ViT-B/16 imagenette (541+3x1082 epochs)", "vit_b16", {}, 224, 512, _NETTE,
             541 + 3 * 1082, 1),
    Training("03_isotropic_etc", "LE/ELE adaptation + ShakeDrop x2", "adapted_classifier",
             {"adaptation": "le", "classifier": "pyramidnet_shakedrop", "classifier_kwargs": _SHAKE}, 32, 64, _C10, 300, 2),
    Training("03_isotropic_etc", "PE ResNet-18", "resnet18_cifar", {}, 32, 64, _C10, 300, 1),
    # 04 per data set (45,000 / 47,500 training images): psi + LE/PE psi baselines, h for 4 alphas (U-Net + ResNet-20
    # + VGG16 to relu2_2 in the loss, timed as U-Net + ResNet-20 x 1.5), the ITN on CIFAR-100
    *(Training("04_transformation_network", f"ResNet-20 psi + LE/PE {ds} x3", "resnet20", {}, 32, 128, n, 200, 3, nc)
      for ds, n, nc in (("cifar10", 45_000, 10), ("cifar100", 47_500, 100))),
    *(Training("04_transformation_network", f"h (U-Net 64/4 + ResNet-20 + VGG) {ds} x4 alphas", "_unet_resnet20",
               {}, 32, 128, n, 200 * 1.5, 4, nc) for ds, n, nc in (("cifar10", 45_000, 10), ("cifar100", 47_500, 100))),
    Training("04_transformation_network", "ITN (U-Net 64/4) cifar100", "unet", {"width": 64, "depth": 4}, 32, 128,
             47_500, 200, 1),
    # 05: 4 schemes x random/selected keys x 3 seeds + plain, adaptation + ShakeDrop, 100 epochs, batch 64
    Training("05_key_generation", "adaptation + ShakeDrop x25", "adapted_classifier",
             {"adaptation": "ele", "classifier": "pyramidnet_shakedrop", "classifier_kwargs": _SHAKE}, 32, 64, _C10, 100, 25),
)


class _UNetResNet(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        from ppml.models import create_model

        self.h = create_model("unet", width=64, depth=4)
        self.psi = create_model("resnet20", num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.psi(self.h(x))


def _build(t: Training) -> nn.Module:
    from ppml.models import create_model

    if t.model == "_unet_resnet20":
        return _UNetResNet(t.num_classes)
    if t.model == "unet":
        return create_model("unet", **t.kwargs)
    return create_model(t.model, num_classes=t.num_classes, **t.kwargs)


def time_step(t: Training, *, device: str, amp: str, steps: int, warmup: int = 2,
              batch: int | None = None) -> float:
    """Seconds per optimisation step of ``t`` (SGD, autocast ``amp``), median of ``steps``."""
    dev = torch.device(device)
    net = _build(t).to(dev).train()
    b = batch or t.batch
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    x = torch.rand(b, 3, t.size, t.size, device=dev)
    y = torch.randint(0, t.num_classes, (b,), device=dev)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    unet_only = t.model == "unet"

    def step() -> None:
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = net(x)
            loss = (out.float() - x).pow(2).mean() if unet_only else nn.functional.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    sync: Callable[[], Any] = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    del net, opt
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return sorted(times)[len(times) // 2]


def estimate(*, device: str, amp: str, steps: int, batch: int | None = None, only: str | None = None,
             log: Callable[[str], None] = print) -> dict[str, float]:
    """Print one line per training configuration and return GPU-hours per notebook."""
    hours: dict[str, float] = {}
    log(f"{'notebook':<32} {'training':<56} {'s/step':>8} {'epoch (s)':>10} {'GPU-h':>8}")
    for t in TRAININGS:
        if only and only not in t.model and only not in t.notebook:
            continue
        try:
            s = time_step(t, device=device, amp=amp, steps=steps, batch=batch)
        except torch.cuda.OutOfMemoryError:
            log(f"{t.notebook:<32} {t.what:<56} out of memory at batch {batch or t.batch}")
            continue
        if batch:  # a capped batch (a CPU try-out): scale the step time linearly
            s *= t.batch / batch
        h = s * t.steps / 3600
        hours[t.notebook] = hours.get(t.notebook, 0.0) + h
        log(f"{t.notebook:<32} {t.what:<56} {s:8.3f} {s * math.ceil(t.n / t.batch):10.1f} {h:8.1f}")
    log("")
    log(f"estimated GPU-hours at paper scale ({torch.cuda.get_device_name() if device.startswith('cuda') else device}, "
        f"{amp} autocast; training only, lower bound):")
    for nb, h in hours.items():
        log(f"  {nb:<32} {h:8.1f} h  ({h / 24:.1f} GPU-days)")
    log(f"  {'total':<32} {sum(hours.values()):8.1f} h")
    return hours


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ppml.gpu_estimate", description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", choices=["bf16", "fp16", "none"], default="bf16")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per configuration (after 2 warm-up steps)")
    ap.add_argument("--batch", type=int, default=None, help="cap the batch (CPU try-out; times scaled linearly)")
    ap.add_argument("--only", default=None, help="only models or notebooks whose name contains this")
    a = ap.parse_args(argv)
    if a.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    estimate(device=a.device, amp=a.amp, steps=a.steps, batch=a.batch, only=a.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
