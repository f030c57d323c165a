""":func:`fit`: the training loop, its per-epoch checkpoints and automatic resume."""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn as nn

from ..loader import BatchLoader
from ..utils import atomic_write_json, progress as _progress, quiet
from ._runtime import (LossHook, _autocast, _name, _resolve_device, _set_rng_state, _unwrap, amp_settings,
                       cpu_channels_last_pays, init_distributed, rehearsal_caps, seed_everything)
from .checkpoint import (_CKPT_FORMAT, CheckpointError, _arch, _check_compatible, _fingerprint, _FolderLock,
                         _gather_rng, _load_checkpoint, _save_checkpoint, _sweep_temp_files)
from .config import TrainConfig
from .inference import Tally, _ce, _unpack_loss, evaluate
from .schedules import lr_schedule


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

    def save(self, path: str | Path) -> None:
        """Write the result as JSON, atomically."""
        atomic_write_json(path, self.to_dict())


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


@dataclass
class _Run:
    """The live state of one training run (what an epoch reads and a checkpoint stores)."""

    cfg: TrainConfig
    model: nn.Module
    net: nn.Module  # the model, DDP-wrapped when distributed
    loader: BatchLoader
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    dev: torch.device
    amp: tuple[bool, torch.dtype]
    rank: int
    world: int
    cap_steps: int | None
    loss_fn: LossHook
    show: bool
    channels_last: bool = False

    @property
    def steps(self) -> int:
        return len(self.loader)


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if callable(cfg.optimizer):
        opt = cfg.optimizer(model)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError("the optimizer callable must return a torch.optim.Optimizer")
        return opt
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def _start(model: nn.Module, train_data: Any, cfg: TrainConfig) -> _Run:
    """Join the process group, place the model, seed, build loader, optimizer and schedule
    (in this order: the RNG draws of a run depend on it)."""
    want_cpu = cfg.device is not None and torch.device(cfg.device).type == "cpu"
    rank, world, local_rank = init_distributed("gloo" if want_cpu else None)
    dev = _resolve_device(cfg.device, local_rank, world > 1)
    amp = amp_settings(cfg.amp, cfg.amp_dtype, dev, model)
    if cfg.seed is not None:
        seed_everything(cfg.seed + rank, cfg.deterministic)

    loader = _as_loader(train_data, cfg.batch_size, shuffle=True, transforms=cfg.transforms, seed=cfg.seed or 0,
                        what="train_data")
    if world > 1 and (loader.world_size, loader.rank) != (world, rank):
        loader = copy.copy(loader)
        loader.set_shard(rank, world)
    cap_steps, _, cap_batch = rehearsal_caps()
    if cap_batch is not None and loader.batch_size > cap_batch:
        loader = copy.copy(loader)
        loader.batch_size = cap_batch
    if len(loader) == 0:
        raise ValueError(f"the training loader yields no batch (n={loader.dataset_size}, "
                         f"batch_size={loader.batch_size}, drop_last={loader.drop_last})")

    model.to(dev)
    channels_last = cfg.channels_last if isinstance(cfg.channels_last, bool) else (
        dev.type == "cpu" and cpu_channels_last_pays(model))
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = _optimizer(cfg, model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(
        cfg.schedule, epochs=cfg.epochs, steps_per_epoch=len(loader), milestones=cfg.milestones, gamma=cfg.gamma,
        warmup_epochs=cfg.warmup_epochs, pct_start=cfg.pct_start))
    scaler = torch.amp.GradScaler(dev.type, enabled=amp[0] and amp[1] == torch.float16)
    ls = cfg.label_smoothing
    loss_fn: LossHook = cfg.loss if cfg.loss is not None else (
        lambda m, x, y: (lambda out: (_ce(out, y, label_smoothing=ls), out))(m(x)))
    return _Run(cfg, model, model, loader, opt, sched, scaler, dev, amp, rank, world, cap_steps, loss_fn,
                show=cfg.progress and rank == 0 and not quiet(), channels_last=channels_last)


