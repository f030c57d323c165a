"""The papermill runner: parameters, failures, missing notebooks, dry run, index."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from ppml import reproduce
from ppml.report import Report

pytestmark = pytest.mark.slow  # each case starts a Jupyter kernel (a few seconds)


def _notebook(path: Path, params: str, *body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# toy"), cell] + [nbformat.v4.new_code_cell(b) for b in body]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


TOY_BODY = (
    "from ppml.report import Report\n"
    "import matplotlib.pyplot as plt\n"
    "rep = Report('90_toy', scale=scale, params={'epochs': epochs})\n"
    "fig, ax = plt.subplots(); ax.plot([0, 1], [0, epochs])\n"
    "rep.figure(fig, 'fig1', 'A line')\n"
    "rep.table([{'epochs': epochs}], 'table1', 'Epochs')\n"
    "rep.claim('a line rises', paper='up', ours=f'{epochs}', holds=epochs > 0)\n"
    "rep.record(epochs=epochs); rep.save()\n"
    "assert epochs >= 1",
)


@pytest.fixture
def tree(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    (nbdir / "params").mkdir(parents=True)
    (nbdir / "params" / "smoke.yaml").write_text("{}\n")
    (nbdir / "params" / "paper.yaml").write_text("90_toy:\n  epochs: 3\n")
    _notebook(nbdir / "90_toy.ipynb", "scale = 'smoke'\nepochs = 1\ndataset = 'fashion-mnist-smoke'", *TOY_BODY)
    monkeypatch.setenv("PPML_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("PPML_DATA", str(tmp_path / "data"))
    return tmp_path


def _main(tree: Path, *args: str) -> int:
    return reproduce.main(["--notebooks-dir", str(tree / "notebooks"), "--build-dir", str(tree / "build"),
                           "--figures-dir", str(tree / "figures"), *args])


def test_runs_notebook_writes_results_and_index(tree, capsys):
    assert _main(tree, "90_toy") == 0
    out = capsys.readouterr().out
    assert "90_toy" in out and " ok " in out and " s " in out  # one progress line with wall time
    assert (tree / "build" / "smoke" / "90_toy.ipynb").exists()
    res = json.loads((tree / "figures" / "90_toy" / "results.json").read_text())
    assert res["scale"] == "smoke" and res["results"] == {"epochs": 1}
    assert {"torch", "python", "ppml"} <= set(res["environment"])
    for f in ("fig1.png", "fig1.pdf", "table1.csv", "table1.md"):
        assert (tree / "figures" / "90_toy" / f).stat().st_size > 0
    assert (tree / "figures" / "90_toy" / "fig1.png").read_bytes()[:4] == b"\x89PNG"
    # what a reader opens: every figure inline, the verdict table first, no kernel noise
    nb = nbformat.read(tree / "build" / "smoke" / "90_toy.ipynb", as_version=4)
    n_figures = sum(a["kind"] == "figure" for a in res["artifacts"].values())
    assert reproduce.inline_figures(nb) == n_figures == 1
    assert "ppml-verdict" in nb.cells[1].metadata["tags"] and "| a line rises | up | 1 | ✓ shown |" in nb.cells[1].source
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.get("name") == "stderr"], "warnings leaked into the notebook"
    assert not [o for o in outputs if "PosixPath" in str(o.get("data", {}).get("text/plain", ""))]
    assert "TCP without encryption" not in out
    html = (tree / "build" / "smoke" / "90_toy.html").read_text()
    assert "data:image/png;base64" in html and "cdnjs.cloudflare.com/ajax/libs/mathjax" not in html
    index_html = (tree / "build" / "smoke" / "index.html").read_text()
    assert '<a href="90_toy.html">' in index_html and "a line rises" in index_html
    assert "paper 002: MaungMaung, Kiya" in index_html  # the paper notebooks keep their citation
    assert (tree / "build" / "smoke" / "_mathjax" / "MathJax.js").exists()  # equations render offline
    index = (tree / "figures" / "index.md").read_text()
    assert index.startswith("# What each notebook shows") and "### 90_toy (paper –) (scale: smoke)" in index
    assert index.index("| a line rises | up | 1 | ✓ shown |") < index.index("# Figures and tables")  # verdicts head it
    assert "| 90_toy | – | fig1 | A line | [fig1.png](90_toy/fig1.png), [fig1.pdf](90_toy/fig1.pdf) | smoke |" in index
    # the five paper notebooks that do not exist in this tree are listed as not generated
    assert "| 03_isotropic_etc | 002 | – | not generated yet |" in index


def test_paper_scale_injects_parameters(tree):
    assert _main(tree, "--scale", "paper", "90_toy") == 0
    res = json.loads((tree / "figures" / "90_toy" / "results.json").read_text())
    assert res["scale"] == "paper" and res["results"]["epochs"] == 3
    nb = nbformat.read(tree / "build" / "paper" / "90_toy.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "epochs = 3" in injected[0].source and 'scale = "paper"' in injected[0].source


def test_cpu_scale_runs_only_the_notebooks_cpu_yaml_names(tree, capsys):
    _notebook(tree / "notebooks" / "91_other.ipynb", "scale = 'smoke'", "pass")
    (tree / "notebooks" / "params" / "cpu.yaml").write_text("90_toy:\n  epochs: 2\n")
    assert _main(tree, "--scale", "cpu") == 0
    out = capsys.readouterr().out
    assert "91_other not run (no entry in notebooks/params/cpu.yaml" in out and "1 notebook(s) at scale 'cpu'" in out
    res = json.loads((tree / "figures" / "90_toy" / "results.json").read_text())
    assert res["scale"] == "cpu" and res["results"]["epochs"] == 2
    assert not (tree / "build" / "cpu" / "91_other.ipynb").exists()
    # naming a notebook that has no cpu configuration is an error that says what to do
    assert _main(tree, "--scale", "cpu", "91_other") == 2
    assert "91_other has no cpu-scale configuration" in capsys.readouterr().err


def test_rejects_undeclared_parameter(tree, capsys):
    (tree / "notebooks" / "params" / "smoke.yaml").write_text("90_toy:\n  epohcs: 2\n")
    assert _main(tree, "90_toy") == 1
    out = capsys.readouterr().out
    assert "does not declare parameter(s) epohcs" in out and "it declares: dataset, epochs, scale" in out


def test_requires_scale_parameter(tree, capsys):
    _notebook(tree / "notebooks" / "91_noscale.ipynb", "epochs = 1", "pass")
    assert _main(tree, "91_noscale") == 1
    assert "must declare a 'scale' parameter" in capsys.readouterr().out


def test_failure_keeps_error_notebook_and_exits_nonzero(tree, capsys):
    _notebook(tree / "notebooks" / "92_fail.ipynb", "scale = 'smoke'", "raise RuntimeError('boom')")
    assert _main(tree, "92_fail", "90_toy") == 1
    out = capsys.readouterr().out
    assert "RuntimeError: boom" in out and "error notebook kept" in out
    kept = nbformat.read(tree / "build" / "smoke" / "92_fail.ipynb", as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in kept.cells if c.cell_type == "code"
               for o in c.get("outputs", []))
    assert (tree / "figures" / "90_toy" / "results.json").exists()  # the others still ran


def test_missing_paper_notebook_fails_loudly(tree, capsys):
    assert _main(tree, "03") == 1
    out = capsys.readouterr().out
    assert "03_isotropic_etc" in out and "MISSING" in out and "missing" in out.splitlines()[-2]


def test_unknown_notebook_name(tree, capsys):
    assert _main(tree, "99_nothing") == 2
    assert "unknown notebook '99_nothing'" in capsys.readouterr().err


def test_dry_run_lists_missing_data(tree, capsys):
    (tree / "notebooks" / "params" / "paper.yaml").write_text(
        "90_toy:\n  dataset: cifar10\n  requires: ['weights:no-such-weights']\n")
    assert _main(tree, "--dry-run", "--scale", "paper", "90_toy") == 1
    out = capsys.readouterr().out
    assert "missing dataset:cifar10" in out and "missing weights:no-such-weights" in out
    assert (tree / "build" / "paper" / "90_toy.ipynb").exists()  # prepared, not executed
    assert not (tree / "figures" / "90_toy").exists()


def test_dry_run_ready_with_embedded_data(tree, capsys):
    assert _main(tree, "--dry-run", "90_toy") == 0
    assert "ready" in capsys.readouterr().out


def test_bad_parameter_file(tree, capsys):
    (tree / "notebooks" / "params" / "smoke.yaml").write_text("- just\n- a list\n")
    assert _main(tree, "90_toy") == 2
    assert "must map each notebook stem" in capsys.readouterr().err


def test_report_rejects_bad_scale_and_ids(tmp_path):
    with pytest.raises(ValueError, match="scale must be one of"):
        Report("x", scale="medium")
    rep = Report("x", scale="smoke", out_dir=tmp_path)
    with pytest.raises(ValueError, match="artifact id"):
        rep.table([{"a": 1}], "../evil", "t")
    with pytest.raises(TypeError, match="JSON-serialisable"):
        rep.record(x=object())


def _timed(name: str, seconds: float) -> str:
    """A notebook body that records its kernel's start, end and OMP_NUM_THREADS in <figures>/<name>.json."""
    return ("import json, os, time\n"
            "t0 = time.time()\n"
            f"time.sleep({seconds})\n"
            f"path = os.path.join(os.environ['PPML_FIGURES'], '{name}.json')\n"
            "os.makedirs(os.path.dirname(path), exist_ok=True)\n"
            "json.dump({'start': t0, 'end': time.time(), 'omp': os.environ.get('OMP_NUM_THREADS')}, open(path, 'w'))")


