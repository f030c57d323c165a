"""ppml: the executable companion to five papers on privacy-preserving image
classification with secret-key image encryption.

Layers (lower never import higher): ``utils`` → ``keys`` → ``ciphers`` → ``data`` →
``models`` → ``train`` → ``report`` / ``reproduce``.
"""

__version__ = "0.1.0"
