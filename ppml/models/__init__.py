"""Classifiers and image-to-image networks by name: a small registry in the style of timm.

>>> import torch
>>> from ppml.models import create_model, list_models
>>> m = create_model("resnet20", num_classes=10)
>>> m(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 10])
>>> "convmixer" in list_models()
True

Notebooks add their own networks (e.g. adaptation networks) with :func:`register_model`.
Every factory takes keyword arguments only; :func:`create_model` checks them against the
factory's signature so a typo fails loudly instead of being silently ignored.
"""

from __future__ import annotations

import fnmatch
import inspect
from typing import Any, Callable, TypeVar, overload

import torch.nn as nn

__all__ = ["create_model", "register_model", "list_models", "model_signature"]

F = TypeVar("F", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


@overload
def register_model(fn: F) -> F: ...
@overload
def register_model(fn: str | None = None) -> Callable[[F], F]: ...


def register_model(fn: Any = None) -> Any:
    """Register a model factory under its function name (or under an explicit name).

    Use as ``@register_model`` or ``@register_model("name")``. Re-registering the same
    function (same module and qualified name, e.g. re-running a notebook cell) replaces the
    entry; registering a *different* function under a taken name raises ``ValueError``.

    >>> @register_model("tiny_linear_doc")
    ... def _tiny(num_classes: int = 10) -> nn.Module:
    ...     return nn.Linear(4, num_classes)
    >>> create_model("tiny_linear_doc", num_classes=3).out_features
    3
    """

    def deco(f: F, name: str | None) -> F:
        key = name or f.__name__
        old = _REGISTRY.get(key)
        if old is not None and (old.__module__, old.__qualname__) != (f.__module__, f.__qualname__):
            raise ValueError(
                f"model name {key!r} is already registered by {old.__module__}.{old.__qualname__}; "
                "choose another name")
        _REGISTRY[key] = f
        return f

    if callable(fn):
        return deco(fn, None)
    return lambda f: deco(f, fn)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models, optionally filtered by a shell-style pattern.

    >>> list_models("resnet*")[:2]
    ['resnet18_cifar', 'resnet20']
    """
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def model_signature(name: str) -> inspect.Signature:
    """The signature of a registered factory (what :func:`create_model` accepts for ``name``)."""
    return inspect.signature(_lookup(name))


def _lookup(name: str) -> Callable[..., nn.Module]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}") from None


def create_model(name: str, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``.

    ``num_classes=None`` keeps the factory's own default (10 for every classifier here);
    networks without a class count (``unet``) reject an explicit ``num_classes``.
    Unknown names raise ``ValueError`` listing the registered ones; unknown keyword
    arguments raise ``TypeError`` listing the accepted ones.

    >>> create_model("resnet20", widht=3)
    Traceback (most recent call last):
    ...
    TypeError: create_model('resnet20'): unknown argument(s) widht; accepted: num_classes, in_chans, shortcut
    """
    fn = _lookup(name)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        accepted = [p for p, v in params.items() if v.kind in (v.KEYWORD_ONLY, v.POSITIONAL_OR_KEYWORD)]
        unknown = [k for k in kwargs if k not in accepted]
        if unknown:
            raise TypeError(f"create_model({name!r}): unknown argument(s) {', '.join(unknown)}; "
                            f"accepted: {', '.join(accepted)}")
    return fn(**kwargs)


# Importing the modules registers their models (they import register_model from here).
from . import convmixer, resnet, unet, vit, wideresnet  # noqa: E402,F401
from . import pyramidnet  # noqa: E402,F401  (ScrambleMix's ShakeDrop network)
from . import adaptation  # noqa: E402,F401  (LE/ELE adaptation networks, paper 05)
