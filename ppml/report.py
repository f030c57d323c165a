"""What a notebook writes: figures, tables and ``results.json``, always with the scale.

Every notebook makes one :class:`Report` and saves each of its paper artifacts through it::

    params = notebook_params(globals())                        # first: every parameter, nothing else
    rep = Report("03_isotropic_etc", scale=scale, params=params)
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
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ppml import __version__
from ppml.utils import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["SCALES", "VERDICTS", "Report", "Table", "figures_root", "repo_root", "environment_info",
           "load_results", "notebook_params", "verdict_markdown"]

#: smoke: CPU, offline, minutes (the notebooks' defaults); cpu: the full Fashion-MNIST and longer
#: training where an effect needs it (~30 CPU-minutes per notebook); paper: the papers' data (GPU).
SCALES = ("smoke", "cpu", "paper")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: What a notebook can say of one of its paper's claims, computed from the run.
VERDICTS = ("shown", "not shown at this scale", "contradicted")
#: Tables shown in a notebook are split into parts of at most this many columns.
MAX_COLUMNS = 8


def _kernel() -> bool:
    """True inside a Jupyter kernel (papermill, nbval, JupyterLab), where artifacts show inline."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except AttributeError:
        return False
    return ip is not None and getattr(ip, "kernel", None) is not None


def _display(obj: Any) -> None:
    from IPython.display import display

    display(obj)


class _Paths(list):
    """The files an artifact was written to; shows nothing as a cell's last value (the artifact
    itself is already shown inline)."""

    def _ipython_display_(self) -> None:
        pass


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
    from importlib import metadata

    for mod in ("torch", "torchvision", "timm", "numpy", "lpips"):
        # the installed distribution's version, without importing it (timm's import pulls in
        # huggingface_hub, whose tqdm.auto warns into every notebook without ipywidgets)
        try:
            info[mod] = metadata.version(mod)
        except Exception:  # not installed, or broken: record the fact, never fail a report
            info[mod] = None
    try:
        import torch

        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        info["threads"] = torch.get_num_threads()
    except Exception:
        info["device"] = None
    return info


#: Names a Jupyter kernel or papermill puts into a notebook's globals that are not parameters.
_KERNEL_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})


