"""ppml.train mixed precision on the CPU: the amp="auto"/True/False rule and bf16's accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from ppml.models import create_model
from ppml.train import amp_settings, cpu_bf16_pays, cpu_channels_last_pays, evaluate, fit

CPU = torch.device("cpu")
SMOKE = Path(__file__).resolve().parents[1] / "data" / "fashion_mnist_smoke.npz"


@pytest.fixture(autouse=True)
def _no_env_amp(monkeypatch):
    monkeypatch.delenv("PPML_CPU_AMP", raising=False)
    monkeypatch.delenv("PPML_AMP_DTYPE", raising=False)


def test_amp_modes_on_the_cpu():
    small = nn.Linear(4, 2)
    assert amp_settings(False, None, CPU, small) == (False, torch.float32)
    assert amp_settings(True, None, CPU, small) == (True, torch.bfloat16)  # True forces
    assert amp_settings("auto", None, CPU, small) == (False, torch.float32)  # a small model never pays
    assert amp_settings(True, "bf16", CPU) == (True, torch.bfloat16)


def test_cpu_env_switch_turns_auto_on(monkeypatch):
    monkeypatch.setenv("PPML_CPU_AMP", "bf16")
    assert amp_settings("auto", None, CPU, nn.Linear(4, 2)) == (True, torch.bfloat16)
    assert amp_settings(False, None, CPU) == (False, torch.float32)


@pytest.mark.parametrize("amp,amp_dtype,match", [
    ("yes", None, "amp must be 'auto'"),
    (1, None, "amp must be 'auto'"),
    (True, "fp32", "amp_dtype must be None"),
    (True, "fp16", "CUDA-only"),
])
def test_amp_bad_values_name_the_fix(amp, amp_dtype, match):
    with pytest.raises(ValueError, match=match):
        amp_settings(amp, amp_dtype, CPU)


def test_bf16_rule_needs_native_units_and_a_big_dense_conv_model():
    resnet18 = create_model("resnet18_cifar")
    assert cpu_bf16_pays(resnet18, native_bf16=True)
    assert not cpu_bf16_pays(resnet18, native_bf16=False)  # emulated bf16: slower (benchmarks/train.py)
    # the notebooks' smoke models stay in float32 even with AMX
    for name, kw in [("convmixer", dict(dim=128, depth=4, kernel_size=5, patch_size=4)), ("resnet20", {})]:
        assert not cpu_bf16_pays(create_model(name, **kw), native_bf16=True), name


def test_fit_autocasts_on_the_cpu_only_when_asked():
    seen = []

    def hook(m, x, y):
        seen.append(torch.is_autocast_enabled("cpu"))
        out = m(x)
        return nn.functional.cross_entropy(out.float(), y), out

    x, y = torch.randint(0, 256, (16, 3, 4, 4), dtype=torch.uint8), torch.arange(16) % 2
    for amp in ("auto", True, False):
        seen.clear()
        fit(nn.Sequential(nn.Flatten(), nn.Linear(48, 2)), (x, y), epochs=1, batch_size=8, loss=hook, amp=amp,
            device="cpu", progress=False)
        assert seen == [amp is True] * 2, amp


def _fashion(n_train: int, n_test: int):
    d = np.load(SMOKE)
    def split(s, n):
        return torch.from_numpy(d[f"images_{s}"][:n]).unsqueeze(1), torch.from_numpy(d[f"labels_{s}"][:n]).long()
    return split("train", n_train), split("test", n_test)


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 10))


def test_bf16_training_reaches_fp32_accuracy_on_fashion_mnist():
    """bf16 autocast on the CPU must not cost accuracy: 2 epochs on 2,000 real Fashion-MNIST
    images, 1,000 test images (binomial sd of an accuracy near 0.75: 1.4 points)."""
    train, test = _fashion(2000, 1000)
    acc, states = {}, {}
    for amp in (False, True):
        m = _small_cnn()
        fit(m, train, epochs=2, batch_size=64, optimizer="adamw", lr=0.01, schedule="onecycle", amp=amp,
            device="cpu", seed=0, progress=False)
        acc[amp] = evaluate(m, test, amp=amp)["acc"]
        states[amp] = m.state_dict()
    # bf16 really ran (else the comparison below would be vacuous) ...
    assert any(not torch.equal(states[False][k], states[True][k]) for k in states[False])
    # ... learnt the task, and lands within noise (3 points, ~2 sd) of float32.
    assert acc[False] > 0.65 and acc[True] > 0.65, acc
    assert abs(acc[True] - acc[False]) <= 0.03, acc


def test_channels_last_trains_the_same_model_and_auto_follows_the_rule():
    x, y = _fashion(256, 0)[0]
    runs = {}
    for cl in (False, True):
        m = _small_cnn()
        r = fit(m, (x, y), epochs=1, batch_size=64, lr=0.05, channels_last=cl, device="cpu", seed=0, progress=False)
        runs[cl] = (m, r.final["train_loss"])
    conv = runs[True][0][3].weight  # (32, 16, 3, 3): the two formats differ
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert runs[False][0][3].weight.is_contiguous()  # False leaves the model alone
    # same maths, other kernels: equal up to float rounding (amplified a little by 4 SGD steps),
    # far closer than the distance training moved the weights
    assert runs[True][1] == pytest.approx(runs[False][1], rel=1e-4)
    moved = max((a - b).abs().max().item() for a, b in zip(runs[False][0].parameters(), _small_cnn().parameters()))
    apart = max((a - b).abs().max().item() for a, b in zip(runs[False][0].parameters(), runs[True][0].parameters()))
    assert apart < 2e-3 < moved / 10, (apart, moved)
    # "auto" (the default) on the CPU: channels_last exactly where cpu_channels_last_pays says so
    small = _small_cnn()
    assert cpu_channels_last_pays(small)
    fit(small, (x[:64], y[:64]), epochs=1, batch_size=64, lr=0.05, device="cpu", seed=0, progress=False)
    assert small[3].weight.is_contiguous(memory_format=torch.channels_last) and not small[3].weight.is_contiguous()
    lin = nn.Sequential(nn.Conv2d(x.shape[1], 2, 1), nn.Flatten(), nn.Linear(2 * x.shape[2] * x.shape[3], 10))  # mostly linear
    assert not cpu_channels_last_pays(lin)
    fit(lin, (x[:64], y[:64]), epochs=1, batch_size=64, lr=0.05, device="cpu", seed=0, progress=False)
    assert lin[0].weight.is_contiguous()
    with pytest.raises(ValueError, match="channels_last must be 'auto'"):
        fit(_small_cnn(), (x, y), epochs=1, channels_last="yes")
