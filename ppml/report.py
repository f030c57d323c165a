"""What a notebook writes: figures, tables and ``results.json``, always with the scale.

Every notebook makes one :class:`Report` and saves each of its paper artifacts through it::

    rep = Report("03_isotropic_etc", scale=scale, params={"epochs": epochs})
    rep.figure(fig, "fig2", "EtC procedure step by step")      # fig2.png + fig2.pdf
    rep.table(rows, "table2", "Accuracy, plain vs EtC")         # table2.csv + table2.md
    rep.record(acc_plain=0.871)                                 # key numbers
    rep.save()                                                  # results.json

Files go to ``figures/<notebook stem>/`` (``$PPML_FIGURES`` overrides ``figures/``); every
write is atomic. Tables carry the scale in their caption and in a ``scale`` column, so a
smoke-scale number is never shown as if it reproduced the paper's.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from ppml import __version__
from ppml.utils import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["SCALES", "Report", "Table", "figures_root", "repo_root", "environment_info", "load_results"]

SCALES = ("smoke", "paper")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def repo_root() -> Path:
    """The checkout this package lives in (the folder holding ``ppml/``)."""
    return Path(__file__).resolve().parent.parent


def figures_root() -> Path:
    """Where figures go: ``$PPML_FIGURES`` if set, else ``<repo>/figures``."""
    env = os.environ.get("PPML_FIGURES")
    return Path(env).resolve() if env else repo_root() / "figures"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo_root()), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment_info() -> dict[str, Any]:
    """Versions and device, recorded in every ``results.json``.

    >>> info = environment_info()
    >>> sorted(k for k in ("python", "torch", "ppml") if k in info)
    ['ppml', 'python', 'torch']
    """
    info: dict[str, Any] = {"ppml": __version__, "python": platform.python_version(),
                            "platform": platform.platform(), "git_commit": _git_commit()}
    for mod in ("torch", "torchvision", "timm", "numpy", "lpips"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # not installed, or broken: record the fact, never fail a report
            info[mod] = None
    try:
        import torch

        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        info["threads"] = torch.get_num_threads()
    except Exception:
        info["device"] = None
    return info


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return "–" if v is None else str(v)


class Table:
    """Rows of a results table; shows as Markdown in a notebook.

    >>> t = Table([{"method": "EtC", "acc": 0.87}], caption="Accuracy (scale: smoke)")
    >>> print(t.to_markdown())
    **Accuracy (scale: smoke)**
    <BLANKLINE>
    | method | acc |
    |---|---|
    | EtC | 0.87 |
    """

    def __init__(self, rows: Iterable[Mapping[str, Any]], caption: str = ""):
        self.rows = [dict(r) for r in rows]
        self.caption = caption
        cols: list[str] = []
        for r in self.rows:
            cols += [c for c in r if c not in cols]
        self.columns = cols

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
        return buf.getvalue()

    def to_markdown(self) -> str:
        lines = [f"**{self.caption}**", ""] if self.caption else []
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "---|" * len(self.columns))
        for r in self.rows:
            lines.append("| " + " | ".join(_fmt(r.get(c)).replace("|", "\\|") for c in self.columns) + " |")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        return self.to_markdown()


def _rows(data: Any) -> list[dict[str, Any]]:
    if hasattr(data, "to_dict"):  # a pandas DataFrame, without importing pandas
        return data.to_dict("records")
    rows = list(data)
    if rows and not isinstance(rows[0], Mapping):
        raise TypeError("a table is a list of dicts (one per row) or a DataFrame; "
                        f"got a list of {type(rows[0]).__name__}")
    return rows


class Report:
    """Collects one notebook's artifacts and key numbers and writes them atomically.

    Parameters
    ----------
    notebook: the notebook's stem, e.g. ``"03_isotropic_etc"``; files go to
        ``figures_root()/notebook``.
    scale: ``"smoke"`` or ``"paper"``; printed beside every table and saved in results.
    params: the notebook's parameters (saved in ``results.json``).
    data_note: what data the numbers come from (e.g. "Fashion-MNIST embedded sample,
        padded to 32×32"); added to every table caption.

    >>> import tempfile, os
    >>> os.environ["PPML_FIGURES"] = tempfile.mkdtemp()
    >>> rep = Report("00_demo", scale="smoke", params={"epochs": 1})
    >>> _ = rep.table([{"x": 1}], "table1", "Demo")
    >>> rep.record(acc=0.9)
    >>> sorted(p.name for p in rep.save().parent.iterdir())
    ['results.json', 'table1.csv', 'table1.md']
    >>> del os.environ["PPML_FIGURES"]
    """

    def __init__(self, notebook: str, *, scale: str, params: Mapping[str, Any] | None = None,
                 data_note: str = "", out_dir: str | os.PathLike | None = None):
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        if not _ID.match(notebook):
            raise ValueError(f"notebook stem {notebook!r} is not a plain file name")
        self.notebook = notebook
        self.scale = scale
        self.params = dict(params or {})
        self.data_note = data_note
        self.dir = Path(out_dir) if out_dir is not None else figures_root() / notebook
        self.artifacts: dict[str, dict[str, Any]] = {}
        self.numbers: dict[str, Any] = {}
        self._t0 = time.time()

    # -- artifacts -------------------------------------------------------------------
    def _check_id(self, artifact: str) -> None:
        if not _ID.match(artifact):
            raise ValueError(f"artifact id {artifact!r} must be a plain name like 'fig2' or 'table3'")

    def _caption(self, title: str) -> str:
        note = f"; {self.data_note}" if self.data_note else ""
        return f"{title} (scale: {self.scale}{note})"

    def figure(self, fig: Any, artifact: str, title: str, *, dpi: int = 150) -> list[Path]:
        """Save a matplotlib figure as ``<artifact>.png`` and ``.pdf``; returns the paths."""
        self._check_id(artifact)
        if not hasattr(fig, "savefig"):
            raise TypeError(f"figure() takes a matplotlib Figure, got {type(fig).__name__}")
        paths = []
        for ext in ("png", "pdf"):
            buf = io.BytesIO()
            # No creation date in the PDF: regenerating a figure must not change its bytes.
            meta = {"CreationDate": None} if ext == "pdf" else {"Software": None}
            fig.savefig(buf, format=ext, dpi=dpi, bbox_inches="tight", metadata=meta)
            path = self.dir / f"{artifact}.{ext}"
            atomic_write_bytes(path, buf.getvalue())
            paths.append(path)
        self.artifacts[artifact] = {"kind": "figure", "title": title,
                                    "files": [p.name for p in paths]}
        return paths

    def table(self, rows: Any, artifact: str, title: str, *, scale_column: bool = True) -> Table:
        """Save rows (list of dicts or a DataFrame) as ``<artifact>.csv`` and ``.md``.

        A ``scale`` column is added to every row that lacks one (``scale_column=False`` to
        skip it, e.g. for rows that are all the paper's numbers). Returns the :class:`Table`,
        which a notebook shows as Markdown.
        """
        self._check_id(artifact)
        rows = _rows(rows)
        if scale_column:
            rows = [{**r, "scale": r.get("scale", self.scale)} for r in rows]
        t = Table(rows, caption=self._caption(title))
        atomic_write_text(self.dir / f"{artifact}.csv", t.to_csv())
        atomic_write_text(self.dir / f"{artifact}.md", t.to_markdown() + "\n")
        self.artifacts[artifact] = {"kind": "table", "title": title,
                                    "files": [f"{artifact}.csv", f"{artifact}.md"]}
        return t

    def record(self, **numbers: Any) -> None:
        """Remember key numbers for ``results.json`` (JSON-serialisable values)."""
        for k, v in numbers.items():
            try:
                json.dumps(v)
            except TypeError as e:
                raise TypeError(f"record({k}=...) must be JSON-serialisable "
                                f"(convert tensors with .item() or .tolist()): {e}") from None
            self.numbers[k] = v

    def save(self) -> Path:
        """Write ``results.json`` (numbers, artifacts, scale, params, versions, seconds)."""
        path = self.dir / "results.json"
        atomic_write_json(path, {
            "notebook": self.notebook,
            "scale": self.scale,
            "data": self.data_note,
            "params": self.params,
            "results": self.numbers,
            "artifacts": self.artifacts,
            "environment": environment_info(),
            "seconds": round(time.time() - self._t0, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }, default=str)
        return path


def load_results(notebook: str, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read ``figures/<notebook>/results.json`` (raises FileNotFoundError naming the fix)."""
    path = Path(root or figures_root()) / notebook / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `python -m ppml.reproduce {notebook}` first")
    return json.loads(path.read_text())