def _train_epoch(run: _Run, epoch: int, bar: Any) -> dict[str, Any]:
    """One epoch of optimisation steps; returns the epoch's record without validation."""
    model, opt, scaler, dev = run.model, run.opt, run.scaler, run.dev
    run.loader.set_epoch(epoch)
    model.train()
    tally = Tally(dev)
    last_lr = opt.param_groups[0]["lr"]
    steps, every, loss_name = run.steps, max(1, run.steps // 10), _name(run.loss_fn)
    for i, (x, y) in enumerate(run.loader):
        if run.cap_steps is not None and i >= run.cap_steps:
            break  # a rehearsal: the paper's configuration, a few steps only
        x = x.to(dev, non_blocking=True)
        y = y.to(dev, non_blocking=True)
        if run.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(*run.amp, dev):
            lv, logits = _unpack_loss(run.loss_fn(run.net, x, y), loss_name)
        opt.zero_grad(set_to_none=True)
        scaler.scale(lv).backward()
        if run.cfg.grad_clip is not None:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), run.cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        last_lr = opt.param_groups[0]["lr"]
        with warnings.catch_warnings():
            # fp16 steps skipped by the GradScaler make LambdaLR warn about the call order.
            warnings.simplefilter("ignore", UserWarning)
            run.sched.step()
        n = len(x)
        tally.add(lv.detach().double() * n, n, None if logits is None else logits.detach(), y)
        bar.update(1)
        if run.show and ((i + 1) % every == 0 or i + 1 == steps):
            s = tally.summary()
            bar.set_postfix({"loss": f"{s['loss']:.4f}", **({"acc": f"{s['acc']:.4f}"} if s["acc"] is not None else {})})
    if run.world > 1:
        tally.all_reduce()
        # DDP keeps parameters in sync but BatchNorm statistics drift per rank: adopt rank 0's.
        for b in model.buffers():
            dist.broadcast(b, 0)
    s = tally.summary()
    if not math.isfinite(s["loss"]):
        raise FloatingPointError(f"the training loss became {s['loss']} in epoch {epoch + 1}: the run diverged; "
                                 "lower lr, add warmup_epochs or set grad_clip")
    return {"epoch": epoch + 1, "train_loss": s["loss"], "train_acc": s["acc"], "val_loss": None, "val_acc": None,
            "lr": last_lr}


