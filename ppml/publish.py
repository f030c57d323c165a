"""What a reader opens after a run: the registry of notebooks and what each writes, the
verdict table put first in every executed notebook, the HTML pages with offline equations,
and ``figures/index.md``.

:mod:`ppml.reproduce` executes the notebooks and calls these; they only read what a run left
(``results.json``, the executed ``.ipynb``), so they also serve a run made by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ppml.utils import atomic_write_text

__all__ = ["NOTEBOOKS", "ARTIFACTS", "inline_figures", "finish_notebook", "mathjax_dir", "write_html_report",
           "write_index"]

#: The paper notebooks, in reading order: stem → (paper file in shared/papers, citation).
NOTEBOOKS: dict[str, tuple[str, str]] = {
    "01_scramblemix": ("000", "Madono, Tanaka, Onishi — ScrambleMix (slides)"),
    "02_block_scramble_augmentation": ("001", "Chuman, Kiya — Block scrambling with data augmentation"),
    "03_isotropic_etc": ("002", "MaungMaung, Kiya — Privacy-preserving classification with isotropic networks"),
    "04_transformation_network": ("003", "Ito, Kinoshita, Kiya — Image transformation network"),
    "05_key_generation": ("004", "Madono, Tanaka, Onishi, Ogawa — Scrambling parameter generation"),
    "06_benchmark": ("–", "Benchmark of every scheme in one table (not a paper)"),
}
#: The paper artifacts (figure and table names) each notebook must write.
ARTIFACTS: dict[str, tuple[str, ...]] = {
    "01_scramblemix": ("table_t1", "fig_t1_trend", "table_tta", "fig_security", "fig_posterior"),
    "02_block_scramble_augmentation": ("fig2", "fig3a", "fig3b", "fig3_gap_trend", "jigsaw", "fig_jigsaw"),
    "03_isotropic_etc": ("fig2", "table2", "table3", "table4", "fig5", "fig6", "fig7", "fig8", "eq4", "jigsaw", "fig_jigsaw",
                         "fig_attack_curves"),
    "04_transformation_network": ("table1", "fig3", "fig_trend", "fig4", "fig5"),
    "05_key_generation": ("fig3", "table1", "fig4", "fig5", "table2", "table3"),
    "06_benchmark": ("table_schemes", "fig_privacy_utility", "fig_examples"),
}


# --------------------------------------------------------------------------- what a reader opens
def inline_figures(nb: Any) -> int:
    """How many figures an executed notebook shows (``image/png`` outputs)."""
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", []))


def finish_notebook(path: Path, figures: Path, since: float = 0.0) -> str:
    """Put the run's verdict table first in an executed notebook (after its title cell).

    The claims come from ``figures/<stem>/results.json`` written by this run (``since``: its
    start time; an older file is ignored). Returns a warning for the run's log line, or ''.
    """
    import nbformat

    from ppml.report import verdict_markdown

    nb = nbformat.read(str(path), as_version=4)
    res_path = figures / "results.json"
    if not res_path.exists() or res_path.stat().st_mtime < since:
        return "no results.json from this run"
    res = json.loads(res_path.read_text())
    nb.cells = [c for c in nb.cells if "ppml-verdict" not in c.metadata.get("tags", [])]
    warn = []
    if res.get("claims"):
        cell = nbformat.v4.new_markdown_cell(verdict_markdown(res["claims"], res.get("scale", "?"), res.get("data", "")))
        cell.metadata["tags"] = ["ppml-verdict"]
        nb.cells.insert(1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0, cell)
    else:
        warn.append("no claims recorded")
    n_fig = sum(1 for a in res.get("artifacts", {}).values() if a.get("kind") == "figure")
    shown = inline_figures(nb)
    if shown < n_fig:
        warn.append(f"{n_fig} figures written, {shown} shown inline")
    atomic_write_text(path, nbformat.writes(nb))
    return "; ".join(warn)


def mathjax_dir() -> Path | None:
    """A local MathJax 2.7 (the ``jupyter-server-mathjax`` package), for offline HTML."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        return None
    d = Path(jupyter_server_mathjax.__file__).parent / "static"
    return d if (d / "MathJax.js").exists() else None


