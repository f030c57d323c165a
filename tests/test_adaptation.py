"""Adaptation networks (paper 05 / Tanaka 2018 / Madono et al. 2020): input representation,
shapes, the block structure, and that the LE network can undo an LE key exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from ppml.ciphers import cipher_for
from ppml.keys import LEKey
from ppml.models import create_model, list_models
from ppml.models.adaptation import ELEAdaptation, LEAdaptation, nibble_planes

torch.set_num_threads(1)


def test_registered():
    assert {"le_adaptation", "ele_adaptation", "adapted_classifier"} <= set(list_models())


def test_nibble_planes_exact_and_float_input():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    p = nibble_planes(x)
    assert p.shape == (2, 6, 4, 4)
    assert torch.equal((p[:, :3] * 15).round().to(torch.uint8), x & 15)
    assert torch.equal((p[:, 3:] * 15).round().to(torch.uint8), x >> 4)
    assert torch.equal(nibble_planes(x.float() / 255), p)  # the loader's float input gives the same planes


def test_le_network_can_undo_an_le_key_exactly():
    """On nibble planes each LE block is a fixed permutation + (1 − v) flips of its 2·B·B·C inputs;
    the B×B-stride-B convolution + 1×1 convolution of Tanaka's network can express its inverse."""
    b, c = 4, 3
    key = LEKey.generate(image_size=8, block_size=b, seed=1)
    x = torch.randint(0, 256, (3, c, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    y = cipher_for(key)(x)
    L = 2 * b * b * c
    net = LEAdaptation(in_chans=c, block_size=b, out_chans=2 * c, hidden=L, depth=1).eval()
    # nibble index j within a block = half·BBC + (r·B + s)·C + ch  <->  plane (half·C + ch) at (r, s)
    j = np.arange(L)
    half, rest = j // (b * b * c), j % (b * b * c)
    r, s, ch = rest // c // b, rest // c % b, rest % c
    with torch.no_grad():
        net.conv.weight.zero_()
        net.conv.weight[j, half * c + ch, r, s] = 1.0          # hidden unit j = scrambled nibble j
        last = net.body[-2]
        last.weight.zero_(); last.bias.zero_()
        inv = key.invert.astype(bool)
        src = key.perm                                         # out[j] = in[perm[j]] ^ 15·invert[j]
        o = (half[src] * c + ch[src]) * b * b + r[src] * b + s[src]   # PixelShuffle channel of plain nibble perm[j]
        last.weight[o, j, 0, 0] = torch.where(torch.from_numpy(inv), -1.0, 1.0)
        last.bias[o] = torch.from_numpy(inv.astype(np.float32))
        out = net(y)
    # eval-mode BN with fresh statistics scales by 1/sqrt(1 + 1e-5): equal to ~1e-5
    assert torch.allclose(out, nibble_planes(x), atol=1e-4)
    assert not torch.allclose(nibble_planes(y), nibble_planes(x), atol=0.1)


def test_ele_blocks_are_processed_separately_until_mixed():
    net = ELEAdaptation(image_size=16, block_size=4).eval()
    with torch.no_grad():
        net.mix.copy_(torch.eye(16))
        x = torch.rand(1, 3, 16, 16)
        x2 = x.clone(); x2[:, :, 4:8, 8:12] = torch.rand(1, 3, 4, 4)  # block (1, 2) = block 6
        d = (net(x) - net(x2)).abs().sum(1)[0]
    changed = d > 0
    assert changed[4:8, 8:12].all() and changed.sum() == 16
    perm = torch.eye(16)[torch.randperm(16, generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        net.mix.copy_(perm)  # h'[:, :, j] = h[:, :, i] where perm[i, j] = 1
        d = (net(x) - net(x2)).abs().sum(1)[0]
    j = int(perm[6].argmax())
    grid = d.view(4, 4, 4, 4).sum((1, 3)).flatten()  # (gh, B, gw, B) -> changed amount per block
    assert (grid > 0).nonzero().flatten().tolist() == [j]  # block 6's features moved to position j


@pytest.mark.parametrize("adaptation", ["le", "ele", "none"])
def test_adapted_classifier_shapes_and_inputs(adaptation):
    m = create_model("adapted_classifier", adaptation=adaptation, classifier="convmixer", num_classes=7,
                     classifier_kwargs={"dim": 8, "depth": 1, "kernel_size": 3, "patch_size": 4}).eval()
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        a, b = m(x), m(x.float() / 255)
    assert a.shape == (2, 7) and torch.allclose(a, b, atol=1e-5)


def test_le_adaptation_trains():
    m = create_model("le_adaptation", out_chans=3)
    x = torch.rand(2, 3, 32, 32)
    m(x).sum().backward()
    assert m.conv.weight.grad is not None and m.conv.weight.grad.abs().sum() > 0


def test_errors():
    with pytest.raises(ValueError, match="adaptation must be one of"):
        create_model("adapted_classifier", adaptation="tanaka")
    with pytest.raises(ValueError, match="representation must be one of"):
        LEAdaptation(representation="nibble")
    with pytest.raises(ValueError, match="not divisible by block_size"):
        ELEAdaptation(image_size=30, block_size=4)
    with pytest.raises(ValueError, match="the block grid is fixed"):
        ELEAdaptation(image_size=32)(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"expected \(N, 3, H, W\)"):
        LEAdaptation()(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="adaptation='none' takes no"):
        create_model("adapted_classifier", adaptation="none", representation="bytes")