def test_jobs_run_notebooks_side_by_side_and_the_benchmark_alone(tree, capsys, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    nbdir = tree / "notebooks"
    for name in ("93_a", "94_b", "06_benchmark"):
        _notebook(nbdir / f"{name}.ipynb", "scale = 'smoke'", _timed(name, 4))
    _notebook(nbdir / "92_fail.ipynb", "scale = 'smoke'", "raise RuntimeError('boom')")
    assert _main(tree, "--jobs", "2", "93_a", "06_benchmark", "92_fail", "94_b") == 1
    out = capsys.readouterr().out
    cores = reproduce.cpu_cores()
    assert f"running 2 notebooks at a time, {max(1, cores // 2)} thread(s) each; then 06_benchmark alone" in out
    t = {n: json.loads((tree / "figures" / f"{n}.json").read_text()) for n in ("93_a", "94_b", "06_benchmark")}
    assert t["93_a"]["start"] < t["94_b"]["end"] and t["94_b"]["start"] < t["93_a"]["end"]  # they overlapped
    assert t["06_benchmark"]["start"] >= max(t["93_a"]["end"], t["94_b"]["end"])  # alone, afterwards
    assert t["93_a"]["omp"] == t["94_b"]["omp"] == str(max(1, cores // 2)) and t["06_benchmark"]["omp"] is None
    # a failure in a worker is reported like any other, with its error notebook kept
    assert "92_fail" in out and "RuntimeError: boom" in out and "error notebook kept" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("[")]
    assert sorted(ln.split()[1] for ln in lines) == ["06_benchmark", "92_fail", "93_a", "94_b"]
    assert _main(tree, "--jobs", "0", "93_a") == 2
    assert "jobs must be a whole number >= 1" in capsys.readouterr().err
