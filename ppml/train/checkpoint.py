"""Checkpoints of :func:`ppml.train.fit`: canonical hashing (checksums, run fingerprints),
atomic 0600 writes through :func:`ppml.utils.atomic_write`, verified loads, the folder lock,
and the compatibility check that refuses to resume another run's checkpoint."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import socket
import sys
import time
import types
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from ..loader import BatchLoader
from ..utils import atomic_write
from ._runtime import LossHook, _name, _rng_state

try:  # POSIX advisory locks; elsewhere a checkpoint folder is not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["CheckpointError"]

_CKPT_FORMAT = "ppml.train.checkpoint/2"  # /2: sha256 checksum and run fingerprint


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: corrupt, truncated, or written for another model/config."""



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
