"""PyramidNet with ShakeDrop (ScrambleMix's "ShakeDrop" network) and WRN-40-10 in the registry."""

from __future__ import annotations

import pytest
import torch

from ppml.models import create_model, list_models
from ppml.models.pyramidnet import PyramidNet, ShakeDrop, _ShakeDropFn


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_paper_networks_are_registered_with_their_sizes():
    assert {"pyramidnet_shakedrop", "wideresnet"} <= set(list_models())
    assert round(n_params(create_model("pyramidnet_shakedrop")) / 1e6, 1) == 28.5  # ShakeDrop paper: 28.5 M
    assert round(n_params(create_model("wideresnet")) / 1e6, 1) == 55.8  # WRN-40-10: 55.8 M (Zagoruyko & Komodakis)


def test_widths_grow_linearly_and_survival_decays_linearly():
    m = PyramidNet(depth=20, alpha=48, num_classes=5)  # n = 3, N = 9 blocks, +48/9 channels per block
    blocks = list(m.blocks)
    widths = [b.branch[1].out_channels for b in blocks]
    assert widths == [round(16 + 48 * (i + 1) / 9) for i in range(9)]
    ps = [b.shake.p for b in blocks]
    assert ps[-1] == pytest.approx(0.5) and ps[0] == pytest.approx(1 - 0.5 / 9)
    assert [b.stride for b in blocks].count(2) == 2
    assert m(torch.zeros(3, 3, 32, 32)).shape == (3, 5)


def test_shakedrop_forward_backward_factors():
    x = torch.ones(2, 1, 1, 1, requires_grad=True)
    gate, alpha, beta = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1), torch.full((2, 1, 1, 1), -0.5), torch.full((2, 1, 1, 1), 0.25)
    y = _ShakeDropFn.apply(x, gate, alpha, beta)
    assert y.flatten().tolist() == [-0.5, 1.0]  # b = 0: α·F; b = 1: F
    y.sum().backward()
    assert x.grad.flatten().tolist() == [0.25, 1.0]  # b = 0: β·grad; b = 1: grad


def test_shakedrop_is_the_expectation_at_test_and_random_in_training():
    sd = ShakeDrop(p=0.7)
    x = torch.ones(1000, 1, 1, 1)
    torch.manual_seed(0)
    y = sd(x).flatten()
    assert float((y == 1).double().mean()) == pytest.approx(0.7, abs=0.05)  # per-sample gates
    assert float(y.mean()) == pytest.approx(0.7, abs=0.05)  # E[b + α − bα] = p
    assert torch.equal(sd.eval()(x), 0.7 * x)
    batch = ShakeDrop(p=0.5, per_sample=False)
    vals = batch(x).flatten()
    assert bool((vals == 1).all()) or not bool((vals == 1).any())  # one gate for the batch
    with pytest.raises(ValueError, match=r"ShakeDrop: p must be a probability in \[0, 1\], got 1.5"):
        ShakeDrop(p=1.5)
    with pytest.raises(ValueError, match="depth must be 6n"):
        PyramidNet(depth=111)
