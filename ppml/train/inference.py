"""Inference: :func:`evaluate`, :func:`predict` (test-time averaging), :func:`predict_views`,
:func:`predict_datamix` — all through one loop (:func:`_prediction_loop`) — and :class:`Tally`,
the running sums that :func:`evaluate` and :func:`ppml.train.fit` share."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..loader import BatchLoader
from ._runtime import EvalTransform, LossHook, _autocast, _model_device, _name, _unwrap, amp_settings

AVERAGES = ("probs", "logits")


# --------------------------------------------------------------------------- data helpers


def _eval_source(data: Any) -> tuple[torch.Tensor, torch.Tensor | None, BatchLoader | None]:
    """(images, labels or None, the loader if ``data`` was one)."""
    if isinstance(data, BatchLoader):
        return data.images, data.labels, data
    if hasattr(data, "images") and hasattr(data, "labels"):
        return torch.as_tensor(data.images), torch.as_tensor(data.labels), None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return torch.as_tensor(data[0]), torch.as_tensor(data[1]), None
    if isinstance(data, torch.Tensor):
        return data, None, None
    raise TypeError(f"expected a BatchLoader, an object with .images/.labels, an (images, labels) pair "
                    f"or an image tensor, got {type(data).__name__}")


def _eval_batches(data: Any, batch_size: int, device: torch.device, shard: tuple[int, int] = (0, 1),
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, bool]]:
    """In-order batches ``(x, y, to_float)`` before the float conversion (so that test-time
    transforms such as ciphers see uint8), with the loader's own transforms applied if ``data``
    is a loader (seeded from its seed and current epoch)."""
    images, labels, loader = _eval_source(data)
    rank, world = shard
    if world > 1:  # strided shard without padding: every sample is counted exactly once
        images = images[rank::world]
        labels = labels[rank::world] if labels is not None else None
    if len(images) == 0:
        return
    to_float = loader.to_float if loader is not None else True
    dummy = labels if labels is not None else torch.zeros(len(images))
    inner = BatchLoader(images, dummy, batch_size, shuffle=False, to_float=False, device=device,
                        transforms=loader.transforms if loader is not None else None,
                        seed=loader.seed if loader is not None else 0)
    if loader is not None:
        inner.set_epoch(loader.epoch)
    for x, y in inner:
        yield x, (y if labels is not None else None), to_float


def _float(x: torch.Tensor, to_float: bool) -> torch.Tensor:
    return x.float().div_(255) if to_float and x.dtype == torch.uint8 else x


def _hard(y: torch.Tensor) -> torch.Tensor:
    """Class indices from class indices or soft (N, K) targets."""
    return y.argmax(1) if y.ndim == 2 else y


def _ce(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean", label_smoothing: float = 0.0) -> torch.Tensor:
    if y.ndim == 2:  # soft targets (mixup-style)
        y = y.to(logits.dtype)
    return F.cross_entropy(logits, y, reduction=reduction, label_smoothing=label_smoothing)


def _unpack_loss(out: Any, hook: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[0], torch.Tensor):
        return out[0], out[1]
    raise TypeError(f"the loss hook {hook} must return a scalar tensor or (loss, logits), got {type(out).__name__}")



# --------------------------------------------------------------------------- running sums


class Tally:
    """Running sums of one pass over data, in one float64 tensor (one ``all_reduce`` under DDP):
    the loss summed over samples, correct predictions, samples, samples with logits (a loss hook
    may return none) and, for test-time averaging, the correct predictions of each view.

    >>> t = Tally(torch.device("cpu"))
    >>> t.add(torch.tensor(2.0), 4, torch.tensor([[1., 0.], [0., 1.], [1., 0.], [1., 0.]]), torch.tensor([0, 1, 1, 1]))
    >>> t.summary()
    {'loss': 0.5, 'acc': 0.5, 'n': 4, 'correct': 2}
    """

    LOSS, CORRECT, N, SCORED = range(4)

    def __init__(self, device: torch.device, views: int = 0) -> None:
        self.sums = torch.zeros(4 + views, dtype=torch.float64, device=device)

    def add(self, loss_sum: torch.Tensor, n: int, logits: torch.Tensor | None, y: torch.Tensor,
            views: Iterable[torch.Tensor] = ()) -> None:
        """Add one batch of ``n`` samples: ``loss_sum`` (summed over the batch), the (averaged)
        ``logits`` or None, targets ``y`` (indices or soft), and each view's logits."""
        s = self.sums
        s[self.LOSS] += loss_sum
        if logits is not None:
            hard = _hard(y)
            s[self.CORRECT] += (logits.argmax(1) == hard).sum()
            s[self.SCORED] += n
            for i, o in enumerate(views):
                s[4 + i] += (o.argmax(1) == hard).sum()
        s[self.N] += n

    def all_reduce(self) -> None:
        dist.all_reduce(self.sums)

    def summary(self) -> dict[str, Any]:
        """``{"loss", "acc", "n", "correct"}`` (``acc`` None without logits), plus ``"acc_each"``
        (accuracy of each view) when views were tallied."""
        s = self.sums.tolist()
        n = int(s[self.N])
        out: dict[str, Any] = {
            "loss": s[self.LOSS] / n if n else float("nan"),
            "acc": s[self.CORRECT] / s[self.SCORED] if s[self.SCORED] else None,
            "n": n,
            "correct": int(s[self.CORRECT]),
        }
        if len(s) > 4:
            out["acc_each"] = [c / n for c in s[4:]]
        return out


