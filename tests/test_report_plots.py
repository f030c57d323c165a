"""ppml.report tables/figures and ppml.plots helpers."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from ppml.plots import image_grid, to_numpy_image
from ppml.report import Report, Table


def test_table_markdown_and_csv_carry_scale(tmp_path):
    rep = Report("00_t", scale="smoke", data_note="Fashion-MNIST sample", out_dir=tmp_path)
    t = rep.table([{"method": "plain", "acc": 0.8712345, "paper": 96.5}], "table2", "Accuracy")
    md = (tmp_path / "table2.md").read_text()
    # the data note is said once per notebook (Report.header), not in every caption
    assert "(scale: smoke)" in md and "Fashion-MNIST" not in md and "| plain | 0.8712 | 96.5 | smoke |" in md
    assert (tmp_path / "table2.csv").read_text().splitlines() == ["method,acc,paper,scale", "plain,0.8712345,96.5,smoke"]
    assert t._repr_markdown_() == md.rstrip("\n")


def test_figure_is_png_and_pdf_and_reproducible(tmp_path):
    rep = Report("00_t", scale="paper", out_dir=tmp_path)
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    rep.figure(fig, "fig1", "line")
    first = (tmp_path / "fig1.pdf").read_bytes()
    rep.figure(fig, "fig1", "line")
    assert (tmp_path / "fig1.pdf").read_bytes() == first  # no timestamp in the PDF
    assert first[:5] == b"%PDF-" and (tmp_path / "fig1.png").read_bytes()[:4] == b"\x89PNG"
    rep.save()
    res = json.loads((tmp_path / "results.json").read_text())
    # outside a Jupyter kernel nothing is shown inline
    assert res["artifacts"]["fig1"] == {"kind": "figure", "title": "line", "files": ["fig1.png", "fig1.pdf"],
                                        "shown_inline": False}
    assert not plt.fignum_exists(fig.number)  # closed: the inline backend must not show it a second time
    assert res["scale"] == "paper"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries
    plt.close(fig)


def test_table_rejects_non_rows(tmp_path):
    with pytest.raises(TypeError, match="list of dicts"):
        Report("00_t", scale="smoke", out_dir=tmp_path).table([1, 2], "t", "x")


def test_to_numpy_image_layouts():
    x = torch.arange(2 * 3 * 4, dtype=torch.uint8).reshape(3, 2, 4)
    a = to_numpy_image(x)
    assert a.shape == (2, 4, 3) and a[1, 2, 0] == x[0, 1, 2]
    assert to_numpy_image(torch.ones(1, 5, 5)).shape == (5, 5)
    assert to_numpy_image(np.full((3, 2, 2), 2.0)).max() == 1.0  # floats are clipped to [0, 1]
    with pytest.raises(ValueError, match="C = 1 or 3"):
        to_numpy_image(torch.zeros(4, 2, 2))


def test_image_grid_checks_titles():
    with pytest.raises(ValueError, match="2 titles for 3 images"):
        image_grid(torch.zeros(3, 3, 4, 4), titles=["a", "b"])
    fig = image_grid(torch.zeros(3, 3, 4, 4), ncols=2)
    assert len(fig.axes) == 3
    plt.close(fig)


def test_table_class_formats_missing_values():
    t = Table([{"a": None, "b": float("nan")}, {"a": 1, "b": 2.0}])
    assert t.to_markdown().splitlines()[-2:] == ["| – | – |", "| 1 | 2 |"]


def test_table_markdown_moves_constant_columns_to_the_caption_and_rounds():
    t = Table([{"m": "a", "acc": 0.7699999809265137, "scale": "smoke", "n": 5},
               {"m": "b", "acc": 0.5, "scale": "smoke", "n": 5}], caption="Acc")
    md = t.to_markdown()
    assert md.splitlines()[0] == "**Acc** (scale: smoke; n: 5)"
    assert "| m | acc |" in md and "| a | 0.77 |" in md and "0.7699" not in md
    assert t.to_csv().splitlines()[0] == "m,acc,scale,n"  # the CSV keeps every column
    one = Table([{"m": "a", "scale": "smoke"}], caption="One row")
    assert "| m | scale |" in one.to_markdown()  # one row: nothing is constant


def test_table_markdown_splits_wide_tables_repeating_the_first_column():
    row = {"name": "x", **{f"c{i}": i for i in range(12)}}
    md = Table([row, {**row, "name": "y", "c0": 99}]).to_markdown(max_columns=8)
    assert [ln for ln in md.splitlines() if ln.startswith("| name")] == ["| name | c0 |"]  # c1..c11 constant
    wide = Table([{"name": "x", **{f"c{i}": i + 1 for i in range(12)}}, {"name": "y", **{f"c{i}": -i - 1 for i in range(12)}}])
    md = wide.to_markdown()
    heads = [ln for ln in md.splitlines() if ln.startswith("| name")]
    assert len(heads) == 2 and all(len(h.strip("|").split("|")) <= 8 for h in heads) and "*part 2 of 2*" in md
    assert sum(len(h.strip("|").split("|")) - 1 for h in heads) == 12  # every column once, name repeated


def test_claims_verdicts_and_checks(tmp_path, capsys):
    rep = Report("00_t", scale="smoke", out_dir=tmp_path)
    assert rep.claim("A", paper="1", ours="1", holds=True) == "shown"
    assert rep.claim("B", paper="2", ours="0", holds=False, why="too few epochs") == "not shown at this scale"
    assert rep.claim("C", paper="3", ours="-1", holds=False, otherwise="contradicted", why="smaller model") == "contradicted"
    with pytest.raises(ValueError, match="give why="):
        rep.claim("D", paper="4", ours="0", holds=False)
    with pytest.raises(ValueError, match="otherwise must be one of"):
        rep.claim("E", paper="4", ours="0", holds=False, otherwise="maybe", why="x")
    rep.check(2 > 1, "two beats one")
    with pytest.raises(AssertionError, match="one beats two"):
        rep.check(1 > 2, "one beats two")
    out = capsys.readouterr().out
    assert "✓ shown — A" in out and "✗ not shown at this scale — B" in out and "why: too few epochs" in out
    assert "✓ two beats one" in out and "one beats two" not in out
    rep.save()
    claims = json.loads((tmp_path / "results.json").read_text())["claims"]
    assert [(c["claim"], c["verdict"]) for c in claims] == [("A", "shown"), ("B", "not shown at this scale"),
                                                             ("C", "contradicted")]
    from ppml.report import verdict_markdown

    md = verdict_markdown(claims, "smoke")
    assert "| C | 3 | -1 | ✗ contradicted | smaller model |" in md


def test_load_results_round_trip_and_missing(tmp_path):
    from ppml.report import load_results

    rep = Report("00_t", scale="smoke", out_dir=tmp_path / "00_t")
    rep.record(acc=0.5)
    rep.save()
    assert load_results("00_t", root=tmp_path)["results"] == {"acc": 0.5}
    with pytest.raises(FileNotFoundError, match="python -m ppml.reproduce 01_x"):
        load_results("01_x", root=tmp_path)
