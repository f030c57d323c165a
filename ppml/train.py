"""Training and evaluation: ``fit``, ``evaluate`` (with test-time averaging), ``predict``.

One loop serves every notebook, from a 30-second smoke run on a CPU to a multi-GPU paper-scale
run under ``torchrun``:

* optimisers ``"sgd"`` / ``"adamw"`` (or a callable) and the papers' schedules, stepped per
  optimisation step (see :func:`lr_schedule`);
* mixed precision on CUDA only (bf16 where supported, else fp16 with a ``GradScaler``);
* a checkpoint written atomically at the end of every epoch (``checkpoint_dir/last.pt``, mode
  0600, sha256-checked, fingerprinted with the data, transforms/keys and loss) and automatic
  resume from it, one run per folder (an exclusive lock). The loader's randomness is a function of (seed, epoch) and the RNG
  states are restored, so a run killed at any moment and restarted ends with exactly the
  weights of an uninterrupted run (bit for bit on the CPU);
* data-parallel training: run the same script under ``torchrun --nproc_per_node N`` and
  :func:`fit` joins the process group, wraps the model in ``DistributedDataParallel``, shards
  the data, all-reduces the metrics and lets rank 0 alone write files;
* a custom loss hook ``loss(model, x, y)`` for the papers' non-standard objectives
  (self-teaching KL-to-mean, transformation-network losses).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import math
import numbers
import os
import random
import socket
import sys
import time
import types
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .loader import BatchLoader
from .utils import atomic_write, atomic_write_json, progress as _progress, quiet

try:  # POSIX advisory locks; elsewhere a checkpoint folder is not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "OPTIMIZERS", "SCHEDULES", "CheckpointError", "FitResult", "evaluate", "fit", "init_distributed", "rehearsal_caps",
    "lr_schedule", "predict", "seed_everything",
]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine", "onecycle", "triangular", "constant")
_SELECT = ("val_loss", "val_acc")
_AVERAGES = ("probs", "logits")
_CKPT_FORMAT = "ppml.train.checkpoint/2"  # /2: sha256 checksum and run fingerprint

LossHook = Callable[[nn.Module, torch.Tensor, torch.Tensor], Any]
EvalTransform = Callable[[torch.Tensor], torch.Tensor]


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: corrupt, truncated, or written for another model/config."""


# --------------------------------------------------------------------------- seeding


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


# --------------------------------------------------------------------------- schedules


