"""The paper notebooks: committed clean, structured for papermill, and their results.

``make test`` runs every notebook with nbval (``--nbval-lax``, the notebooks' smoke defaults);
their own ``assert`` cells check key numbers. The tests here check what nbval cannot: no
committed outputs, a ``parameters`` cell with ``scale``, and a complete ``results.json`` with
every paper artifact. If nbval did not run a notebook in this session (e.g. ``pytest tests``),
the results fixture executes it with the runner first.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from ppml import reproduce
from ppml.report import repo_root

NB_DIR = repo_root() / "notebooks"
PRESENT = sorted(p.stem for p in NB_DIR.glob("*.ipynb"))


def test_every_present_notebook_is_a_registered_paper_notebook():
    assert set(PRESENT) <= set(reproduce.NOTEBOOKS), "register new notebooks in ppml.reproduce.NOTEBOOKS"


def test_params_files_name_only_paper_notebooks():
    for scale in ("smoke", "cpu", "paper"):
        params = reproduce.load_params(scale, NB_DIR / "params")
        assert set(params) <= set(reproduce.NOTEBOOKS), scale
        for stem, given in params.items():  # every override is declared, with the notebook's type
            if (NB_DIR / f"{stem}.ipynb").exists():
                given = {k: v for k, v in given.items() if k != "requires"}
                reproduce.check_parameters(stem, reproduce.declared_parameters(NB_DIR / f"{stem}.ipynb"), given)


@pytest.mark.parametrize("stem", PRESENT)
def test_committed_without_outputs(stem):
    dirty = reproduce.dirty_cells(NB_DIR / f"{stem}.ipynb")
    assert not dirty, f"{stem}: cells {dirty} carry outputs; run `make strip` (nbstripout) before committing"


def test_dirty_cells_finds_outputs_and_counts(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1"), nbformat.v4.new_code_cell("2"), nbformat.v4.new_code_cell("3")]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="2")]
    nb.cells[2].execution_count = 7
    nbformat.write(nb, tmp_path / "x.ipynb")
    assert reproduce.dirty_cells(tmp_path / "x.ipynb") == [1, 2]


@pytest.mark.parametrize("stem", PRESENT)
def test_parameters_cell_declares_smoke_scale(stem):
    declared = reproduce.declared_parameters(NB_DIR / f"{stem}.ipynb")
    assert declared.get("scale") == "smoke", "the defaults must be the smoke scale"
    for scale in ("smoke", "paper"):
        given = dict(reproduce.load_params(scale, NB_DIR / "params").get(stem, {}))
        given.pop("requires", None)
        reproduce.check_parameters(stem, declared, given)


@pytest.mark.parametrize("stem", PRESENT)
def test_every_parameter_is_recorded_without_a_hand_typed_list(stem):
    """nanoGPT's config_keys idiom: the cell after the parameters cell records its globals
    (``params = notebook_params(globals())``) before any other import or assignment, and hands
    them to the Report, so ``results.json`` holds every parameter of the parameters cell and
    nothing else."""
    import ast

    from ppml.report import notebook_params

    nb = nbformat.read(NB_DIR / f"{stem}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell is the parameters cell"
    ns: dict = {}
    exec(code[0].source, ns)  # literals only
    assert list(notebook_params(ns)) == list(reproduce.declared_parameters(NB_DIR / f"{stem}.ipynb"))
    body = ast.parse(code[1].source).body
    assert [ast.unparse(st) for st in body[:2]] == ["from ppml.report import notebook_params",
                                                     "params = notebook_params(globals())"], (
        f"{stem}: cell 2 must open with `from ppml.report import notebook_params` and "
        "`params = notebook_params(globals())`, before any import can add a constant to globals()")
    reports = [n for n in ast.walk(ast.parse(code[1].source))
               if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Report"]
    assert len(reports) == 1
    given = {k.arg: k.value for k in reports[0].keywords}
    assert "params" in given and "params" in {n.id for n in ast.walk(given["params"]) if isinstance(n, ast.Name)}


@pytest.fixture(scope="session")
def figures_dir() -> Path:
    return Path(os.environ["PPML_FIGURES"])


@pytest.mark.slow
@pytest.mark.parametrize("stem", PRESENT)
def test_results_json_complete(stem, figures_dir, tmp_path_factory):
    res_path = figures_dir / stem / "results.json"
    if not res_path.exists():  # nbval did not run it in this session
        out = reproduce.run([stem], scale="smoke", build_dir=tmp_path_factory.mktemp("build"),
                            figures_dir=figures_dir, log=lambda s: None)
        assert out[0].status == "ok", out[0].message
    res = json.loads(res_path.read_text())
    assert res["scale"] == "smoke" and res["notebook"] == stem
    assert res["environment"]["torch"] and res["seconds"] > 0
    assert res["results"], "results.json must hold the notebook's key numbers"
    declared = reproduce.declared_parameters(NB_DIR / f"{stem}.ipynb")
    assert set(declared) <= set(res["params"]), f"{stem}: parameters missing from results.json"
    extra = set(res["params"]) - set(declared)
    assert extra <= {"gridmask", "bench"}, f"{stem}: results.json records non-parameters {sorted(extra)}"
    missing = set(reproduce.ARTIFACTS[stem]) - set(res["artifacts"])
    assert not missing, f"{stem} did not write artifacts {sorted(missing)}"
    for art, meta in res["artifacts"].items():
        exts = {Path(f).suffix for f in meta["files"]}
        assert exts == ({".png", ".pdf"} if meta["kind"] == "figure" else {".csv", ".md"}), art
        for f in meta["files"]:
            assert (figures_dir / stem / f).stat().st_size > 0, f


@pytest.mark.slow
@pytest.mark.parametrize("stem", PRESENT)
def test_notebook_shows_every_figure_inline_and_its_verdicts(stem, request, figures_dir, tmp_path_factory):
    """A reader sees each figure where it is discussed and a verdict for each of the paper's
    claims; nothing is printed to stderr (kernel, tqdm or library warnings)."""
    from ppml.report import VERDICTS

    seen = request.config.__dict__.get("_ppml_nb_outputs", {}).get(stem)
    if seen is None:  # nbval did not run it in this session: run it the way `make reproduce` does
        build = tmp_path_factory.mktemp("build")
        out = reproduce.run([stem], scale="smoke", build_dir=build, figures_dir=figures_dir, log=lambda s: None)
        assert out[0].status == "ok", out[0].message
        nb = nbformat.read(out[0].output, as_version=4)
        outs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        seen = {"png": reproduce.inline_figures(nb), "stderr": [o.text for o in outs if o.get("name") == "stderr"]}
        assert "ppml-verdict" in nb.cells[1].metadata.get("tags", []), "the verdict table must come first"
    res = json.loads((figures_dir / stem / "results.json").read_text())
    figures = [a for a, m in res["artifacts"].items() if m["kind"] == "figure"]
    assert seen["png"] == len(figures), f"{stem}: {len(figures)} figures written, {seen['png']} shown inline"
    assert not seen["stderr"], f"{stem} printed to stderr: {seen['stderr'][:3]}"
    assert res["claims"], f"{stem} records no verdict on its paper's claims (Report.claim)"
    for c in res["claims"]:
        assert c["verdict"] in VERDICTS and c["paper"] and c["ours"], c
        assert c["verdict"] == "shown" or c["why"], f"{stem}: {c['claim']!r} is {c['verdict']} without a reason"
