"""Test-session settings: offline, quiet, and figures written to a temporary folder.

Notebook runs (nbval, or the results fixture below) write into ``$PPML_FIGURES``, which is
a fresh temporary folder per session so that tests never touch the committed ``figures/``.
"""

from __future__ import annotations

import os
import tempfile


def pytest_configure(config):
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["PPML_QUIET"] = "1"
    os.environ["MPLBACKEND"] = "Agg"
    if not os.environ.get("PPML_TEST_FIGURES"):
        os.environ["PPML_TEST_FIGURES"] = tempfile.mkdtemp(prefix="ppml-figures-")
    # The kernels nbval starts inherit this, so notebooks write their figures there.
    os.environ["PPML_FIGURES"] = os.environ["PPML_TEST_FIGURES"]