def lr_schedule(schedule: str, *, epochs: int, steps_per_epoch: int, milestones: Sequence[int] | None = None,
                gamma: float = 0.1, warmup_epochs: float = 0.0, pct_start: float | None = None,
                div_factor: float = 25.0, final_div_factor: float = 1e4) -> Callable[[int], float]:
    """The learning-rate multiplier as a function of the optimisation step (0-based).

    * ``"constant"``: 1.
    * ``"multistep"``: multiply by ``gamma`` after each epoch in ``milestones`` (default: 50 % and
      75 % of training, the CIFAR recipe of He et al. 2016; ScrambleMix uses 60/120/180 of 200,
      the transformation network 60/120/160 with gamma 0.2). Changes at epoch boundaries.
    * ``"cosine"``: half-cosine from 1 to 0 over training, per step (Loshchilov & Hutter 2017,
      SGDR without restarts).
    * ``"onecycle"``: Smith & Topin's one-cycle policy exactly as ``torch.optim.lr_scheduler.OneCycleLR``
      (cosine annealing, no momentum cycling): from 1/div_factor up to 1 at ``pct_start``
      (default 0.3) of training, then down to 1/(div_factor·final_div_factor).
    * ``"triangular"``: ConvMixer's schedule (Trockman & Kolter; ``onecycle`` in their timm fork
      and their CIFAR-10 script): piecewise linear through (0, 0), (``pct_start``·T, 1),
      (0.8·T, 1/20), (T, 0) with T = epochs and ``pct_start`` defaulting to 2/5; step i of epoch
      e uses t = e + (i + 1)/steps_per_epoch as in their script. (Their code rounds the knots
      down to whole epochs, ``T*2//5``; here they are exact fractions.)

    ``warmup_epochs`` adds a linear warm-up (Goyal et al. 2017) to constant, multistep and cosine.

    >>> f = lr_schedule("multistep", epochs=4, steps_per_epoch=2, milestones=[2], gamma=0.1)
    >>> [round(f(s), 3) for s in range(8)]
    [1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1]
    >>> f = lr_schedule("triangular", epochs=5, steps_per_epoch=1)
    >>> [round(f(s), 3) for s in range(5)]
    [0.5, 1.0, 0.525, 0.05, 0.0]
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError("epochs and steps_per_epoch must be >= 1")
    total = epochs * steps_per_epoch
    warm = int(round(warmup_epochs * steps_per_epoch))
    if warmup_epochs < 0 or warm >= total:
        raise ValueError(f"warmup_epochs must be in [0, epochs), got {warmup_epochs}")
    if milestones is None:
        milestones = sorted({m for m in (round(0.5 * epochs), round(0.75 * epochs)) if m >= 1})
    ms = [int(m) for m in milestones]
    if ms != sorted(ms) or any(m < 1 for m in ms):
        raise ValueError(f"milestones must be increasing positive epoch numbers, got {list(milestones)}")
    if schedule in ("onecycle", "triangular"):
        pct = pct_start if pct_start is not None else (0.3 if schedule == "onecycle" else 0.4)
        hi = 1.0 if schedule == "onecycle" else 0.8
        if not 0.0 < pct < hi:
            raise ValueError(f"pct_start must be in (0, {hi}) for {schedule!r}, got {pct}")
    else:
        pct = 0.0

    def warmup(s: int) -> float:
        return (s + 1) / warm if s < warm else 1.0

    if schedule == "constant":
        return warmup
    if schedule == "multistep":
        return lambda s: warmup(s) * gamma ** sum(s // steps_per_epoch >= m for m in ms)
    if schedule == "cosine":
        return lambda s: warmup(s) if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm)))
    if schedule == "onecycle":
        lo, end_lo = 1.0 / div_factor, 1.0 / (div_factor * final_div_factor)
        up_end, down_end = float(pct * total) - 1, float(total - 1)

        def cos_anneal(a: float, b: float, p: float) -> float:
            return b + (a - b) / 2 * (math.cos(math.pi * p) + 1)

        def onecycle(s: int) -> float:
            # Same phase arithmetic as torch.optim.lr_scheduler.OneCycleLR (two phases).
            if s <= up_end:
                return cos_anneal(lo, 1.0, s / up_end if up_end > 0 else 1.0)
            return cos_anneal(1.0, end_lo, (s - up_end) / (down_end - up_end))

        return onecycle
    xs, ys = [0.0, pct * epochs, 0.8 * epochs, float(epochs)], [0.0, 1.0, 1 / 20, 0.0]
    return lambda s: float(np.interp((s + 1) / steps_per_epoch, xs, ys))


# --------------------------------------------------------------------------- devices, DDP, AMP


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


def _amp_settings(amp: bool, amp_dtype: str | None, device: torch.device) -> tuple[bool, torch.dtype]:
    if amp_dtype not in (None, "bf16", "fp16"):
        raise ValueError(f"amp_dtype must be None, 'bf16' or 'fp16', got {amp_dtype!r}")
    if amp and device.type == "cpu" and os.environ.get("PPML_CPU_AMP", "").strip().lower() == "bf16":
        # Opt-in bf16 autocast on the CPU: lets a CPU-only rehearsal (ppml.rehearsal) run the
        # mixed-precision code path a GPU run takes.
        return True, torch.bfloat16
    if not amp or device.type != "cuda":
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


# --------------------------------------------------------------------------- data helpers


def _as_loader(data: Any, batch_size: int | None, *, shuffle: bool, transforms: Any, seed: int,
               what: str) -> BatchLoader:
    if isinstance(data, BatchLoader):
        if transforms is not None:
            raise ValueError(f"{what} is a BatchLoader: put the transforms on the loader instead")
        if batch_size is not None and batch_size != data.batch_size:
            raise ValueError(f"{what} is a BatchLoader with batch_size={data.batch_size}; "
                             f"do not pass batch_size={batch_size} as well")
        return data
    return BatchLoader.from_dataset(data, batch_size or 128, shuffle=shuffle, transforms=transforms, seed=seed)


def _eval_source(data: Any) -> tuple[torch.Tensor, torch.Tensor | None, BatchLoader | None]:
    """(images, labels or None, the loader if ``data`` was one)."""
    if isinstance(data, BatchLoader):
        return data.images, data.labels, data
    if hasattr(data, "images") and hasattr(data, "labels"):
        return torch.as_tensor(data.images), torch.as_tensor(data.labels), None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return torch.as_tensor(data[0]), torch.as_tensor(data[1]), None
    if isinstance(data, torch.Tensor):
        return data, None, None
    raise TypeError(f"expected a BatchLoader, an object with .images/.labels, an (images, labels) pair "
                    f"or an image tensor, got {type(data).__name__}")


def _eval_batches(data: Any, batch_size: int, device: torch.device, shard: tuple[int, int] = (0, 1),
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, bool]]:
    """In-order batches ``(x, y, to_float)`` before the float conversion (so that test-time
    transforms such as ciphers see uint8), with the loader's own transforms applied if ``data``
    is a loader (seeded from its seed and current epoch)."""
    images, labels, loader = _eval_source(data)
    rank, world = shard
    if world > 1:  # strided shard without padding: every sample is counted exactly once
        images = images[rank::world]
        labels = labels[rank::world] if labels is not None else None
    if len(images) == 0:
        return
    to_float = loader.to_float if loader is not None else True
    dummy = labels if labels is not None else torch.zeros(len(images))
    inner = BatchLoader(images, dummy, batch_size, shuffle=False, to_float=False, device=device,
                        transforms=loader.transforms if loader is not None else None,
                        seed=loader.seed if loader is not None else 0)
    if loader is not None:
        inner.set_epoch(loader.epoch)
    for x, y in inner:
        yield x, (y if labels is not None else None), to_float


def _float(x: torch.Tensor, to_float: bool) -> torch.Tensor:
    return x.float().div_(255) if to_float and x.dtype == torch.uint8 else x


def _hard(y: torch.Tensor) -> torch.Tensor:
    """Class indices from class indices or soft (N, K) targets."""
    return y.argmax(1) if y.ndim == 2 else y


def _ce(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean", label_smoothing: float = 0.0) -> torch.Tensor:
    if y.ndim == 2:  # soft targets (mixup-style)
        y = y.to(logits.dtype)
    return F.cross_entropy(logits, y, reduction=reduction, label_smoothing=label_smoothing)


def _unpack_loss(out: Any, hook: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[0], torch.Tensor):
        return out[0], out[1]
    raise TypeError(f"the loss hook {hook} must return a scalar tensor or (loss, logits), got {type(out).__name__}")


def _name(obj: Any) -> str:
    return obj if isinstance(obj, str) else f"callable:{getattr(obj, '__qualname__', type(obj).__qualname__)}"


# --------------------------------------------------------------------------- evaluation


def _tta_list(transforms: EvalTransform | Sequence[EvalTransform] | None) -> list[EvalTransform | None]:
    if transforms is None:
        return [None]
    ts = [transforms] if callable(transforms) else list(transforms)
    if not ts or not all(callable(t) for t in ts):
        raise ValueError("transforms must be a non-empty list of callables x -> x")
    return ts


def _tta_forward(model: nn.Module, x: torch.Tensor, ts: list, to_float: bool, average: str,
                 ac: contextlib.AbstractContextManager | Callable) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Averaged probabilities or logits over the transforms, and each transform's logits."""
    outs = []
    for t in ts:
        xt = x if t is None else t(x)
        with ac():
            outs.append(model(_float(xt, to_float)).float())
    stack = torch.stack(outs)
    avg = stack.softmax(-1).mean(0) if average == "probs" else stack.mean(0)
    return avg, outs


