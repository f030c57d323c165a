"""``TrainConfig``: the one list of :func:`ppml.train.fit`'s options.

Every option is one dataclass field that declares, beside its default, how it is validated
(``check``) and whether it enters the run's record — the ``config`` of :class:`FitResult` and
``history.json``, which a resumed run must match (``record``). Validation and that record are
derived from the fields, so a new option cannot be left out of either (a test asserts that
every field declares both).
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import os
from dataclasses import MISSING, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn

from ._runtime import EvalTransform, LossHook, _name
from .schedules import SCHEDULES

OPTIMIZERS = ("sgd", "adamw")
SELECT = ("val_loss", "val_acc")


# ---- checks: value -> normalised value, or one clear error naming the problem and the fix


def _epochs(v: Any) -> int:
    if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {v!r}")
    return int(v)


def _optimizer(v: Any) -> Any:
    if not callable(v) and v not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {v!r}; valid: {', '.join(OPTIMIZERS)} or a callable model -> Optimizer")
    return v


def _schedule(v: Any) -> str:
    if v not in SCHEDULES:
        raise ValueError(f"unknown schedule {v!r}; valid: {', '.join(SCHEDULES)}")
    return v


def _select_best(v: Any) -> str | None:
    if v not in (None, *SELECT):
        raise ValueError(f"select_best must be None or one of {', '.join(SELECT)}, got {v!r}")
    return v


def _lr(v: Any) -> Any:
    if v <= 0:
        raise ValueError(f"lr must be > 0, got {v}")
    return v


def _label_smoothing(v: Any) -> Any:
    if not 0.0 <= v < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {v}")
    return v


def _grad_clip(v: Any) -> Any:
    if v is not None and v <= 0:
        raise ValueError(f"grad_clip must be None or > 0, got {v}")
    return v


def _loss(v: Any) -> Any:
    if v is not None and not callable(v):
        raise TypeError("loss must be None (cross-entropy) or a callable loss(model, x, y)")
    return v


def _seed(v: Any) -> Any:
    if v is not None and v < 0:
        raise ValueError(f"seed must be None or a non-negative integer, got {v}")
    return v


def _auto_or_bool(name: str, auto: str) -> Callable[[Any], Any]:
    """Check for a switch that is ``"auto"`` (``auto`` says what that does), True or False."""
    def check(v: Any) -> Any:
        if not (v is True or v is False or v == "auto"):
            raise ValueError(f"{name} must be 'auto' ({auto}), True or False, got {v!r}")
        return v
    return check


def _amp_dtype(v: Any) -> Any:
    if v not in (None, "bf16", "fp16"):
        raise ValueError(f"amp_dtype must be None, 'bf16' or 'fp16', got {v!r}")
    return v


def _positive_or_none(name: str) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if v is not None and (not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1):
            raise ValueError(f"{name} must be None or an integer >= 1, got {v!r}")
        return v
    return check


def _list_or_none(v: Any) -> list | None:
    return None if v is None else list(v)


def _opt(default: Any = MISSING, *, record: bool | Callable[[Any], Any],
         check: Callable[[Any], Any] | None) -> Any:
    """A field of :class:`TrainConfig`: ``record`` is False, True (the value as is) or a function
    giving the recorded value; ``check`` normalises the value or raises (None: any value)."""
    md = {"record": record, "check": check}
    return field(metadata=md) if default is MISSING else field(default=default, metadata=md)


@dataclass(frozen=True)
class TrainConfig:
    """Every option of :func:`ppml.train.fit`, validated on construction.

    Data: ``batch_size`` (default 128) and ``transforms`` (batch augmentation) build the loader
    when ``train_data`` is not a :class:`~ppml.loader.BatchLoader`; ``val_transforms`` are
    test-time transforms of the validation (see :func:`ppml.train.evaluate`).

    Optimisation: ``optimizer`` ``"sgd"`` (``momentum``, ``nesterov``) or ``"adamw"``
    (``betas``), both with ``lr`` and ``weight_decay`` on every parameter, or a callable
    ``model -> Optimizer`` (its param groups' own learning rates are the schedule's peak; ``lr``
    is only recorded). ``schedule`` is one of :data:`SCHEDULES` with ``milestones``, ``gamma``,
    ``warmup_epochs`` and ``pct_start`` (see :func:`ppml.train.lr_schedule`). ``grad_clip``
    clips the global gradient norm.

    Loss: cross-entropy with ``label_smoothing``, or a hook ``loss(model, x, y)`` returning a
    scalar loss or ``(loss, logits)``.

    Precision and placement: ``amp`` ``"auto"`` / True / False and ``amp_dtype`` (see
    :func:`ppml.train.amp_settings`); ``channels_last`` trains model and batches in
    ``torch.channels_last`` memory format: ``"auto"`` on the CPU where
    :func:`ppml.train.cpu_channels_last_pays` (small convolutional models: 1.3-2.1x in
    ``benchmarks/train.py``), True always, False never (same maths, other kernels: results may
    differ from NCHW in the last bits);
    ``device`` (default: CUDA if available).

    Run: ``checkpoint_dir`` and ``resume``; ``seed`` and ``deterministic``; ``progress`` bars;
    ``select_best`` (``"val_loss"``/``"val_acc"``); ``eval_batch_size``; ``ddp_kwargs`` for
    ``DistributedDataParallel``.

    >>> c = TrainConfig(epochs=3, lr=0.05)
    >>> c.schedule, c.record()["lr"]
    ('multistep', 0.05)
    >>> TrainConfig(epochs=3, schedule="step")
    Traceback (most recent call last):
    ...
    ValueError: unknown schedule 'step'; valid: multistep, cosine, onecycle, triangular, constant
    """

    epochs: int = _opt(record=True, check=_epochs)
    batch_size: int | None = _opt(None, record=True, check=_positive_or_none("batch_size"))
    transforms: Any = _opt(None, record=False, check=None)  # hashed into the run fingerprint instead
    val_transforms: EvalTransform | Sequence[EvalTransform] | None = _opt(None, record=False, check=None)
    optimizer: str | Callable[[nn.Module], torch.optim.Optimizer] = _opt("sgd", record=_name, check=_optimizer)
    lr: float = _opt(0.1, record=True, check=_lr)
    momentum: float = _opt(0.9, record=True, check=None)
    weight_decay: float = _opt(5e-4, record=True, check=None)
    nesterov: bool = _opt(False, record=True, check=None)
    betas: tuple[float, float] = _opt((0.9, 0.999), record=list, check=tuple)
    schedule: str = _opt("multistep", record=True, check=_schedule)
    milestones: Sequence[int] | None = _opt(None, record=_list_or_none, check=None)
    gamma: float = _opt(0.1, record=True, check=None)
    warmup_epochs: float = _opt(0.0, record=True, check=None)
    pct_start: float | None = _opt(None, record=True, check=None)
    loss: LossHook | None = _opt(None, record=lambda v: "cross_entropy" if v is None else _name(v), check=_loss)
    label_smoothing: float = _opt(0.0, record=True, check=_label_smoothing)
    grad_clip: float | None = _opt(None, record=True, check=_grad_clip)
    # Precision, placement and bookkeeping may change between a run and its resumption.
    amp: bool | str = _opt("auto", record=False, check=_auto_or_bool("amp", "mixed precision where it pays"))
    amp_dtype: str | None = _opt(None, record=False, check=_amp_dtype)
    channels_last: bool | str = _opt("auto", record=False, check=_auto_or_bool(
        "channels_last", "on the CPU where it pays, see ppml.train.cpu_channels_last_pays"))
    device: torch.device | str | None = _opt(None, record=False, check=None)
    checkpoint_dir: str | os.PathLike | None = _opt(None, record=False, check=None)
    resume: bool = _opt(True, record=False, check=None)
    seed: int | None = _opt(0, record=True, check=_seed)
    deterministic: bool = _opt(False, record=False, check=None)
    progress: bool = _opt(True, record=False, check=None)
    select_best: str | None = _opt(None, record=True, check=_select_best)
    eval_batch_size: int = _opt(256, record=False, check=_positive_or_none("eval_batch_size"))
    ddp_kwargs: Mapping[str, Any] | None = _opt(None, record=False, check=None)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check = f.metadata["check"]
            if check is not None:
                object.__setattr__(self, f.name, check(getattr(self, f.name)))

    def record(self) -> dict[str, Any]:
        """The recorded options (``record`` fields), as :func:`fit` stores them before adding
        what it derives (the loader's batch size, data size, steps per epoch, world size)."""
        out = {}
        for f in dataclasses.fields(self):
            how = f.metadata["record"]
            if how:
                v = getattr(self, f.name)
                out[f.name] = v if how is True else how(v)
        return out

    @classmethod
    def from_options(cls, config: TrainConfig | None = None, options: Mapping[str, Any] | None = None) -> TrainConfig:
        """``config`` with ``options`` (keyword arguments of :func:`fit`) replacing its fields;
        an unknown option raises ``TypeError`` naming the nearest valid one.

        >>> TrainConfig.from_options(TrainConfig(epochs=2), {"lr": 0.5}).lr
        0.5
        >>> TrainConfig.from_options(None, {"epochs": 1, "weight_decy": 0.5})
        Traceback (most recent call last):
        ...
        TypeError: fit() got an unknown option 'weight_decy' (did you mean 'weight_decay'?); valid options: ...
        """
        options = dict(options or {})
        names = [f.name for f in dataclasses.fields(cls)]
        for k in options:
            if k not in names:
                near = difflib.get_close_matches(k, names, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise TypeError(f"fit() got an unknown option {k!r}{hint}; valid options: {', '.join(names)}")
        if config is not None:
            if not isinstance(config, cls):
                raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
            return dataclasses.replace(config, **options) if options else config
        if "epochs" not in options:
            raise TypeError("fit() needs epochs=N (or config=TrainConfig(epochs=N, ...))")
        return cls(**options)