@dataclass
class _Best:
    """The best epoch so far under ``select_best`` (its weights on the CPU)."""

    select: str | None
    state: dict[str, torch.Tensor] | None = None
    epoch: int | None = None
    metric: float | None = None

    def update(self, rec: dict[str, Any], model: nn.Module) -> None:
        if self.select is None:
            return
        metric = rec[self.select]
        if metric is None:
            raise ValueError(f"select_best={self.select!r}: the validation gives no {self.select} "
                             "(a loss hook must return (loss, logits) for accuracies)")
        if self.metric is None or (metric < self.metric if self.select == "val_loss" else metric > self.metric):
            self.metric, self.epoch = metric, rec["epoch"]
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _resume(run: _Run, last: Path, arch: dict[str, Any], record: dict[str, Any], fingerprint: dict[str, Any],
            best: _Best) -> tuple[int, list[dict[str, Any]]]:
    """Load a verified ``last.pt`` into the run; returns (epochs done, history)."""
    ck = _load_checkpoint(last)
    _check_compatible(last, ck, arch, record, fingerprint)
    try:
        run.model.load_state_dict(ck["model"])
        run.opt.load_state_dict(ck["optimizer"])
        run.sched.load_state_dict(ck["scheduler"])
        if run.scaler.is_enabled() and ck.get("scaler"):
            run.scaler.load_state_dict(ck["scaler"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {last} does not fit this run ({type(e).__name__}: {e}); "
                              f"delete it or use another checkpoint_dir") from e
    best.state, best.epoch, best.metric = ck.get("best_model"), ck.get("best_epoch"), ck.get("best_metric")
    rngs = ck.get("rng") or []
    if len(rngs) == run.world:
        _set_rng_state(rngs[run.rank])
    return int(ck["epoch"]), list(ck["history"])


def fit(model: nn.Module, train_data: Any, *, val_data: Any = None, config: TrainConfig | None = None,
        **options: Any) -> FitResult:
    """Train ``model`` in place and return its :class:`FitResult`.

    Options are the fields of :class:`TrainConfig` (``epochs`` is required), given as keyword
    arguments, as ``config=TrainConfig(...)``, or both (the keywords replace the config's fields).
    ``train_data`` is a :class:`BatchLoader` or anything :meth:`BatchLoader.from_dataset` takes
    (then ``batch_size`` (default 128), ``transforms`` and ``seed`` build the loader).
    ``val_data`` is evaluated after every epoch with :func:`evaluate` (``val_transforms`` for
    test-time averaging). The schedule is stepped after every optimisation step.

    Loss: cross-entropy (``label_smoothing``; soft (N, K) targets allowed), or a hook
    ``loss(model, x, y)`` returning a scalar loss or ``(loss, logits)`` (logits give the
    accuracy). The hook receives the (possibly DDP-wrapped) model and runs inside autocast;
    under DDP call the model once per step (concatenate views into one batch).

    Precision (``amp``, see :func:`amp_settings`): ``"auto"`` autocasts on CUDA (bf16 where
    supported, else fp16 with a ``GradScaler``; ``amp_dtype`` forces one) and on the CPU in bf16
    only where :func:`cpu_bf16_pays` for the model (never for the notebooks' smoke models);
    ``True`` autocasts on the CPU too, ``False`` never. ``PPML_CPU_AMP=bf16`` turns CPU bf16 on
    (the rehearsal's stand-in for the GPU's mixed precision).

    Rehearsal (``PPML_REHEARSE_STEPS/EPOCHS/BATCH``, see :func:`rehearsal_caps`): at most that
    many steps per epoch, epochs and samples per batch; the schedule is the full run's.

    Checkpoints (``checkpoint_dir``): ``last.pt`` is written atomically after every epoch with
    the model, optimizer, scheduler, scaler, epoch, history, best weights, every rank's RNG
    states, the architecture and training configuration (:meth:`TrainConfig.record`), a
    fingerprint of the run (a content hash of the training data, hashes of the transforms —
    their key tables included, never the keys — and of the loss hook's code and captured
    values) and a sha256 checksum of it all; ``history.json`` beside it. The file is readable
    by its owner only (mode 0600: a model or transform holding a cipher carries its key
    tables). With ``resume=True`` an existing ``last.pt`` is verified and loaded and training
    continues with the next epoch (a finished run returns at once). A checkpoint from another
    architecture, configuration, data set, key or loss, or a corrupt one, raises
    :class:`CheckpointError` naming the file, what differs and the fix. The folder is locked for
    the whole run: a second run on it fails at once with :class:`CheckpointError` naming the
    process that holds it.

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
    cfg = TrainConfig.from_options(config, options)
    if cfg.select_best is not None and val_data is None:
        raise ValueError(f"select_best={cfg.select_best!r} needs val_data")
    model = _unwrap(model)
    run = _start(model, train_data, cfg)
    record = json.loads(json.dumps({**cfg.record(), "batch_size": run.loader.batch_size,
                                    "train_size": run.loader.dataset_size, "steps_per_epoch": run.steps,
                                    "world_size": run.world}))
    arch = _arch(model)

    history: list[dict[str, Any]] = []
    best = _Best(cfg.select_best)
    start = 0
    ckdir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir is not None else None
    last = ckdir / "last.pt" if ckdir is not None else None
    lock: _FolderLock | None = None
    if ckdir is not None and run.rank == 0:
        ckdir.mkdir(parents=True, exist_ok=True)
        lock = _FolderLock(ckdir)  # before touching any file in it
    try:  # the folder stays locked until the run ends, however it ends
        if lock is not None:
            _sweep_temp_files(ckdir)  # left by a kill during a save
        fingerprint = _fingerprint(run.loader, cfg.loss, model) if last is not None else None
        if last is not None and cfg.resume and last.exists():
            start, history = _resume(run, last, arch, record, fingerprint, best)
        resumed_from = start

        if run.world > 1:
            run.net = nn.parallel.DistributedDataParallel(
                model, device_ids=[run.dev.index] if run.dev.type == "cuda" else None, **(cfg.ddp_kwargs or {}))
        cap_epochs = rehearsal_caps()[1]
        for epoch in range(start, cfg.epochs if cap_epochs is None else min(cfg.epochs, start + cap_epochs)):
            t0 = time.perf_counter()
            with _progress(total=run.steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not run.show,
                           leave=True) as bar:
                rec = _train_epoch(run, epoch, bar)
                if val_data is not None:
                    v = evaluate(model, val_data, transforms=cfg.val_transforms, device=run.dev,
                                 batch_size=cfg.eval_batch_size, loss=cfg.loss, amp=cfg.amp, amp_dtype=cfg.amp_dtype,
                                 distributed=run.world > 1)
                    rec["val_loss"], rec["val_acc"] = v["loss"], v["acc"]
                rec["seconds"] = time.perf_counter() - t0
                if run.show:
                    bar.set_postfix({k: f"{rec[k]:.4f}" for k in ("train_loss", "train_acc", "val_loss", "val_acc")
                                     if rec[k] is not None})
            history.append(rec)
            best.update(rec, model)

            rngs = _gather_rng(run.world) if last is not None else []
            if last is not None and run.rank == 0:
                _save_checkpoint(last, {
                    "format": _CKPT_FORMAT, "epoch": epoch + 1, "model": model.state_dict(),
                    "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
                    "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else {}, "history": history,
                    "best_model": best.state, "best_epoch": best.epoch, "best_metric": best.metric,
                    "rng": rngs, "arch": arch, "config": record, "fingerprint": fingerprint})
                FitResult(history, best.epoch, best.metric, cfg.select_best, resumed_from, str(ckdir), record
                          ).save(ckdir / "history.json")
            if run.world > 1:
                dist.barrier()

        if best.state is not None:
            model.load_state_dict(best.state)
        return FitResult(history, best.epoch, best.metric, cfg.select_best, resumed_from,
                         str(ckdir) if ckdir is not None else None, record)
    finally:
        if lock is not None:
            lock.release()