@torch.no_grad()
def evaluate(model: nn.Module, data: Any, *, transforms: EvalTransform | Sequence[EvalTransform] | None = None,
             average: str = "probs", device: torch.device | str | None = None, batch_size: int = 256,
             loss: LossHook | None = None, amp: bool = True, amp_dtype: str | None = None,
             distributed: bool | None = None) -> dict[str, Any]:
    """Loss and accuracy of ``model`` on ``data``, optionally averaged over test-time transforms.

    ``data``: a :class:`BatchLoader` (its images, labels, transforms and ``to_float`` are used,
    in order, without shuffling), an object with ``.images``/``.labels``, or a pair.
    ``transforms``: a list of callables ``x -> x`` applied to each uint8 batch before the
    conversion to float — e.g. ``[identity, hflip]`` or one cipher per key; the predictions
    are averaged over them: mean of the softmax probabilities (``average="probs"``; loss =
    NLL of the mean probability) or mean of the logits (``"logits"``; loss = CE of the mean
    logits, as ScrambleMix's code does). ``loss``: evaluate with a custom hook
    ``loss(model, x, y)`` instead (no test-time transforms then).

    Returns ``{"loss", "acc", "n", "correct"}``, plus ``"acc_each"`` (one accuracy per
    transform) when more than one transform is given. Under ``torch.distributed`` (auto-
    detected) each rank evaluates a strided shard and the sums are all-reduced, so every rank
    must call it; pass ``distributed=False`` to evaluate everything on one rank.

    >>> m = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 2))
    >>> x, y = torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1])
    >>> r = evaluate(m, (x, y), transforms=[lambda v: v, lambda v: v.flip(-1)])
    >>> r["n"], r["acc"], len(r["acc_each"])
    (4, 0.5, 2)
    """
    if average not in _AVERAGES:
        raise ValueError(f"average must be one of {', '.join(_AVERAGES)}, got {average!r}")
    if loss is not None and transforms is not None:
        raise ValueError("evaluate: use either a custom loss hook or test-time transforms, not both")
    ts = _tta_list(transforms)
    model = _unwrap(model)
    dev = torch.device(device) if device is not None else _model_device(model)
    on, dtype = _amp_settings(amp, amp_dtype, dev)
    if distributed is None:
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    shard = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    # [loss_sum, correct, n, n_with_logits, correct_each...]
    sums = torch.zeros(4 + len(ts), dtype=torch.float64, device=dev)
    was_training = model.training
    model.eval()
    try:
        for x, y, to_float in _eval_batches(data, batch_size, dev, shard):
            if y is None:
                raise ValueError("evaluate needs labels; use predict() for unlabelled images")
            n = len(x)
            if loss is not None:
                with _autocast(on, dtype, dev):
                    lv, logits = _unpack_loss(loss(model, _float(x, to_float), y), _name(loss))
                sums[0] += lv.detach().double() * n
                if logits is not None:
                    sums[1] += (logits.argmax(1) == _hard(y)).sum()
                    sums[3] += n
                sums[2] += n
                continue
            avg, outs = _tta_forward(model, x, ts, to_float, average, lambda: _autocast(on, dtype, dev))
            if average == "probs":
                logp = avg.clamp_min(1e-12).log()
                sums[0] += -(logp * y).sum() if y.ndim == 2 else F.nll_loss(logp, y, reduction="sum")
            else:
                sums[0] += _ce(avg, y, reduction="sum")
            hard = _hard(y)
            sums[1] += (avg.argmax(1) == hard).sum()
            sums[2] += n
            sums[3] += n
            for i, o in enumerate(outs):
                sums[4 + i] += (o.argmax(1) == hard).sum()
    finally:
        model.train(was_training)
    if distributed:
        dist.all_reduce(sums)
    s = sums.tolist()
    n = int(s[2])
    out: dict[str, Any] = {
        "loss": s[0] / n if n else float("nan"),
        "acc": s[1] / s[3] if s[3] else None,
        "n": n,
        "correct": int(s[1]),
    }
    if loss is None and len(ts) > 1:
        out["acc_each"] = [c / n for c in s[4:]]
    return out


@torch.no_grad()
def predict(model: nn.Module, data: Any, transforms: EvalTransform | Sequence[EvalTransform] | None = None, *,
            average: str = "probs", batch_size: int = 256, device: torch.device | str | None = None,
            amp: bool = True, amp_dtype: str | None = None) -> torch.Tensor:
    """Class probabilities (N, K) on the CPU, in data order, averaged over ``transforms``
    as in :func:`evaluate` (``"logits"``: softmax of the mean logits). ``data`` may also be a
    bare image tensor.

    >>> m = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> p = predict(m, torch.zeros(5, 3, 2, 2, dtype=torch.uint8))
    >>> p.shape, bool(torch.allclose(p.sum(1), torch.ones(5)))
    (torch.Size([5, 3]), True)
    """
    if average not in _AVERAGES:
        raise ValueError(f"average must be one of {', '.join(_AVERAGES)}, got {average!r}")
    ts = _tta_list(transforms)
    model = _unwrap(model)
    dev = torch.device(device) if device is not None else _model_device(model)
    on, dtype = _amp_settings(amp, amp_dtype, dev)
    res = []
    was_training = model.training
    model.eval()
    try:
        for x, _, to_float in _eval_batches(data, batch_size, dev):
            avg, _ = _tta_forward(model, x, ts, to_float, average, lambda: _autocast(on, dtype, dev))
            res.append((avg if average == "probs" else avg.softmax(-1)).cpu())
    finally:
        model.train(was_training)
    return torch.cat(res)


# --------------------------------------------------------------------------- results and checkpoints