# --------------------------------------------------------------------------- the prediction loop


def _prediction_loop(model: nn.Module, batches: Iterable[Any], forward: Callable[[Any], Any],
                     consume: Callable[[Any, Any], None]) -> None:
    """The one inference loop: ``consume(batch, forward(batch))`` for every batch in order, the
    model in eval mode without autograd, its train/eval mode restored however the loop ends."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b in batches:
                consume(b, forward(b))
    finally:
        model.train(was_training)


def _average(logits: torch.Tensor, average: str, dim: int) -> torch.Tensor:
    """Mean probabilities (``"probs"``) or mean logits (``"logits"``) over the views axis."""
    return logits.softmax(-1).mean(dim) if average == "probs" else logits.mean(dim)


def _check_average(average: str) -> None:
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {', '.join(AVERAGES)}, got {average!r}")


def _tta_list(transforms: EvalTransform | Sequence[EvalTransform] | None) -> list[EvalTransform | None]:
    if transforms is None:
        return [None]
    ts = [transforms] if callable(transforms) else list(transforms)
    if not ts or not all(callable(t) for t in ts):
        raise ValueError("transforms must be a non-empty list of callables x -> x")
    return ts


def _tta_logits(model: nn.Module, ts: list, autocast: Callable[[], contextlib.AbstractContextManager]
                ) -> Callable[[tuple[torch.Tensor, Any, bool]], torch.Tensor]:
    """``forward`` of test-time averaging: the logits ``(T, n, K)`` of the ``T`` transforms of a
    uint8 batch, one model call per transform."""
    def forward(b: tuple[torch.Tensor, Any, bool]) -> torch.Tensor:
        x, _, to_float = b
        outs = []
        for t in ts:
            xt = x if t is None else t(x)
            with autocast():
                outs.append(model(_float(xt, to_float)).float())
        return torch.stack(outs)
    return forward


# --------------------------------------------------------------------------- public API


def evaluate(model: nn.Module, data: Any, *, transforms: EvalTransform | Sequence[EvalTransform] | None = None,
             average: str = "probs", device: torch.device | str | None = None, batch_size: int = 256,
             loss: LossHook | None = None, amp: bool | str = "auto", amp_dtype: str | None = None,
             distributed: bool | None = None) -> dict[str, Any]:
    """Loss and accuracy of ``model`` on ``data``, optionally averaged over test-time transforms.

    ``data``: a :class:`BatchLoader` (its images, labels, transforms and ``to_float`` are used,
    in order, without shuffling), an object with ``.images``/``.labels``, or a pair.
    ``transforms``: a list of callables ``x -> x`` applied to each uint8 batch before the
    conversion to float — e.g. ``[identity, hflip]`` or one cipher per key; the predictions
    are averaged over them: mean of the softmax probabilities (``average="probs"``; loss =
    NLL of the mean probability) or mean of the logits (``"logits"``; loss = CE of the mean
    logits, as ScrambleMix's code does). ``loss``: evaluate with a custom hook
    ``loss(model, x, y)`` instead (no test-time transforms then).

    Returns ``{"loss", "acc", "n", "correct"}``, plus ``"acc_each"`` (one accuracy per
    transform) when more than one transform is given. Under ``torch.distributed`` (auto-
    detected) each rank evaluates a strided shard and the sums are all-reduced, so every rank
    must call it; pass ``distributed=False`` to evaluate everything on one rank.

    >>> m = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 2))
    >>> x, y = torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1])
    >>> r = evaluate(m, (x, y), transforms=[lambda v: v, lambda v: v.flip(-1)])
    >>> r["n"], r["acc"], len(r["acc_each"])
    (4, 0.5, 2)
    """
    _check_average(average)
    if loss is not None and transforms is not None:
        raise ValueError("evaluate: use either a custom loss hook or test-time transforms, not both")
    ts = _tta_list(transforms)
    model = _unwrap(model)
    dev = torch.device(device) if device is not None else _model_device(model)
    on, dtype = amp_settings(amp, amp_dtype, dev, model)
    if distributed is None:
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    shard = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    tally = Tally(dev, views=len(ts) if loss is None and len(ts) > 1 else 0)
    tta = _tta_logits(model, ts, lambda: _autocast(on, dtype, dev))

    def forward(b: tuple[torch.Tensor, torch.Tensor | None, bool]) -> Any:
        x, y, to_float = b
        if y is None:
            raise ValueError("evaluate needs labels; use predict() for unlabelled images")
        if loss is None:
            return tta(b)
        with _autocast(on, dtype, dev):
            return _unpack_loss(loss(model, _float(x, to_float), y), _name(loss))

    def consume(b: tuple[torch.Tensor, torch.Tensor, bool], out: Any) -> None:
        x, y, _ = b
        n = len(x)
        if loss is not None:
            lv, logits = out
            tally.add(lv.detach().double() * n, n, logits, y)
            return
        avg = _average(out, average, 0)
        if average == "probs":
            logp = avg.clamp_min(1e-12).log()
            loss_sum = -(logp * y).sum() if y.ndim == 2 else F.nll_loss(logp, y, reduction="sum")
        else:
            loss_sum = _ce(avg, y, reduction="sum")
        tally.add(loss_sum, n, avg, y, views=out if len(ts) > 1 else ())

    _prediction_loop(model, _eval_batches(data, batch_size, dev, shard), forward, consume)
    if distributed:
        tally.all_reduce()
    return tally.summary()


def predict(model: nn.Module, data: Any, transforms: EvalTransform | Sequence[EvalTransform] | None = None, *,
            average: str = "probs", batch_size: int = 256, device: torch.device | str | None = None,
            amp: bool | str = "auto", amp_dtype: str | None = None) -> torch.Tensor:
    """Class probabilities (N, K) on the CPU, in data order, averaged over ``transforms``
    as in :func:`evaluate` (``"logits"``: softmax of the mean logits). ``data`` may also be a
    bare image tensor.

    >>> m = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> p = predict(m, torch.zeros(5, 3, 2, 2, dtype=torch.uint8))
    >>> p.shape, bool(torch.allclose(p.sum(1), torch.ones(5)))
    (torch.Size([5, 3]), True)
    """
    _check_average(average)
    ts = _tta_list(transforms)
    model = _unwrap(model)
    dev = torch.device(device) if device is not None else _model_device(model)
    on, dtype = amp_settings(amp, amp_dtype, dev, model)
    res: list[torch.Tensor] = []

    def consume(b: Any, logits: torch.Tensor) -> None:
        avg = _average(logits, average, 0)
        res.append((avg if average == "probs" else avg.softmax(-1)).cpu())

    _prediction_loop(model, _eval_batches(data, batch_size, dev),
                     _tta_logits(model, ts, lambda: _autocast(on, dtype, dev)), consume)
    return torch.cat(res)


def _encoded_views(encode: Callable[[torch.Tensor, torch.Generator], torch.Tensor], images: torch.Tensor,
                   batch_size: int, device: torch.device, seed: int) -> Iterator[torch.Tensor]:
    g = torch.Generator().manual_seed(int(seed))
    for i in range(0, len(images), batch_size):
        yield encode(images[i:i + batch_size].to(device), g)


def predict_views(model: nn.Module, images: torch.Tensor,
                  encode: Callable[[torch.Tensor, torch.Generator], torch.Tensor], *, average: str = "probs",
                  batch_size: int = 256, seed: int = 0, device: torch.device | str | None = None,
                  per_view: bool = False) -> torch.Tensor:
    """Class probabilities ``(N, K)`` averaged over ``T`` encodings of every image (batched).

    ``encode(x, generator)`` maps a uint8 batch ``(n, C, H, W)`` to ``(n, T, C, H, W)`` float
    encodings, e.g. ``lambda x, g: sm.views(x, g, num_views=T)`` (ScrambleMix) — one generator
    seeded with ``seed`` serves all batches; each batch's ``n·T`` encodings go through the model
    at once. ``average="probs"`` averages the posteriors (ScrambleMix slides, "Inference");
    ``"logits"`` averages logits and takes the softmax (the authors' code). ``per_view=True``
    returns the un-averaged ``(N, T, K)`` posteriors instead (e.g. to average the first t views
    for every t ≤ T from one pass).

    >>> m = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> enc = lambda x, g: (x.float() / 255).unsqueeze(1).repeat(1, 4, 1, 1, 1)
    >>> p = predict_views(m, torch.zeros(5, 3, 2, 2, dtype=torch.uint8), enc)
    >>> p.shape, bool(torch.allclose(p.sum(1), torch.ones(5)))
    (torch.Size([5, 3]), True)
    """
    _check_average(average)
    dev = torch.device(device) if device is not None else _model_device(model)
    out: list[torch.Tensor] = []

    def forward(v: torch.Tensor) -> torch.Tensor:
        if v.dim() != 5:
            raise ValueError(f"encode must return (n, T, C, H, W), got shape {tuple(v.shape)}")
        n, t = v.shape[:2]
        return model(v.reshape(n * t, *v.shape[2:]).float()).float().view(n, t, -1)

    def consume(v: torch.Tensor, logits: torch.Tensor) -> None:
        if per_view:
            p = logits.softmax(-1)
        else:
            p = _average(logits, average, 1)
            p = p if average == "probs" else p.softmax(-1)
        out.append(p.cpu())

    _prediction_loop(model, _encoded_views(encode, torch.as_tensor(images), batch_size, dev, seed), forward, consume)
    return torch.cat(out)


def evaluate_views(model: nn.Module, data: Any, encode: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
                   **kw: Any) -> float:
    """Accuracy of :func:`predict_views` on ``data`` (``.images``/``.labels`` or an
    ``(images, labels)`` pair); ``kw`` go to :func:`predict_views`."""
    images, labels = (data.images, data.labels) if hasattr(data, "images") else data
    p = predict_views(model, images, encode, **kw)
    return float((p.argmax(1) == torch.as_tensor(labels)).double().mean())


def predict_datamix(model: nn.Module, datamix: Any, images: torch.Tensor, partner_images: torch.Tensor,
                    partner_labels: torch.Tensor, *, num_classes: int, batch_size: int = 256, seed: int = 0,
                    decode: bool = True) -> torch.Tensor:
    """Scores ``(N, K)`` for DataMix inference at ``T = 1``: each test image is mixed with one
    labelled partner the edge owns (``datamix.encode(x, generator, partner_images=...)``, one
    generator seeded with ``seed``); with ``decode`` the partner's share ``(1 − λ)·onehot(y')``
    is removed from the returned posterior (the edge knows λ and y'). Take ``argmax(1)``.

    >>> from ppml.encoders import DataMix
    >>> from ppml.keys import PEKey
    >>> dm = DataMix(PEKey.generate(image_size=2, seed=0))
    >>> m = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> s = predict_datamix(m, dm, torch.zeros(5, 3, 2, 2), torch.zeros(4, 3, 2, 2), torch.tensor([0, 1, 2, 0]), num_classes=3)
    >>> s.shape
    torch.Size([5, 3])
    """
    dev = _model_device(model)
    g = torch.Generator().manual_seed(int(seed))
    pool = partner_images.to(dev)
    out: list[torch.Tensor] = []
    batches = (datamix.encode(images[i:i + batch_size].to(dev), g, partner_images=pool)
               for i in range(0, len(images), batch_size))

    def consume(b: Any, logits: torch.Tensor) -> None:
        p = logits.softmax(-1)
        if decode:
            yp = F.one_hot(partner_labels.to(dev)[b.partners.to(dev)].long(), num_classes).float()
            p = p - (1 - b.lam.to(dev)).view(-1, 1) * yp
        out.append(p.cpu())

    _prediction_loop(model, batches, lambda b: model(b.images).float(), consume)
    return torch.cat(out)