def write_html_report(build: Path, figures: Path, outcomes: Sequence[Any]) -> Path:
    """HTML of each executed notebook and ``build/<scale>/index.html`` linking them all, with
    the verdict tables; equations render offline from a local MathJax copied beside them."""
    import shutil

    import nbformat
    from nbconvert import HTMLExporter

    from ppml.report import verdict_markdown

    mj = mathjax_dir()
    exporter = HTMLExporter(template_name="lab")
    if mj is not None:
        if not (build / "_mathjax" / "MathJax.js").exists():
            shutil.copytree(mj, build / "_mathjax", dirs_exist_ok=True)
        exporter.mathjax_url = "_mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe"
    for o in outcomes:
        if o.output is not None and o.output.exists():
            body, _ = exporter.from_notebook_node(nbformat.read(str(o.output), as_version=4))
            atomic_write_text(o.output.with_suffix(".html"), body)
    import html as _html

    import mistune

    render = mistune.create_markdown(plugins=["table"])
    parts = [f"<h1>ppml — executed notebooks ({_html.escape(build.name)} scale)</h1>",
             "<p>Each notebook as <code>python -m ppml.reproduce</code> ran it; the verdict tables "
             "say which of each paper's claims this run shows.</p>"]
    entries = dict(NOTEBOOKS)
    entries.update({p.stem: ("–", "") for p in sorted(build.glob("*.ipynb")) if p.stem not in NOTEBOOKS})
    for stem, (paper, cite) in entries.items():
        page = build / f"{stem}.html"
        head = f"<h2>{_html.escape(stem)}</h2><p>paper {paper}: {_html.escape(cite)} — "
        head += f'<a href="{page.name}">open the executed notebook</a></p>' if page.exists() else "not run at this scale yet</p>"
        parts.append(head)
        res = figures / stem / "results.json"
        if page.exists() and res.exists():
            r = json.loads(res.read_text())
            if r.get("claims"):
                parts.append(render(verdict_markdown(r["claims"], r.get("scale", "?"), r.get("data", ""),
                                                        title="Verdicts")))
    style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;vertical-align:top}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ppml notebooks</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
    path = build / "index.html"
    atomic_write_text(path, page)
    return path


def _rel(p: Path) -> str:
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def write_index(figures: Path, stems: Sequence[str] | None = None) -> Path:
    """Write ``figures/index.md``: every paper artifact → its files → the scale they ran at."""
    from ppml.report import verdict_markdown

    stems = list(stems or []) + [s for s in NOTEBOOKS if s not in (stems or [])]
    extra = sorted(p.name for p in figures.iterdir() if p.is_dir() and p.name not in stems) \
        if figures.exists() else []
    lines = ["# What each notebook shows", "",
             "Each paper's claims as the last run of its notebook judged them: the paper's number, ours, "
             "the scale, and a verdict (shown / not shown at this scale / contradicted, with the likely reason).", ""]
    for stem in stems + extra:
        try:
            r = json.loads((figures / stem / "results.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if r.get("claims"):
            lines += [verdict_markdown(r["claims"], r.get("scale", "?"), title=f"{stem} (paper {NOTEBOOKS.get(stem, ('–',))[0]})"), ""]
    lines += ["# Figures and tables", "",
              "Regenerated by `python -m ppml.reproduce`. The scale column says whether a number "
              "comes from the small offline `smoke` run or from the papers' own settings (`paper`).",
              "", "| notebook | paper | artifact | title | files | scale | generated |",
              "|---|---|---|---|---|---|---|"]
    for stem in stems + extra:
        paper = NOTEBOOKS.get(stem, ("–", ""))[0]
        res = figures / stem / "results.json"
        if not res.exists():
            lines.append(f"| {stem} | {paper} | – | not generated yet | – | – | – |")
            continue
        try:
            r = json.loads(res.read_text())
        except json.JSONDecodeError:
            lines.append(f"| {stem} | {paper} | – | results.json unreadable | – | – | – |")
            continue
        arts = r.get("artifacts", {})
        for art, meta in sorted(arts.items()):
            files = ", ".join(f"[{f}]({stem}/{f})" for f in meta.get("files", []))
            lines.append(f"| {stem} | {paper} | {art} | {meta.get('title', '')} | {files} | "
                         f"{r.get('scale', '?')} | {r.get('finished', '?')} |")
        for art in ARTIFACTS.get(stem, ()):
            if art not in arts:
                lines.append(f"| {stem} | {paper} | {art} | NOT WRITTEN by the last run | – | "
                             f"{r.get('scale', '?')} | – |")
    path = figures / "index.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