@dataclass
class FitResult:
    """What :func:`fit` returns (and writes to ``checkpoint_dir/history.json``).

    ``history`` has one dict per epoch with ``epoch`` (1-based), ``train_loss``, ``train_acc``,
    ``val_loss``, ``val_acc`` (``None`` where not measured), ``lr`` (the last step's) and
    ``seconds``. ``result["val_acc"]`` gives a column; ``result.final`` the last epoch.
    """

    history: list[dict[str, Any]]
    best_epoch: int | None = None
    best_metric: float | None = None
    select_best: str | None = None
    resumed_from: int = 0
    checkpoint_dir: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> list[Any]:
        return [h[key] for h in self.history]

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's record."""
        return self.history[-1]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the result as JSON, atomically."""
        atomic_write_json(path, self.to_dict())


# ---- canonical hashing (checksums and run fingerprints)

_HASH_DEPTH = 12
_SAMPLE_BYTES = 16 << 20  # data larger than this is fingerprinted from evenly spaced samples


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    t = t.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    t = t.reshape(-1).contiguous().cpu()
    if t.dtype.is_complex:
        t = torch.view_as_real(t).reshape(-1)
    return memoryview(t.view(torch.uint8).numpy())


class _Hasher:
    """A canonical, process-independent sha256 of nested values.

    Tensors and arrays (key tables, weights) go into ``tables``, everything else (classes,
    code, scalars) into ``rest``, so that a mismatch can say which of the two changed. Object
    identities and memory addresses never enter; ``skip`` holds ids of objects to leave out
    (the model being trained, whose weights legitimately change)."""

    def __init__(self, skip: Sequence[int] = ()) -> None:
        self.tables = hashlib.sha256()
        self.rest = hashlib.sha256()
        self._seen: set[int] = set(skip)

    def _tag(self, text: str) -> None:
        self.rest.update(text.encode("utf-8", "backslashreplace") + b"\x00")

    def tensor(self, t: torch.Tensor) -> None:
        self._tag(f"tensor {t.dtype} {tuple(t.shape)}")
        self.tables.update(f"{t.dtype} {tuple(t.shape)};".encode())
        self.tables.update(_tensor_bytes(t))

    def feed(self, obj: Any, depth: int = 0) -> None:
        if depth > _HASH_DEPTH:
            self._tag("<deep>")
            return
        if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, np.generic)):
            self._tag(f"{type(obj).__name__}:{obj!r}")
            return
        if isinstance(obj, torch.Tensor):
            self.tensor(obj)
            return
        if isinstance(obj, np.ndarray):
            if obj.dtype == object:
                self._tag(f"ndarray-object {obj.shape}")
                for v in obj.reshape(-1):
                    self.feed(v, depth + 1)
            else:
                self._tag(f"ndarray {obj.dtype.str} {obj.shape}")
                self.tables.update(f"{obj.dtype.str} {obj.shape};".encode())
                self.tables.update(memoryview(np.ascontiguousarray(obj).reshape(-1).view(np.uint8)))
            return
        if isinstance(obj, (torch.dtype, torch.device)):
            self._tag(str(obj))
            return
        if isinstance(obj, types.ModuleType):
            self._tag(f"module {obj.__name__}")
            return
        if isinstance(obj, type):
            self._tag(f"class {obj.__module__}.{obj.__qualname__}")
            return
        if id(obj) in self._seen:
            self._tag("<seen>")
            return
        self._seen.add(id(obj))
        d = depth + 1
        if isinstance(obj, (list, tuple)):  # a checkpoint may turn one into the other
            self._tag(f"seq {len(obj)}")
            for v in obj:
                self.feed(v, d)
        elif isinstance(obj, dict):
            self._tag(f"dict {len(obj)}")
            for k in sorted(obj, key=repr):
                self._tag(repr(k))
                self.feed(obj[k], d)
        elif isinstance(obj, (set, frozenset)):
            self._tag(f"set {len(obj)}")
            for v in sorted(obj, key=repr):
                self.feed(v, d)
        elif isinstance(obj, functools.partial):
            self._tag("partial")
            self.feed(obj.func, d)
            self.feed(obj.args, d)
            self.feed(obj.keywords, d)
        elif isinstance(obj, types.MethodType):
            self._tag("method")
            self.feed(obj.__func__, d)
            self.feed(obj.__self__, d)
        elif isinstance(obj, types.FunctionType):
            self._function(obj, d)
        elif isinstance(obj, types.CodeType):
            self._code(obj, d)
        elif isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType)):
            self._tag(f"builtin {getattr(obj, '__module__', '')}.{obj.__qualname__}")
        elif isinstance(obj, nn.Module):
            # Parameters and buffers (a cipher's key tables are buffers) plus plain settings;
            # other tensor attributes are scratch state (e.g. the last drawn key indices).
            self._tag(f"nn.Module {type(obj).__module__}.{type(obj).__qualname__}")
            for name, t in list(obj.named_parameters()) + list(obj.named_buffers()):
                self._tag(name)
                self.tensor(t)
            for mname, m in obj.named_modules():
                for k, v in sorted(vars(m).items()):
                    if k.startswith("_") or k == "training" or isinstance(v, (torch.Tensor, nn.Module)):
                        continue
                    self._tag(f"{mname}.{k}")
                    self.feed(v, d)
        elif hasattr(obj, "__dict__") or hasattr(type(obj), "__slots__"):
            self._tag(f"object {type(obj).__module__}.{type(obj).__qualname__}")
            attrs = dict(vars(obj)) if hasattr(obj, "__dict__") else {}
            for slot in getattr(type(obj), "__slots__", ()):
                if isinstance(slot, str) and hasattr(obj, slot):
                    attrs[slot] = getattr(obj, slot)
            for k, v in sorted(attrs.items()):
                if not k.startswith("_"):  # private caches and salts are not the object's value
                    self._tag(k)
                    self.feed(v, d)
        else:
            self._tag(f"object {type(obj).__module__}.{type(obj).__qualname__}")

    def _code(self, code: types.CodeType, depth: int) -> None:
        # The compiled code and its constants; not the file name or line numbers, so editing
        # another cell of a notebook does not change a loss hook's fingerprint.
        self._tag(f"code {code.co_name} {code.co_argcount} {code.co_names} {code.co_varnames}")
        self.rest.update(code.co_code)
        for c in code.co_consts:
            self.feed(c, depth + 1)

    def _function(self, fn: types.FunctionType, depth: int) -> None:
        self._tag(f"function {fn.__module__}.{fn.__qualname__}")
        self._code(fn.__code__, depth)
        self.feed(fn.__defaults__, depth)
        self.feed(fn.__kwdefaults__, depth)
        for cell in fn.__closure__ or ():
            try:
                self.feed(cell.cell_contents, depth)
            except ValueError:  # an empty cell
                self._tag("<empty cell>")
        # Globals the code reads that can hold a key or a network (a notebook's `cipher`), so
        # re-binding one counts. Global scalars are left out: they are mostly switches and paths
        # (a debug delay, a log file) that may differ between a run and its resumption.
        names: list[str] = []
        stack = [fn.__code__]
        while stack:
            c = stack.pop()
            names += c.co_names
            stack += [k for k in c.co_consts if isinstance(k, types.CodeType)]
        g = fn.__globals__
        for name in sorted(set(names)):
            if name in g:
                v = g[name]
                if v is None or isinstance(v, (types.ModuleType, type, bool, int, float, complex, str, bytes)):
                    continue
                self._tag(f"global {name}")
                self.feed(v, depth)

    def digests(self) -> tuple[str, str]:
        return self.tables.hexdigest()[:16], self.rest.hexdigest()[:16]


def _payload_sha256(ck: dict[str, Any]) -> str:
    """sha256 over everything in a checkpoint but its ``checksum`` entry."""
    h = _Hasher()
    h.feed({k: v for k, v in ck.items() if k != "checksum"})
    return hashlib.sha256((h.tables.hexdigest() + h.rest.hexdigest()).encode()).hexdigest()


def _data_digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    """A cheap content hash of the training data: everything up to 16 MiB, else evenly spaced
    samples of that size (plus every label), with the shapes and dtypes."""
    h = hashlib.sha256()
    for is_labels, t in enumerate((images, labels)):
        t = torch.as_tensor(t)
        n = len(t)
        h.update(f"{t.dtype} {tuple(t.shape)};".encode())
        if n == 0:
            continue
        row = max(1, t[:1].numel() * t.element_size())
        take = n if n * row <= _SAMPLE_BYTES or is_labels else max(1, _SAMPLE_BYTES // row)
        idx = None if take >= n else torch.linspace(0, n - 1, take).round().long().unique()
        chunk = max(1, (16 << 20) // row)
        rows = range(n) if idx is None else idx
        for i in range(0, len(rows), chunk):
            part = t[i:i + chunk] if idx is None else t[idx[i:i + chunk].to(t.device)]
            h.update(_tensor_bytes(part))
    return h.hexdigest()[:16]


def _callable_digest(obj: Any, skip: Sequence[int]) -> list[str]:
    h = _Hasher(skip)
    h.feed(obj)
    return [_describe(obj), *h.digests()]


def _describe(obj: Any) -> str:
    if isinstance(obj, (types.FunctionType, types.MethodType, functools.partial)):
        return _name(getattr(obj, "func", obj))
    return type(obj).__qualname__


def _fingerprint(loader: BatchLoader, loss: LossHook | None, model: nn.Module) -> dict[str, Any]:
    """What a resumed run must share with the checkpoint beyond architecture and config:
    the training data, the transforms (their key tables: hashed, never stored) and the loss."""
    skip = [id(model), *(id(m) for m in model.modules()), *(id(p) for p in model.parameters()),
            *(id(b) for b in model.buffers())]
    # A model may hold a cipher (an encrypting first layer): its key tables are integer buffers,
    # which training never changes, unlike weights and float statistics; BatchNorm's step counter
    # is the exception. The checkpoint would silently replace them with the old key's.
    tables = hashlib.sha256()
    for name, b in sorted(model.named_buffers()):
        if not (b.is_floating_point() or b.is_complex()) and not name.endswith("num_batches_tracked"):
            tables.update(f"{name} {b.dtype} {tuple(b.shape)};".encode())
            tables.update(_tensor_bytes(b))
    return {
        "data": _data_digest(loader.images, loader.labels),
        "transforms": [_callable_digest(t, skip) for t in loader.transforms],
        "loss": ["cross_entropy", "", ""] if loss is None else _callable_digest(loss, skip),
        "model_tables": tables.hexdigest()[:16],
    }


# ---- files


def _save_checkpoint(path: Path, ck: dict[str, Any]) -> None:
    """Write ``ck`` atomically, readable by the owner only (it may hold key tables).

    The temporary file carries this process's id, so a later run sweeps only the leftovers of
    dead processes."""
    ck = dict(ck, checksum=_payload_sha256(ck))
    with atomic_write(path, "wb", permissions=0o600) as f:
        torch.save(ck, f)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _sweep_temp_files(ckdir: Path, name: str = "last.pt") -> None:
    """Remove temporary checkpoint files left by killed writers (call with the folder locked).

    A name carries its writer's pid (``.last.pt.<pid>.<random>.tmp``); the file of a live
    process other than this one is left alone."""
    for stale in ckdir.glob(f".{name}.*.tmp"):
        parts = stale.name[len(name) + 2:].split(".")
        owner = int(parts[0]) if parts and parts[0].isdigit() else None
        if owner is not None and owner != os.getpid() and _pid_alive(owner):
            continue
        with contextlib.suppress(OSError):
            stale.unlink()


class _FolderLock:
    """An exclusive advisory lock on a checkpoint folder (``.lock`` inside it), so two runs never
    write one folder. The holder's pid, host and command line are written into the file for the
    other's error message. Released on :meth:`release` or when the process dies."""

    def __init__(self, ckdir: Path) -> None:
        self.path = ckdir / ".lock"
        self.fd: int | None = None
        if fcntl is None:  # pragma: no cover
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if not isinstance(e, BlockingIOError):  # a file system without locks: run unlocked
                os.close(fd)
                warnings.warn(f"cannot lock checkpoint_dir {ckdir} ({e}); make sure no other run uses it",
                              RuntimeWarning, stacklevel=3)
                return
            try:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            finally:
                os.close(fd)
            try:
                info = json.loads(holder)
                who = (f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}: "
                       f"{info.get('command')}")
            except (ValueError, AttributeError):
                who = "a process that has not written its pid yet"
            raise CheckpointError(
                f"checkpoint_dir {ckdir} is in use by another training run ({who}); two runs writing one "
                "folder overwrite each other's checkpoints: wait for that run to finish (or stop it), "
                "or give this run another checkpoint_dir") from None
        self.fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv[:4])[:300] or sys.executable}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        # weights_only: a checkpoint is data, never code (the RNG states are stored as tensors).
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e).splitlines()[0][:200] if str(e) else ""
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {msg}); "
            "delete it to train from scratch, or pass resume=False") from e
    if isinstance(ck, dict) and ck.get("format") == "ppml.train.checkpoint/1":
        raise CheckpointError(f"checkpoint {path} was written by an older ppml.train (format /1, without "
                              "checksum or run fingerprint) and cannot be verified; delete it to train "
                              "from scratch, or pass resume=False")
    if not isinstance(ck, dict) or ck.get("format") != _CKPT_FORMAT:
        raise CheckpointError(f"{path} is not a ppml.train checkpoint (format {_CKPT_FORMAT}); "
                              "delete it or use another checkpoint_dir")
    want = ck.get("checksum")
    got = _payload_sha256(ck)
    if want != got:
        raise CheckpointError(
            f"checkpoint {path} fails its integrity check (sha256 of its contents {got[:16]}…, recorded "
            f"when written {str(want)[:16]}…): the file was corrupted on disk or in transit; delete it "
            "to train from scratch (or restore a good copy), or pass resume=False")
    return ck


