"""Training and evaluation: ``fit``, ``evaluate`` (with test-time averaging), ``predict``.

One loop serves every notebook, from a 30-second smoke run on a CPU to a multi-GPU paper-scale
run under ``torchrun``:

* optimisers ``"sgd"`` / ``"adamw"`` (or a callable) and the papers' schedules, stepped per
  optimisation step (see :func:`lr_schedule`);
* mixed precision (``amp="auto"``): on CUDA bf16 where supported, else fp16 with a
  ``GradScaler``; on the CPU bf16 only where it is measured to pay (:func:`cpu_bf16_pays`);
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

Modules: :mod:`.config` (:class:`TrainConfig`, the one list of options), :mod:`.loop` (fit),
:mod:`.inference` (evaluate / predict / test-time averaging, the shared prediction loop and
:class:`Tally`), :mod:`.checkpoint` (hashing, atomic files, resume checks), :mod:`.schedules`,
:mod:`._runtime` (seeding, devices, DDP, AMP).
"""

from ._runtime import (AMP_MODES, amp_settings, cpu_bf16_pays, cpu_channels_last_pays, init_distributed, rehearsal_caps,
                       seed_everything)
from .checkpoint import CheckpointError
from .config import OPTIMIZERS, TrainConfig
from .loop import FitResult, fit
from .inference import AVERAGES, Tally, evaluate, evaluate_views, predict, predict_datamix, predict_views
from .schedules import SCHEDULES, lr_schedule

__all__ = [
    "AMP_MODES", "AVERAGES", "OPTIMIZERS", "SCHEDULES", "CheckpointError", "FitResult", "Tally", "TrainConfig",
    "amp_settings", "cpu_bf16_pays", "cpu_channels_last_pays", "evaluate", "evaluate_views", "fit", "init_distributed",
    "lr_schedule", "predict", "predict_datamix", "predict_views", "rehearsal_caps", "seed_everything",
]
