"""Run-time plumbing shared by fit and the prediction loop: seeding and RNG states, devices,
``torch.distributed``, mixed precision (:func:`amp_settings`) and the rehearsal caps."""

from __future__ import annotations

import contextlib
import os
import random
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

LossHook = Callable[[nn.Module, torch.Tensor, torch.Tensor], Any]
EvalTransform = Callable[[torch.Tensor], torch.Tensor]
AMP_MODES = ("auto", True, False)



def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed Python's ``random``, numpy and torch (CPU and every CUDA device).

    ``deterministic=True`` also asks PyTorch for deterministic kernels (cuDNN included;
    ops without one warn instead of failing), which GPU runs need for repeatability.

    >>> _ = seed_everything(3); a = torch.rand(2)
    >>> _ = seed_everything(3); torch.equal(a, torch.rand(2))
    True
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too
    if deterministic:
        # cuBLAS needs this workspace setting for deterministic matmuls (PyTorch reproducibility notes).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return seed


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        # Stored as tensors/ints so the checkpoint loads with torch.load(weights_only=True).
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])



def init_distributed(backend: str | None = None) -> tuple[int, int, int]:
    """Return ``(rank, world_size, local_rank)``, joining the process group if needed.

    Under ``torchrun`` (environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``) the default process group is initialised with NCCL when
    CUDA is available, else gloo. A plain single process gets ``(0, 1, 0)``.
    """
    if not dist.is_available():
        return 0, 1, 0
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), local
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), local


def _resolve_device(device: torch.device | str | None, local_rank: int, distributed: bool) -> torch.device:
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank if distributed else torch.cuda.current_device())
        return torch.device("cpu")
    d = torch.device(device)
    if d.type == "cuda" and d.index is None:
        d = torch.device("cuda", local_rank if distributed else torch.cuda.current_device())
    return d


#: bf16 autocast on the CPU pays only with native bf16 matrix units and a big dense-conv model:
#: measured (benchmarks/train.py) on an AVX-512 CPU without AMX/avx512_bf16 bf16 runs at 0.2-1.1x
#: float32 on every notebook model; on a Sapphire Rapids CPU (AMX) ResNet-18 went from 37 to
#: 64 img/s while ConvMixer-128/4 (depthwise + 1x1 convolutions) gained nothing.
CPU_BF16_MIN_DENSE_CONV_WEIGHTS = 5_000_000


def _cpu_has_native_bf16() -> bool:
    caps = getattr(torch.cpu, "get_capabilities", None)
    if caps is None:  # older torch: no way to tell, stay in float32
        return False
    return bool(caps().get("amx_bf16", False))


def cpu_bf16_pays(model: nn.Module, *, native_bf16: bool | None = None) -> bool:
    """The rule ``fit(amp="auto")`` applies on the CPU: does bf16 autocast speed training up?

    True when both hold: the CPU has AMX bf16 tiles (``native_bf16``, detected when None) —
    without them bf16 matmuls are emulated and slower — and at least
    :data:`CPU_BF16_MIN_DENSE_CONV_WEIGHTS` weights sit in dense (``groups=1``) k×k convolutions
    with k > 1, the shape of the networks that gained (ResNet-18, Wide ResNet, PyramidNet); a
    small model or one of depthwise/1×1 convolutions or linear layers (ConvMixer, ViT, the
    smoke-scale models) is bound by memory traffic and autocast's casts, and stays in float32.

    >>> from ppml.models import create_model
    >>> cpu_bf16_pays(create_model("resnet18_cifar"), native_bf16=True)
    True
    >>> cpu_bf16_pays(create_model("resnet18_cifar"), native_bf16=False)
    False
    >>> cpu_bf16_pays(create_model("convmixer", dim=128, depth=4, kernel_size=5, patch_size=4), native_bf16=True)
    False
    """
    if native_bf16 is None:
        native_bf16 = _cpu_has_native_bf16()
    if not native_bf16:
        return False
    dense = sum(m.weight.numel() for m in model.modules()
                if isinstance(m, nn.Conv2d) and m.groups == 1 and max(m.kernel_size) > 1)
    return dense >= CPU_BF16_MIN_DENSE_CONV_WEIGHTS


#: At most this many weights for ``channels_last="auto"`` on the CPU (larger models gained 0.85-1.1x).
CPU_CHANNELS_LAST_MAX_WEIGHTS = 5_000_000


