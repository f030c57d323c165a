"""Paper 03 (notebook ``03_isotropic_etc``): MaungMaung & Kiya, "Privacy-Preserving Image
Classification Using Isotropic Network".

* :mod:`~ppml.papers.isotropic_etc.isotropic`: why isotropic networks classify EtC images —
  the identities of Sec. III-F (Eqs. 4 and 5), the EtC stages and the patch-embedding plots;
* :mod:`~ppml.papers.isotropic_etc.reported`: the numbers the paper prints.
"""

from ppml.papers.isotropic_etc import isotropic, reported

__all__ = ["isotropic", "reported"]
