"""Training recipes the notebooks share: train-then-test in one call, and a classifier
(with an adaptation network) trained on images scrambled with one fixed key.

These wrap :func:`ppml.train.fit` / :func:`ppml.train.evaluate` with the settings the papers
use; they hold no paper-specific logic. (They will join the :mod:`ppml.train` package.)
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import torch
import torch.nn as nn

from ppml.ciphers import cipher_for
from ppml.transforms import EncryptBatch, RandomCrop, RandomHorizontalFlip
from ppml.keys import Key
from ppml.models import create_model
from ppml.train import evaluate, fit

__all__ = ["count_parameters", "train_and_test", "fit_scrambled"]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters.

    >>> count_parameters(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_and_test(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                   *, epochs: int, batch_size: int = 64, optimizer: str = "adamw", lr: float = 0.01,
                   weight_decay: float = 0.01, schedule: str = "triangular", transforms: Any = None,
                   seed: int = 0, **fit_kw: Any) -> dict[str, Any]:
    """Train ``model`` on ``train`` (uint8 images, labels), test on ``test``; returns
    ``{"acc", "params", "cpu_seconds", "history"}``. Images must already be encrypted (or
    compressed) the way the row of the table needs. Defaults: the paper's ConvMixer recipe
    (AdamW, lr 0.01, wd 0.01, batch 64, triangular schedule).
    """
    t0 = time.process_time()
    r = fit(model, train, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
            weight_decay=weight_decay, schedule=schedule, transforms=transforms, seed=seed, **fit_kw)
    ev = evaluate(model, test)
    return {"acc": ev["acc"], "params": count_parameters(model), "cpu_seconds": round(time.process_time() - t0, 1),
            "history": r.history}


def fit_scrambled(key: Key | None, train: Any, test: Any, *, adaptation: str = "none",
                  classifier: str = "resnet20", classifier_kwargs: Mapping[str, Any] | None = None,
                  adaptation_kwargs: Mapping[str, Any] | None = None, augment: bool = False,
                  epochs: int = 1, seed: int = 0, **fit_kwargs: Any) -> tuple[torch.nn.Module, float]:
    """Train ``adapted_classifier`` on images scrambled with ``key`` and return ``(model, test accuracy)``.

    ``key=None`` trains on plain images. ``adaptation_kwargs`` go to the adaptation network
    (``out_chans``, ``representation``, and e.g. ``hidden`` for LE). The key is fixed for the data set (as in the paper):
    training images are scrambled after the optional augmentation (random crop with padding
    4 + horizontal flip, as the authors' code does) by :class:`ppml.transforms.EncryptBatch`; test
    images are scrambled once. ``train``/``test`` are :class:`ppml.datasets.ImageData` (or
    anything with ``.images`` uint8 and ``.labels``); ``fit_kwargs`` go to
    :func:`ppml.train.fit` (optimizer, lr, schedule, batch_size, …).

    >>> import torch
    >>> from types import SimpleNamespace
    >>> from ppml.keys import LEKey
    >>> g = torch.Generator().manual_seed(0)
    >>> d = SimpleNamespace(images=torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=g),
    ...                     labels=torch.arange(16) % 2)
    >>> key = LEKey.generate(image_size=8, block_size=4, seed=0)
    >>> m, acc = fit_scrambled(key, d, d, adaptation="le", classifier="convmixer", progress=False,
    ...                        classifier_kwargs={"dim": 8, "depth": 1, "patch_size": 4, "kernel_size": 3},
    ...                        adaptation_kwargs={"hidden": 16, "out_chans": 2}, image_size=8, batch_size=8)
    >>> 0.0 <= acc <= 1.0
    True
    """
    image_size = fit_kwargs.pop("image_size", tuple(train.images.shape[-2:]))
    block_size = key.block_size if key is not None and adaptation != "none" else 4
    num_classes = int(train.labels.max()) + 1 if not hasattr(train, "num_classes") else train.num_classes
    ak = {} if adaptation == "none" else dict(adaptation_kwargs or {})
    top = {k: ak.pop(k) for k in ("out_chans", "representation") if k in ak}
    torch.manual_seed(seed)
    model = create_model("adapted_classifier", adaptation=adaptation, classifier=classifier,
                         num_classes=num_classes, in_chans=int(train.images.shape[1]), image_size=image_size,
                         block_size=block_size, classifier_kwargs=classifier_kwargs, adaptation_kwargs=ak, **top)
    cipher = cipher_for(key) if key is not None else None
    transforms: list[Any] = []
    if augment:
        transforms += [RandomCrop(tuple(train.images.shape[-2:]), padding=4), RandomHorizontalFlip()]
    if cipher is not None:
        transforms.append(EncryptBatch(cipher))
    fit(model, (train.images, train.labels), epochs=epochs, transforms=transforms or None, seed=seed, **fit_kwargs)
    test_x = cipher(test.images) if cipher is not None else test.images
    acc = evaluate(model, (test_x, test.labels))["acc"]
    return model, float(acc)
