"""One module per paper notebook: the numbers the paper prints and the code only it uses.

Papers are numbered like their notebooks, ``01`` … ``05``; the texts in ``shared/papers`` are
numbered one lower, ``000`` … ``004``:

============  =========================================  ===================  ==================================
paper         notebook                                   text                 module
============  =========================================  ===================  ==================================
01            ``notebooks/01_scramblemix.ipynb``         ``papers/000_*``     :mod:`ppml.papers.scramblemix`
02            ``02_block_scramble_augmentation.ipynb``   ``papers/001_*``     :mod:`ppml.papers.block_scramble_augmentation`
03            ``03_isotropic_etc.ipynb``                 ``papers/002_*``     :mod:`ppml.papers.isotropic_etc`
04            ``04_transformation_network.ipynb``        ``papers/003_*``     :mod:`ppml.papers.transformation_network`
05            ``05_key_generation.ipynb``                ``papers/004_*``     :mod:`ppml.papers.key_generation`
============  =========================================  ===================  ==================================

A module is named after its notebook's stem without the number; one that would grow past
~600 lines is a subpackage whose ``reported`` module holds the numbers. Each paper's printed
numbers (with the table/figure and page they come from) are plain Python data copied from the
texts; a paper that gives only a bar chart has no numbers, and its module says so.
:func:`reported` returns the module holding a notebook's numbers. Generic helpers live in the
library (:mod:`ppml.recipes`, :mod:`ppml.datasets`, …), not here.

>>> sorted(MODULES)  # doctest: +NORMALIZE_WHITESPACE
['01_scramblemix', '02_block_scramble_augmentation', '03_isotropic_etc',
 '04_transformation_network', '05_key_generation']
>>> reported("04_transformation_network").TABLE1[0.005]
{'cifar10': 91.72, 'cifar100': 70.78}
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

__all__ = ["MODULES", "reported"]

#: notebook stem → module of this package holding that paper's printed numbers.
MODULES = {
    "01_scramblemix": "scramblemix",
    "02_block_scramble_augmentation": "block_scramble_augmentation",
    "03_isotropic_etc": "isotropic_etc.reported",
    "04_transformation_network": "transformation_network",
    "05_key_generation": "key_generation.reported",
}


def reported(notebook: str) -> ModuleType:
    """The module of paper numbers for a notebook stem (e.g. ``reported("03_isotropic_etc")``)."""
    try:
        mod = MODULES[notebook]
    except KeyError:
        raise KeyError(f"unknown notebook {notebook!r}; known: {sorted(MODULES)}") from None
    return import_module(f"{__name__}.{mod}")
