"""Training throughput of the notebooks' models: float32 vs bf16 autocast, channels_last or not.

    python benchmarks/train.py [--scale smoke|paper|all] [--steps 3] [--threads T] [--device cpu]

For every model the notebooks train (their smoke defaults and, with ``--scale paper``/``all``,
the paper configurations of ``notebooks/params/paper.yaml``) one optimisation step — forward,
loss, backward, SGD step — is timed on a random batch in four settings:

* ``fp32``     float32, contiguous (NCHW) memory;
* ``fp32+CL``  float32, model and batch in ``torch.channels_last``;
* ``bf16``     ``torch.autocast(device, dtype=torch.bfloat16)``, NCHW;
* ``bf16+CL``  bf16 autocast and channels_last.

The four settings run interleaved (one step of each per round, best of ``--steps`` rounds
after a warm-up round), so the load on a shared machine hits them alike; the speed-ups are
ratios to ``fp32`` measured in the same run. Image-to-image networks (U-Net, transformation
network) train on an MSE loss, classifiers on cross-entropy. Paper-scale models use a
smaller batch (``--paper-batch``) so that a CPU run finishes; throughput per image is what is
compared. The rule :func:`ppml.train.cpu_bf16_pays` (what ``fit(amp="auto")`` uses on the
CPU) is printed beside each row so the two can be checked against each other;
``fit(channels_last=...)`` is the switch for the ``+CL`` columns (default ``"auto"``: on the CPU where
:func:`ppml.train.cpu_channels_last_pays`, the rule these measurements set).

Measured on the development VM (Intel Xeon 2.00GHz, AVX-512 without AMX/avx512_bf16, so bf16
is emulated; 1 thread, torch 2.14; a shared machine, so ratios are +-20 %): bf16 autocast ran
at 0.2-1.1x float32 on every smoke model, 0.33-0.46x on WRN-40-10, PyramidNet-110, ResNet-18,
ViT-B/16 and the U-Net 64/4 (ConvMixer-256/8 p1: 3.2x, but fp32+channels_last alone 3.9x);
channels_last in float32 gave 1.3-2.1x on the smoke ConvMixers, ResNet-20 and the U-Net 8/2,
0.85x on the small ViT, 0.85-1.1x on the other paper models.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import paired_times, sync  # noqa: E402  (benchmarks/_timing.py, beside this script)
from ppml.models import create_model  # noqa: E402
from ppml.train import cpu_bf16_pays  # noqa: E402

#: (label, registry name, kwargs, image size, image-to-image?) — the notebooks' smoke defaults
SMOKE = [
    ("01 ConvMixer-48/3 k5 p4", "convmixer", dict(dim=48, depth=3, kernel_size=5, patch_size=4), 32, False),
    ("02 ConvMixer-64/4 k5 p4", "convmixer", dict(dim=64, depth=4, kernel_size=5, patch_size=4), 32, False),
    ("03 ConvMixer-128/4 k5 p4", "convmixer", dict(dim=128, depth=4, kernel_size=5, patch_size=4), 32, False),
    ("03 ViT-96/4 p8", "vit", dict(img_size=32, patch_size=8, embed_dim=96, depth=4, num_heads=3), 32, False),
    ("03 LE adaptation + CM-128/4", "adapted_classifier",
     dict(adaptation="le", classifier="convmixer", block_size=4,
          classifier_kwargs=dict(dim=128, depth=4, kernel_size=5, patch_size=4)), 32, False),
    ("04 ResNet-20", "resnet20", {}, 32, False),
    ("04 U-Net h 8/2", "transformation_network", dict(width=8, depth=2), 32, True),
    ("05 ConvMixer-64/2 k5 p4", "convmixer", dict(dim=64, depth=2, kernel_size=5, patch_size=4), 32, False),
]
#: the paper configurations (notebooks/params/paper.yaml)
PAPER = [
    ("01 WRN-40-10", "wideresnet", {}, 32, False),
    ("01 ShakeDrop PyramidNet-110", "pyramidnet_shakedrop", {}, 32, False),
    ("02 ResNet-18", "resnet18_cifar", {}, 32, False),
    ("03 ConvMixer-256/8 k9 p1", "convmixer", dict(dim=256, depth=8, kernel_size=9, patch_size=1), 32, False),
    ("03 ViT-B/16 224px", "vit_b16", dict(img_size=224), 224, False),
    ("04 U-Net h 64/4", "transformation_network", dict(width=64, depth=4), 32, True),
]
SETTINGS = [("fp32", False, False), ("fp32+CL", False, True), ("bf16", True, False), ("bf16+CL", True, True)]


def make_step(name: str, kw: dict, size: int, img2img: bool, batch: int, bf16: bool, cl: bool,
              device: torch.device):
    """A closure running one optimisation step of a fresh copy of the model (same init)."""
    torch.manual_seed(0)
    model = create_model(name, **kw).to(device).train()
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, size, size, generator=g).to(device).contiguous(memory_format=fmt)
    y = x if img2img else torch.randint(0, 10, (batch,), generator=g).to(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
            loss = F.mse_loss(out.float(), y) if img2img else F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=("smoke", "paper", "all"), default="smoke")
    ap.add_argument("--batch", type=int, default=64, help="batch of the smoke models (default 64)")
    ap.add_argument("--paper-batch", type=int, default=8, help="batch of the paper models (default 8)")
    ap.add_argument("--steps", type=int, default=3, help="timed rounds, best is reported (default 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default=None, help="run only rows whose label contains this text")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = (SMOKE if args.scale in ("smoke", "all") else []) + (PAPER if args.scale in ("paper", "all") else [])
    if args.only:
        rows = [r for r in rows if args.only.lower() in r[0].lower()]
    isa = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    caps = getattr(torch.cpu, "get_capabilities", dict)()
    native = ", ".join(k for k in ("amx_bf16", "avx512_bf16") if caps.get(k)) or "none (bf16 emulated)"
    print(f"ppml training-step benchmark on {device}: torch {torch.__version__}, {torch.get_num_threads()} "
          f"thread(s), {caps.get('cpu_name') or platform.processor() or platform.machine()} (torch CPU capability "
          f"{isa}; native bf16 units: {native}), best of {args.steps} steps")
    head = (f"{'model':<30}{'batch':>6}" + "".join(f"{s[0] + ' img/s':>15}" for s in SETTINGS)
            + f"{'bf16 x':>8}{'bf16+CL x':>11}{'fp32+CL x':>11}  auto->bf16")
    print()
    print(head)
    print("-" * len(head))
    for label, name, kw, size, img2img in rows:
        batch = args.batch if (label, name, kw, size, img2img) in SMOKE else args.paper_batch
        fns = [make_step(name, kw, size, img2img, batch, bf16, cl, device) for _, bf16, cl in SETTINGS]
        t = paired_times(fns, args.steps, device)
        ips = [batch / s for s in t]
        auto = cpu_bf16_pays(create_model(name, **kw)) if device.type == "cpu" else "-"
        print(f"{label:<30}{batch:>6}" + "".join(f"{v:>15.1f}" for v in ips)
              + f"{ips[2] / ips[0]:>8.2f}{ips[3] / ips[0]:>11.2f}{ips[1] / ips[0]:>11.2f}  {auto}", flush=True)
    print()
    print("x: throughput relative to fp32 in the same run (> 1 is faster).")


if __name__ == "__main__":
    main()
