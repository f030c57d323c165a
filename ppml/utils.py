"""Small shared helpers: atomic file writes and a progress bar that is quiet under tests.

Every result, figure, key and checkpoint the package writes goes through
:func:`atomic_write` so that a crash or a kill never leaves a truncated file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "quiet", "progress"]


def _read_umask() -> int:
    # Read once, at import: os.umask can only be read by setting it, which would race with
    # other threads (Jupyter, loader workers) creating files at the same moment.
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_UMASK = _read_umask()


def _default_permissions() -> int:
    return 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, permissions: int | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched. The file
    gets ``permissions`` (default: what ``open`` would give, ``0o666`` minus the umask; pass
    ``0o600`` for secrets such as keys).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_write(p, "w") as f:
    ...     _ = f.write("hello")
    >>> p.read_text()
    'hello'
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write supports mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name carries this process's id, so a sweep can spare live writers' files.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            # permissions first: a secret is never readable by others, not even half-written
            os.fchmod(f.fileno(), _default_permissions() if permissions is None else permissions)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, permissions: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb", permissions=permissions) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, permissions: int | None = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w", permissions=permissions) as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, permissions: int | None = None, **kw: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (``kw`` go to ``json.dumps``)."""
    kw.setdefault("indent", 2)
    atomic_write_text(path, json.dumps(obj, **kw) + "\n", permissions=permissions)


def quiet() -> bool:
    """True when progress bars should be hidden: under pytest, or ``PPML_QUIET=1``."""
    return bool(os.environ.get("PYTEST_CURRENT_TEST")) or os.environ.get("PPML_QUIET", "") not in ("", "0")


def progress(iterable: Iterable | None = None, **kw: Any):
    """``tqdm`` that is disabled under tests (see :func:`quiet`); same arguments as tqdm.

    A notebook widget bar where ipywidgets is installed, else the text bar: ``tqdm.auto``
    without ipywidgets warns "IProgress not found" into every notebook that imports it.
    """
    try:
        import ipywidgets  # noqa: F401

        from tqdm.auto import tqdm
    except ImportError:
        from tqdm.std import tqdm

    kw.setdefault("disable", quiet())
    kw.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kw)


def best_time(fn: Callable[[], Any], repeats: int = 3, device: Any = None) -> tuple[float, float]:
    """Best-of-``repeats`` wall and process-CPU seconds of ``fn()`` (for benchmarks).

    On a CUDA ``device`` the GPU is synchronised before and after each call, so the wall time
    includes the kernels ``fn`` queued.

    >>> wall, cpu = best_time(lambda: sum(range(1000)), repeats=2)
    >>> 0 <= wall < 1 and 0 <= cpu < 1
    True
    """
    import time

    import torch

    cuda = device is not None and torch.device(device).type == "cuda"
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(max(1, int(repeats))):
        if cuda:
            torch.cuda.synchronize()
        w, c = time.perf_counter(), time.process_time()
        fn()
        if cuda:
            torch.cuda.synchronize()
        best_wall = min(best_wall, time.perf_counter() - w)
        best_cpu = min(best_cpu, time.process_time() - c)
    return best_wall, best_cpu
