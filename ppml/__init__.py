"""ppml: the executable companion to five papers on privacy-preserving image
classification with secret-key image encryption.

Layers (lower never import higher): ``_checks`` / ``utils`` → ``keys`` → ``ciphers`` →
``encoders`` → ``datasets`` / ``transforms`` → ``loader`` → ``models`` / ``losses`` → ``train``
→ ``pretrained`` → ``metrics`` / ``compression`` → ``attacks`` → ``recipes`` → ``papers`` →
``report`` / ``plots`` / ``reproduce``.
"""

__version__ = "0.1.0"