def _arch(model: nn.Module) -> dict[str, Any]:
    return {"class": type(model).__qualname__,
            "tensors": [[k, list(v.shape)] for k, v in model.state_dict().items()]}


def _check_compatible(path: Path, ck: dict[str, Any], arch: dict[str, Any], config: dict[str, Any],
                      fingerprint: dict[str, Any] | None = None) -> None:
    fix = f"delete {path} (or its directory) to start afresh, or use another checkpoint_dir"
    old = ck.get("arch", {})
    if old != arch:
        detail = f"{old.get('class')} vs {arch['class']}"
        old_t = {k: s for k, s in old.get("tensors", [])}
        new_t = {k: s for k, s in arch["tensors"]}
        diff = [k for k in sorted(set(old_t) | set(new_t)) if old_t.get(k) != new_t.get(k)]
        if diff:
            k = diff[0]
            detail += f"; {len(diff)} tensor(s) differ, e.g. {k!r}: {old_t.get(k, 'missing')} vs {new_t.get(k, 'missing')}"
        raise CheckpointError(f"checkpoint {path} was written for a different model architecture "
                              f"(checkpoint vs now: {detail}); {fix}")
    old_c = ck.get("config", {})
    diff = {k: (old_c.get(k), config.get(k)) for k in sorted(set(old_c) | set(config)) if old_c.get(k) != config.get(k)}
    if diff:
        desc = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(f"checkpoint {path} was written with a different training configuration "
                              f"({desc}); {fix}")
    if fingerprint is None:
        return
    old_f = ck.get("fingerprint") or {}
    problems = []
    if old_f.get("data") != fingerprint["data"]:
        problems.append("other training data (same size, different images or labels: content hash "
                        f"{old_f.get('data')} -> {fingerprint['data']})")
    old_t, new_t = old_f.get("transforms") or [], fingerprint["transforms"]
    if len(old_t) != len(new_t):
        problems.append(f"other transforms ({len(old_t)} -> {len(new_t)} transforms: "
                        f"{[t[0] for t in old_t]} -> {[t[0] for t in new_t]})")
    else:
        for i, (a, b) in enumerate(zip(old_t, new_t)):
            if list(a) != list(b):
                problems.append(f"transform {i} changed ({_what_changed(a, b, 'key tables')})")
    if old_f.get("model_tables") != fingerprint["model_tables"]:
        problems.append("a model whose integer buffers differ (the key tables of a cipher inside the model: "
                        "built with another key?)")
    if list(old_f.get("loss") or []) != list(fingerprint["loss"]):
        problems.append(f"another loss ({_what_changed(old_f.get('loss') or ['?', '', ''], fingerprint['loss'], 'tensors')})")
    if problems:
        raise CheckpointError(f"checkpoint {path} belongs to another run: this one has {'; '.join(problems)}. "
                              f"Resuming would mix the two; {fix}")


