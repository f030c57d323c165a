"""Every scheme of :mod:`ppml.schemes` under the same data, classifier recipe and attacker budget.

One row per scheme, one column per measurement:

* **accuracy** — the same classifier (with the scheme's adaptation network in front where it
  needs one) trained and tested on the scheme's images; ``acc_drop`` in points vs ``plain``;
* **compression** — total JPEG bytes at QF 85 (4:2:0) and lossless PNG bytes of the protected
  images over those of the plain images (each image coded on its own, :mod:`ppml.compression`);
* **lpips** — LPIPS (AlexNet) between each protected image and its plain image;
* **key_space** — log2 of the number of keys, or "randomised" / "public network";
* **throughput** — protected images per second on the CPU (best of a few runs);
* **attacks** — mean SSIM of each applicable attack's reconstructions against the victims'
  plain images, beside the no-attack ``floor`` (SSIM of the attacker's mean image): FR, GAN
  (SIA-GAN), ITN (pairs made with other keys; with the network itself for a public h_θ), the
  jigsaw solver, the LE-statistics key recovery and the attack on mixing (Carlini et al.).
  An attack that does not apply to a scheme is ``"n/a"``, never 0.

Accuracy uses the classification data set of the scale; compression, LPIPS, throughput and the
attacks use real colour photo crops (``ppml.datasets.photo_crops``; victims and attacker from
different photographs), the same for every scheme.

Cells are cached: one JSON per (scale, scheme, column) under ``build/bench/<scale>/`` with a
fingerprint of the settings the column depends on, so a rerun computes only what is missing or
changed. Scales are the flat presets of :data:`CONFIGS`.

>>> CONFIGS["smoke"]["dataset"], sorted(CONFIGS)
('fashion-mnist-smoke', ['cpu', 'paper', 'smoke'])
>>> parse_names("le,etc-8 pe", list_schemes(), "scheme")
['le', 'etc-8', 'pe']

The package: :mod:`~ppml.bench.config` (scales, columns, name parsing), :mod:`~ppml.bench.cells`
(the column computations), :mod:`~ppml.bench.run` (cell cache, :func:`run_bench`),
:mod:`~ppml.bench.table` (figures, reading, table) and :mod:`~ppml.bench.cli`
(``python -m ppml.bench``); every name is re-exported here.
"""

from __future__ import annotations

from ppml.bench.cells import _CELLS, _Context, _needs_train  # noqa: F401
from ppml.bench.cli import main
from ppml.bench.config import (  # noqa: F401
    _BUDGET_KEYS, BASE_COLUMNS, BENCH_VERSION, COLUMNS, CONFIGS, _rehearsal_config, parse_names,
)
from ppml.bench.run import BenchResult, _cell_path, _fingerprint, _read_cell, run_bench  # noqa: F401
from ppml.bench.table import _MARKERS, examples_figure, format_table, privacy_utility_figure, reading  # noqa: F401
from ppml.schemes import ATTACK_NAMES, list_schemes  # noqa: F401  (bench.ATTACK_NAMES; the doctest above)

__all__ = ["CONFIGS", "COLUMNS", "BenchResult", "run_bench", "parse_names", "format_table", "privacy_utility_figure",
           "examples_figure", "reading", "main"]
