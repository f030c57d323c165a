"""The numbers each paper reports, for the paper-vs-ours tables of the notebooks.

One module per paper notebook holds that paper's printed numbers (with the table/figure
and page they come from) as plain Python data; :func:`reported` returns them by notebook
stem. Numbers are copied from the papers in ``shared/papers``; a paper that gives only a bar
chart has no numbers here, and its module says so.

>>> sorted(MODULES)  # doctest: +NORMALIZE_WHITESPACE
['01_scramblemix', '02_block_scramble_augmentation', '03_isotropic_etc',
 '04_transformation_network', '05_key_generation']
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["MODULES", "reported"]

#: notebook stem → module in this package holding that paper's numbers.
MODULES = {
    "01_scramblemix": "scramblemix",
    "02_block_scramble_augmentation": "block_scramble",
    "03_isotropic_etc": "isotropic_etc",
    "04_transformation_network": "transformation_network",
    "05_key_generation": "key_generation",
}


def reported(notebook: str) -> Any:
    """The module of paper numbers for a notebook stem (e.g. ``reported("03_isotropic_etc")``)."""
    try:
        mod = MODULES[notebook]
    except KeyError:
        raise KeyError(f"unknown notebook {notebook!r}; known: {sorted(MODULES)}") from None
    return import_module(f"{__name__}.{mod}")