def _is_literal(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    if isinstance(v, (list, tuple)):
        return all(_is_literal(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, (str, int, float, bool)) and _is_literal(x) for k, x in v.items())
    return False


def notebook_params(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter of a notebook, read from its globals (nanoGPT's ``config_keys`` idiom).

    Call it first thing in the cell that follows the parameters cell, before any other import
    or assignment (``from ppml.report import notebook_params`` then ``params =
    notebook_params(globals())``): at that point the globals hold the parameters cell's names
    (with papermill's injected values) and nothing else a notebook defines — an imported
    constant such as ``ppml.attacks.ATTACKS`` would otherwise pass for a parameter. Functions,
    modules, private names and the kernel's own (``In``, ``Out``, …) are left out. Only literal values are parameters (``None``, numbers, strings and lists / tuples /
    dicts of them), so no list of names is typed by hand and a new parameter cannot be
    forgotten in ``results.json``. Order: the parameters cell's.

    >>> import math
    >>> ns = {"scale": "smoke", "epochs": 3, "sizes": [4, 8], "kw": {"dim": 64}, "math": math,
    ...       "_tmp": 1, "In": [""], "f": print}
    >>> notebook_params(ns)
    {'scale': 'smoke', 'epochs': 3, 'sizes': [4, 8], 'kw': {'dim': 64}}
    """
    return {k: v for k, v in dict(namespace).items()
            if not k.startswith("_") and k not in _KERNEL_NAMES and _is_literal(v)}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return "–" if v is None else str(v)


class Table:
    """Rows of a results table; shows as Markdown in a notebook.

    The full rows go to CSV. The Markdown a reader sees moves columns that hold one value in
    every row into the caption (``k: v``), and splits more than :data:`MAX_COLUMNS` columns into
    parts that each repeat the first column.

    >>> t = Table([{"method": "EtC", "acc": 0.87}], caption="Accuracy (scale: smoke)")
    >>> print(t.to_markdown())
    **Accuracy (scale: smoke)**
    <BLANKLINE>
    | method | acc |
    |---|---|
    | EtC | 0.87 |
    >>> t = Table([{"m": "a", "x": 1, "scale": "smoke"}, {"m": "b", "x": 2, "scale": "smoke"}], caption="T")
    >>> print(t.to_markdown())
    **T** (scale: smoke)
    <BLANKLINE>
    | m | x |
    |---|---|
    | a | 1 |
    | b | 2 |
    """

    def __init__(self, rows: Iterable[Mapping[str, Any]], caption: str = ""):
        self.rows = [dict(r) for r in rows]
        self.caption = caption
        cols: list[str] = []
        for r in self.rows:
            cols += [c for c in r if c not in cols]
        self.columns = cols
        self._shown = False

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
        return buf.getvalue()

    def constant_columns(self) -> dict[str, Any]:
        """Columns with one value in every row (of a table with at least two rows)."""
        if len(self.rows) < 2:
            return {}
        out = {}
        for c in self.columns:
            vals = {_fmt(r.get(c)) for r in self.rows}
            if len(vals) == 1:
                out[c] = self.rows[0].get(c)
        if len(out) == len(self.columns):  # keep at least the first column
            out.pop(self.columns[0])
        return out

    def to_markdown(self, max_columns: int = MAX_COLUMNS) -> str:
        const = self.constant_columns()
        cols = [c for c in self.columns if c not in const]
        extra = "; ".join(f"{k}: {_fmt(v)}" for k, v in const.items() if _fmt(v) != "–")
        head = []
        if self.caption or extra:
            head = [(f"**{self.caption}**" if self.caption else "") + (f" ({extra})" if extra else ""), ""]
        parts = [cols] if len(cols) <= max_columns else \
            [[cols[0], *cols[i:i + max_columns - 1]] for i in range(1, len(cols), max_columns - 1)]
        blocks = []
        for j, part in enumerate(parts):
            lines = [f"*part {j + 1} of {len(parts)}*", ""] if len(parts) > 1 else []
            lines.append("| " + " | ".join(part) + " |")
            lines.append("|" + "---|" * len(part))
            for r in self.rows:
                lines.append("| " + " | ".join(_fmt(r.get(c)).replace("|", "\\|") for c in part) + " |")
            blocks.append("\n".join(lines))
        return "\n".join(head) + "\n\n".join(blocks)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def _ipython_display_(self) -> None:
        if not self._shown:  # Report.table already showed it where it was written
            from IPython.display import Markdown

            _display(Markdown(self.to_markdown()))

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
    scale: ``"smoke"``, ``"cpu"`` or ``"paper"``; printed beside every table and saved in results.
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
        self.claims: list[dict[str, str]] = []
        self._t0 = time.time()

    # -- artifacts -------------------------------------------------------------------
    def _check_id(self, artifact: str) -> None:
        if not _ID.match(artifact):
            raise ValueError(f"artifact id {artifact!r} must be a plain name like 'fig2' or 'table3'")

    def _caption(self, title: str) -> str:
        # The data note is said once per notebook (Report.header, results.json), not per table.
        return f"{title} (scale: {self.scale})"

    def header(self) -> None:
        """Print the scale and the data description once, at the top of a notebook."""
        print(f"scale: {self.scale}" + (f" — data: {self.data_note}" if self.data_note else ""))

    def figure(self, fig: Any, artifact: str, title: str, *, dpi: int = 150) -> list[Path]:
        """Save a matplotlib figure as ``<artifact>.png`` and ``.pdf`` and, inside a Jupyter
        kernel, show it inline (then close it, so the inline backend does not show it twice).

        Returns the paths (which show nothing as a cell's last value)."""
        self._check_id(artifact)
        if not hasattr(fig, "savefig"):
            raise TypeError(f"figure() takes a matplotlib Figure, got {type(fig).__name__}")
        paths, png = _Paths(), b""
        for ext in ("png", "pdf"):
            buf = io.BytesIO()
            # No creation date in the PDF: regenerating a figure must not change its bytes.
            meta = {"CreationDate": None} if ext == "pdf" else {"Software": None}
            fig.savefig(buf, format=ext, dpi=dpi, bbox_inches="tight", metadata=meta)
            path = self.dir / f"{artifact}.{ext}"
            atomic_write_bytes(path, buf.getvalue())
            paths.append(path)
            png = buf.getvalue() if ext == "png" else png
        shown = False
        if _kernel():
            from IPython.display import Image, Markdown

            _display(Markdown(f"**{artifact}** — {title} (scale: {self.scale})"))
            width = int.from_bytes(png[16:20], "big")  # PNG IHDR width
            _display(Image(data=png, format="png", width=round(width * 100 / dpi), alt=f"{artifact}: {title}"))
            shown = True
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close(fig)
        self.artifacts[artifact] = {"kind": "figure", "title": title,
                                    "files": [p.name for p in paths], "shown_inline": shown}
        return paths

    def table(self, rows: Any, artifact: str, title: str, *, scale_column: bool = True) -> Table:
        """Save rows (list of dicts or a DataFrame) as ``<artifact>.csv`` and ``.md``; inside a
        Jupyter kernel, show it inline.

        A ``scale`` column is added to every row that lacks one (``scale_column=False`` to
        skip it, e.g. for rows that are all the paper's numbers); the Markdown a reader sees
        moves it, like every constant column, into the caption. Returns the :class:`Table`.
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
        if _kernel():
            from IPython.display import Markdown

            _display(Markdown(t.to_markdown()))
            t._shown = True
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

    # -- what the reader came for --------------------------------------------------------
    def claim(self, claim: str, *, paper: str, ours: str, holds: bool,
              otherwise: str = "not shown at this scale", why: str = "") -> str:
        """Judge one of the paper's claims from this run and say so where it is measured.

        ``holds`` is computed from the run; when it is false the verdict is ``otherwise``
        (``"not shown at this scale"`` or ``"contradicted"``) and ``why`` must give the likely
        reason. Prints a ✓/✗ line; every claim goes into ``results.json`` and heads the
        executed notebook and ``figures/index.md``. Returns the verdict.

        >>> import tempfile, os
        >>> rep = Report("00_demo", scale="smoke", out_dir=tempfile.mkdtemp())
        >>> rep.claim("EtC keeps accuracy", paper="92.6 vs 94.1 %", ours="80.5 vs 83.9 %", holds=True)
        ✓ shown — EtC keeps accuracy: ours 80.5 vs 83.9 % (scale smoke); paper 92.6 vs 94.1 %
        'shown'
        """
        if otherwise not in VERDICTS[1:]:
            raise ValueError(f"otherwise must be one of {VERDICTS[1:]}, got {otherwise!r}")
        holds = bool(holds)
        if not holds and not why.strip():
            raise ValueError(f"claim {claim!r} is {otherwise!r}: give why= (the likely reason) so "
                             "the notebook states it where it appears")
        verdict = "shown" if holds else otherwise
        line = f"{'✓' if holds else '✗'} {verdict} — {claim}: ours {ours} (scale {self.scale}); paper {paper}"
        print(line + ("" if holds else f"\n    why: {why}"))
        self.claims = [c for c in self.claims if c["claim"] != claim]
        self.claims.append({"claim": claim, "paper": str(paper), "ours": str(ours), "scale": self.scale,
                            "verdict": verdict, "why": why if not holds else ""})
        return verdict

    def check(self, condition: Any, message: str) -> None:
        """An assertion that says so when it passes: prints ``✓ message``, raises
        ``AssertionError(message)`` when ``condition`` is false.

        >>> Report("00_demo", scale="smoke").check(1 < 2, "one is less than two")
        ✓ one is less than two
        """
        if not condition:
            raise AssertionError(message)
        print(f"✓ {message}")

    def save(self) -> Path:
        """Write ``results.json`` (numbers, claims, artifacts, scale, params, versions, seconds);
        inside a Jupyter kernel, show the verdict table."""
        path = self.dir / "results.json"
        atomic_write_json(path, {
            "notebook": self.notebook,
            "scale": self.scale,
            "data": self.data_note,
            "params": self.params,
            "results": self.numbers,
            "claims": self.claims,
            "artifacts": self.artifacts,
            "environment": environment_info(),
            "seconds": round(time.time() - self._t0, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }, default=str)
        if _kernel() and self.claims:
            from IPython.display import Markdown

            _display(Markdown(verdict_markdown(self.claims, self.scale, self.data_note)))
        return path


def verdict_markdown(claims: Sequence[Mapping[str, Any]], scale: str, data_note: str = "",
                     title: str = "What this run shows") -> str:
    """The verdict table: each of the paper's claims, the paper's number, ours, the verdict and,
    where it is not shown, why.

    >>> print(verdict_markdown([{"claim": "c", "paper": "1", "ours": "2", "verdict": "shown", "why": ""}], "smoke"))
    ### What this run shows (scale: smoke)
    <BLANKLINE>
    | claim | paper | ours | verdict | why not |
    |---|---|---|---|---|
    | c | 1 | 2 | ✓ shown |  |
    """
    mark = {"shown": "✓", "not shown at this scale": "–", "contradicted": "✗"}
    lines = [f"### {title} (scale: {scale})", ""]
    if data_note:
        lines += [f"Data: {data_note}.", ""]
    lines += ["| claim | paper | ours | verdict | why not |", "|---|---|---|---|---|"]
    for c in claims:
        cells = [c.get("claim", ""), c.get("paper", ""), c.get("ours", ""),
                 f"{mark.get(c.get('verdict'), '?')} {c.get('verdict', '?')}", c.get("why", "")]
        lines.append("| " + " | ".join(str(x).replace("|", "\\|").replace("\n", " ") for x in cells) + " |")
    return "\n".join(lines)


def load_results(notebook: str, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read ``figures/<notebook>/results.json`` (raises FileNotFoundError naming the fix)."""
    path = Path(root or figures_root()) / notebook / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `python -m ppml.reproduce {notebook}` first")
    return json.loads(path.read_text())