def cpu_channels_last_pays(model: nn.Module) -> bool:
    """The rule ``fit(channels_last="auto")`` applies on the CPU: train in channels_last memory?

    True when at least half of the model's weights are convolution weights and it has fewer than
    :data:`CPU_CHANNELS_LAST_MAX_WEIGHTS`: measured by ``benchmarks/train.py`` on this project's
    2-core development CPU, channels_last gave 1.3-2.1x per training step on the smoke ConvMixers,
    ResNet-20 and the U-Net, 0.85x on the small ViT (a patch-embedding convolution and
    linear layers) and 0.85-1.1x on the paper models.

    >>> from ppml.models import create_model
    >>> cpu_channels_last_pays(create_model("convmixer", dim=64, depth=4, kernel_size=5, patch_size=4))
    True
    >>> cpu_channels_last_pays(create_model("vit", img_size=32, patch_size=8, embed_dim=96, depth=4, num_heads=3))
    False
    """
    total = sum(p.numel() for p in model.parameters())
    conv = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    return 0 < total < CPU_CHANNELS_LAST_MAX_WEIGHTS and conv >= total / 2


def amp_settings(amp: bool | str, amp_dtype: str | None, device: torch.device,
                 model: nn.Module | None = None) -> tuple[bool, torch.dtype]:
    """``(autocast on?, dtype)`` for ``amp`` on ``device``.

    * ``amp=False``: float32 everywhere.
    * ``amp="auto"`` (default): on CUDA autocast in bf16 where supported, else fp16 (with a
      ``GradScaler`` in :func:`fit`); on the CPU bf16 autocast where :func:`cpu_bf16_pays` for
      ``model`` (never on this project's smoke models), else float32.
    * ``amp=True``: autocast on every device (CUDA as above, the CPU in bf16).

    ``amp_dtype`` (``"bf16"``/``"fp16"``) forces the CUDA dtype; fp16 autocast is CUDA-only.
    The environment variable ``PPML_CPU_AMP=bf16`` turns CPU bf16 on for ``"auto"`` too (a
    CPU-only rehearsal runs the GPU's mixed-precision code path), ``PPML_AMP_DTYPE`` picks the
    CUDA dtype when ``amp_dtype`` is None.

    >>> amp_settings(False, None, torch.device("cpu"))
    (False, torch.float32)
    >>> amp_settings(True, None, torch.device("cpu"))
    (True, torch.bfloat16)
    """
    if not (amp is True or amp is False or amp == "auto"):
        raise ValueError(f"amp must be 'auto', True or False, got {amp!r}")
    if amp_dtype not in (None, "bf16", "fp16"):
        raise ValueError(f"amp_dtype must be None, 'bf16' or 'fp16', got {amp_dtype!r}")
    if amp is False:
        return False, torch.float32
    if device.type == "cpu":
        if amp_dtype == "fp16":
            raise ValueError("amp_dtype='fp16' is CUDA-only; on the CPU autocast runs in bf16: "
                             "pass amp_dtype='bf16' or None, or amp=False for float32")
        if amp is True or os.environ.get("PPML_CPU_AMP", "").strip().lower() == "bf16":
            return True, torch.bfloat16
        return (True, torch.bfloat16) if model is not None and cpu_bf16_pays(model) else (False, torch.float32)
    if device.type != "cuda":
        return False, torch.float32
    if amp_dtype is None and os.environ.get("PPML_AMP_DTYPE", "").strip() in ("bf16", "fp16"):
        amp_dtype = os.environ["PPML_AMP_DTYPE"].strip()  # e.g. scripts/gpu_check.sh tries both
    if amp_dtype is None:
        amp_dtype = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return True, torch.bfloat16 if amp_dtype == "bf16" else torch.float16


def rehearsal_caps() -> tuple[int | None, int | None, int | None]:
    """``(steps per epoch, epochs, batch size)`` caps of a paper-scale rehearsal, else Nones.

    ``python -m ppml.reproduce --scale paper --rehearse`` sets ``PPML_REHEARSE_STEPS``,
    ``PPML_REHEARSE_EPOCHS`` and ``PPML_REHEARSE_BATCH`` so that every training runs its
    paper configuration for a few steps only (see :mod:`ppml.rehearsal`).

    >>> rehearsal_caps()  # outside a rehearsal
    (None, None, None)
    """
    def cap(name: str) -> int | None:
        v = os.environ.get(name, "").strip()
        if not v:
            return None
        if not v.isdigit() or int(v) < 1:
            raise ValueError(f"{name}={v!r} must be a positive integer (or unset)")
        return int(v)

    return cap("PPML_REHEARSE_STEPS"), cap("PPML_REHEARSE_EPOCHS"), cap("PPML_REHEARSE_BATCH")


def _autocast(enabled: bool, dtype: torch.dtype, device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if enabled else contextlib.nullcontext()


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model

def _name(obj: Any) -> str:
    return obj if isinstance(obj, str) else f"callable:{getattr(obj, '__qualname__', type(obj).__qualname__)}"
