"""Test-session hook at the repository root (it must see nbval's items under notebooks/, and a
conftest.py inside notebooks/ would clash with tests/conftest.py under --doctest-modules).

What nbval sees the notebooks show: per notebook, the inline figures (``image/png``
outputs) and any ``stderr`` output, kept on the pytest config for ``tests/test_notebooks.py``
(which checks them against each notebook's figure artifacts)."""

from __future__ import annotations

from pathlib import Path


def pytest_runtest_makereport(item, call):
    outs = getattr(item, "test_outputs", None)  # set by nbval's cell items after they run
    if call.when != "call" or outs is None:
        return
    seen = item.config.__dict__.setdefault("_ppml_nb_outputs", {})
    rec = seen.setdefault(Path(str(item.fspath)).stem, {"png": 0, "stderr": []})
    for o in outs:
        rec["png"] += "image/png" in (o.get("data") or {})
        if o.get("name") == "stderr":
            rec["stderr"].append(str(o.get("text", ""))[:300])