def _what_changed(a: Sequence[str], b: Sequence[str], tables: str) -> str:
    if a[0] != b[0]:
        return f"{a[0]} -> {b[0]}"
    parts = []
    if a[1] != b[1]:
        parts.append(f"its {tables} differ (another key?)" if tables == "key tables" else f"its {tables} differ")
    if a[2] != b[2]:
        parts.append("its code or settings differ")
    return f"{a[0]}: {' and '.join(parts)}"


def _gather_rng(world: int) -> list[dict[str, Any]]:
    mine = _rng_state()
    if world == 1:
        return [mine]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, mine)
    return out


# --------------------------------------------------------------------------- fit


def fit(model: nn.Module, train_data: Any, *, epochs: int, val_data: Any = None, batch_size: int | None = None,
        transforms: Any = None, val_transforms: EvalTransform | Sequence[EvalTransform] | None = None,
        optimizer: str | Callable[[nn.Module], torch.optim.Optimizer] = "sgd", lr: float = 0.1,
        momentum: float = 0.9, weight_decay: float = 5e-4, nesterov: bool = False,
        betas: tuple[float, float] = (0.9, 0.999), schedule: str = "multistep",
        milestones: Sequence[int] | None = None, gamma: float = 0.1, warmup_epochs: float = 0.0,
        pct_start: float | None = None, loss: LossHook | None = None, label_smoothing: float = 0.0,
        grad_clip: float | None = None, amp: bool = True, amp_dtype: str | None = None,
        device: torch.device | str | None = None, checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = True, seed: int | None = 0, deterministic: bool = False, progress: bool = True,
        select_best: str | None = None, eval_batch_size: int = 256,
        ddp_kwargs: dict[str, Any] | None = None) -> FitResult:
    """Train ``model`` in place and return its :class:`FitResult`.

    Data: ``train_data`` is a :class:`BatchLoader` or anything :meth:`BatchLoader.from_dataset`
    takes (then ``batch_size`` (default 128), ``transforms`` and ``seed`` build the loader).
    ``val_data`` is evaluated after every epoch with :func:`evaluate` (``val_transforms`` for
    test-time averaging).

    Optimisation: ``optimizer`` is ``"sgd"`` (``momentum``, ``nesterov``) or ``"adamw"``
    (``betas``), both with ``lr`` and ``weight_decay`` on every parameter, or a callable
    ``model -> Optimizer`` (its param groups' own learning rates are then the schedule's peak;
    ``lr`` is only recorded). ``schedule`` (stepped after every optimisation step) is one of
    :data:`SCHEDULES`, see :func:`lr_schedule` for ``milestones``, ``gamma``,
    ``warmup_epochs`` and ``pct_start``. ``grad_clip`` clips the global gradient norm.

    Loss: cross-entropy (``label_smoothing``; soft (N, K) targets allowed), or a hook
    ``loss(model, x, y)`` returning a scalar loss or ``(loss, logits)`` (logits give the
    accuracy). The hook receives the (possibly DDP-wrapped) model and runs inside autocast;
    under DDP call the model once per step (concatenate views into one batch).

    Precision: ``amp`` uses autocast on CUDA only — bf16 where supported, else fp16 with a
    ``GradScaler`` (``amp_dtype`` forces one); CPU runs stay in float32 unless ``PPML_CPU_AMP=bf16``
    opts into bf16 autocast (the rehearsal's stand-in for the GPU's mixed precision).

    Rehearsal (``PPML_REHEARSE_STEPS/EPOCHS/BATCH``, see :func:`rehearsal_caps`): at most that
    many steps per epoch, epochs and samples per batch; the schedule is the full run's.

    Checkpoints (``checkpoint_dir``): ``last.pt`` is written atomically after every epoch with
    the model, optimizer, scheduler, scaler, epoch, history, best weights, every rank's RNG
    states, the architecture and training configuration, a fingerprint of the run (a content
    hash of the training data, hashes of the transforms — their key tables included, never
    the keys — and of the loss hook's code and captured values) and a sha256 checksum of it
    all; ``history.json`` beside it. The file is readable by its owner only (mode 0600: a
    model or transform holding a cipher carries its key tables). With ``resume=True`` an
    existing ``last.pt`` is verified and loaded and training continues with the next epoch
    (a finished run returns at once). A checkpoint from another architecture, configuration,
    data set, key or loss, or a corrupt one, raises :class:`CheckpointError` naming the file,
    what differs and the fix. The folder is locked for the whole run: a second run on it
    fails at once with :class:`CheckpointError` naming the process that holds it.

    Reproducibility: ``seed`` seeds everything (rank r uses ``seed + r``) and the loader; with
    the per-epoch loader seeding and restored RNG states, a killed and resumed run ends with the
    same weights as an uninterrupted one (bit for bit on the CPU; on GPUs also pass
    ``deterministic=True``). ``select_best`` (``"val_loss"`` or ``"val_acc"``) keeps the best
    epoch's weights and loads them into ``model`` at the end.

    Distributed: under ``torchrun`` the process group is initialised (NCCL on CUDA, gloo on
    CPU), the model wrapped in ``DistributedDataParallel``, the loader sharded (``batch_size``
    is per process), BatchNorm buffers synchronised from rank 0 after every epoch, metrics
    all-reduced, and only rank 0 writes files (``checkpoint_dir`` must be shared).
    ``ddp_kwargs`` go to ``DistributedDataParallel`` (e.g. ``find_unused_parameters=True``).

    >>> _ = torch.manual_seed(0)
    >>> x = torch.randint(0, 256, (32, 3, 4, 4), dtype=torch.uint8); y = (x.float().mean((1, 2, 3)) > 127).long()
    >>> m = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    >>> r = fit(m, (x, y), epochs=2, batch_size=8, lr=0.05, schedule="cosine", val_data=(x, y))
    >>> len(r.history), sorted(r.final)
    (2, ['epoch', 'lr', 'seconds', 'train_acc', 'train_loss', 'val_acc', 'val_loss'])
    """
    # ---- validate arguments before touching anything
    if not isinstance(epochs, numbers.Integral) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    epochs = int(epochs)
    if not callable(optimizer) and optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)} or a callable model -> Optimizer")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    if select_best not in (None, *_SELECT):
        raise ValueError(f"select_best must be None or one of {', '.join(_SELECT)}, got {select_best!r}")
    if select_best is not None and val_data is None:
        raise ValueError(f"select_best={select_best!r} needs val_data")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if grad_clip is not None and grad_clip <= 0:
        raise ValueError(f"grad_clip must be None or > 0, got {grad_clip}")
    if loss is not None and not callable(loss):
        raise TypeError("loss must be None (cross-entropy) or a callable loss(model, x, y)")
    if seed is not None and seed < 0:
        raise ValueError(f"seed must be None or a non-negative integer, got {seed}")

    model = _unwrap(model)
    want_cpu = device is not None and torch.device(device).type == "cpu"
    rank, world, local_rank = init_distributed("gloo" if want_cpu else None)
    dev = _resolve_device(device, local_rank, world > 1)
    amp_on, amp_type = _amp_settings(amp, amp_dtype, dev)
    if seed is not None:
        seed_everything(seed + rank, deterministic)

    loader = _as_loader(train_data, batch_size, shuffle=True, transforms=transforms, seed=seed or 0, what="train_data")
    if world > 1 and (loader.world_size, loader.rank) != (world, rank):
        loader = copy.copy(loader)
        loader.set_shard(rank, world)
    cap_steps, cap_epochs, cap_batch = rehearsal_caps()
    if cap_batch is not None and loader.batch_size > cap_batch:
        loader = copy.copy(loader)
        loader.batch_size = cap_batch
    steps = len(loader)
    if steps == 0:
        raise ValueError(f"the training loader yields no batch (n={loader.dataset_size}, "
                         f"batch_size={loader.batch_size}, drop_last={loader.drop_last})")

    model.to(dev)
    if callable(optimizer):
        opt = optimizer(model)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError("the optimizer callable must return a torch.optim.Optimizer")
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(
        schedule, epochs=epochs, steps_per_epoch=steps, milestones=milestones, gamma=gamma,
        warmup_epochs=warmup_epochs, pct_start=pct_start))
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_on and amp_type == torch.float16)

    config = json.loads(json.dumps({
        "epochs": epochs, "optimizer": _name(optimizer), "lr": lr, "momentum": momentum,
        "weight_decay": weight_decay, "nesterov": nesterov, "betas": list(betas), "schedule": schedule,
        "milestones": None if milestones is None else list(milestones), "gamma": gamma,
        "warmup_epochs": warmup_epochs, "pct_start": pct_start,
        "loss": "cross_entropy" if loss is None else _name(loss), "label_smoothing": label_smoothing,
        "grad_clip": grad_clip, "seed": seed, "batch_size": loader.batch_size,
        "train_size": loader.dataset_size, "steps_per_epoch": steps, "world_size": world,
        "select_best": select_best,
    }))
    arch = _arch(model)

    history: list[dict[str, Any]] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch: int | None = None
    best_metric: float | None = None
    start = 0
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    last = ckdir / "last.pt" if ckdir is not None else None
    lock: _FolderLock | None = None
    if ckdir is not None and rank == 0:
        ckdir.mkdir(parents=True, exist_ok=True)
        lock = _FolderLock(ckdir)  # before touching any file in it
    try:  # the folder stays locked until the run ends, however it ends
        if lock is not None:
            _sweep_temp_files(ckdir)  # left by a kill during a save
        fingerprint = _fingerprint(loader, loss, model) if last is not None else None
        if last is not None and resume and last.exists():
            ck = _load_checkpoint(last)
            _check_compatible(last, ck, arch, config, fingerprint)
            try:
                model.load_state_dict(ck["model"])
                opt.load_state_dict(ck["optimizer"])
                sched.load_state_dict(ck["scheduler"])
                if scaler.is_enabled() and ck.get("scaler"):
                    scaler.load_state_dict(ck["scaler"])
            except (KeyError, RuntimeError, ValueError) as e:
                raise CheckpointError(f"checkpoint {last} does not fit this run ({type(e).__name__}: {e}); "
                                      f"delete it or use another checkpoint_dir") from e
            start = int(ck["epoch"])
            history = list(ck["history"])
            best_state, best_epoch, best_metric = ck.get("best_model"), ck.get("best_epoch"), ck.get("best_metric")
            rngs = ck.get("rng") or []
            if len(rngs) == world:
                _set_rng_state(rngs[rank])
        resumed_from = start

        net: nn.Module = model
        if world > 1:
            net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                                      **(ddp_kwargs or {}))
        loss_fn: LossHook = loss if loss is not None else (
            lambda m, x, y: (lambda out: (_ce(out, y, label_smoothing=label_smoothing), out))(m(x)))
        show = progress and rank == 0 and not quiet()
        loss_name = _name(loss_fn)

        for epoch in range(start, epochs if cap_epochs is None else min(epochs, start + cap_epochs)):
            t0 = time.perf_counter()
            loader.set_epoch(epoch)
            model.train()
            sums = torch.zeros(4, dtype=torch.float64, device=dev)  # loss_sum, correct, n_with_logits, n
            last_lr = opt.param_groups[0]["lr"]
            every = max(1, steps // 10)
            with _progress(total=steps, desc=f"epoch {epoch + 1}/{epochs}", disable=not show, leave=True) as bar:
                for i, (x, y) in enumerate(loader):
                    if cap_steps is not None and i >= cap_steps:
                        break  # a rehearsal: the paper's configuration, a few steps only
                    x = x.to(dev, non_blocking=True)
                    y = y.to(dev, non_blocking=True)
                    with _autocast(amp_on, amp_type, dev):
                        lv, logits = _unpack_loss(loss_fn(net, x, y), loss_name)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(lv).backward()
                    if grad_clip is not None:
                        scaler.unscale_(opt)
                        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                    scaler.step(opt)
                    scaler.update()
                    last_lr = opt.param_groups[0]["lr"]
                    with warnings.catch_warnings():
                        # fp16 steps skipped by the GradScaler make LambdaLR warn about the call order.
                        warnings.simplefilter("ignore", UserWarning)
                        sched.step()
                    n = len(x)
                    sums[0] += lv.detach().double() * n
                    if logits is not None:
                        sums[1] += (logits.detach().argmax(1) == _hard(y)).sum()
                        sums[2] += n
                    sums[3] += n
                    bar.update(1)
                    if show and ((i + 1) % every == 0 or i + 1 == steps):
                        s = sums.tolist()
                        post = {"loss": f"{s[0] / s[3]:.4f}"}
                        if s[2]:
                            post["acc"] = f"{s[1] / s[2]:.4f}"
                        bar.set_postfix(post)
                if world > 1:
                    dist.all_reduce(sums)
                    # DDP keeps parameters in sync but BatchNorm statistics drift per rank: adopt rank 0's.
                    for b in model.buffers():
                        dist.broadcast(b, 0)
                s = sums.tolist()
                rec: dict[str, Any] = {"epoch": epoch + 1, "train_loss": s[0] / s[3],
                                       "train_acc": s[1] / s[2] if s[2] else None,
                                       "val_loss": None, "val_acc": None, "lr": last_lr}
                if not math.isfinite(rec["train_loss"]):
                    raise FloatingPointError(
                        f"the training loss became {rec['train_loss']} in epoch {epoch + 1}: the run diverged; "
                        "lower lr, add warmup_epochs or set grad_clip")
                if val_data is not None:
                    v = evaluate(model, val_data, transforms=val_transforms, device=dev, batch_size=eval_batch_size,
                                 loss=loss, amp=amp, amp_dtype=amp_dtype, distributed=world > 1)
                    rec["val_loss"], rec["val_acc"] = v["loss"], v["acc"]
                rec["seconds"] = time.perf_counter() - t0
                if show:
                    bar.set_postfix({k: f"{rec[k]:.4f}" for k in ("train_loss", "train_acc", "val_loss", "val_acc")
                                     if rec[k] is not None})
            history.append(rec)

            if select_best is not None:
                metric = rec[select_best]
                if metric is None:
                    raise ValueError(f"select_best={select_best!r}: the validation gives no {select_best} "
                                     "(a loss hook must return (loss, logits) for accuracies)")
                if best_metric is None or (metric < best_metric if select_best == "val_loss" else metric > best_metric):
                    best_metric, best_epoch = metric, epoch + 1
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

            rngs = _gather_rng(world) if last is not None else []
            if last is not None and rank == 0:
                ck = {"format": _CKPT_FORMAT, "epoch": epoch + 1, "model": model.state_dict(),
                      "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                      "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "history": history,
                      "best_model": best_state, "best_epoch": best_epoch, "best_metric": best_metric,
                      "rng": rngs, "arch": arch, "config": config, "fingerprint": fingerprint}
                _save_checkpoint(last, ck)
                FitResult(history, best_epoch, best_metric, select_best, resumed_from, str(ckdir), config
                          ).save(ckdir / "history.json")
            if world > 1:
                dist.barrier()

        if select_best is not None and best_state is not None:
            model.load_state_dict(best_state)
        return FitResult(history, best_epoch, best_metric, select_best, resumed_from,
                         str(ckdir) if ckdir is not None else None, config)
    finally:
        if lock is not None:
            lock.release()
