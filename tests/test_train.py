"""ppml.train: fit/evaluate/predict, schedules, checkpoints, exact resume after SIGKILL, DDP."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ppml.loader import BatchLoader
from ppml.train import (OPTIMIZERS, SCHEDULES, CheckpointError, TrainConfig, evaluate, fit, lr_schedule, predict,
                        seed_everything)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from _train_worker import make_data, random_flip, tiny_cnn  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def worker_env() -> dict[str, str]:
    env = dict(os.environ, PPML_QUIET="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", GLOO_SOCKET_IFNAME="lo")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def metrics(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def separable(n: int = 64, seed: int = 0):
    """Bright vs dark images: a linear model separates them within a few epochs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    base = torch.where(y.view(-1, 1, 1, 1) == 1, 170, 80)
    x = (base + torch.randint(-40, 40, (n, 3, 4, 4), generator=g)).clamp(0, 255).to(torch.uint8)
    return x, y


def linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 2))


# --------------------------------------------------------------------------- fit basics


def test_fit_learns_and_returns_history(tmp_path):
    model = linear()
    res = fit(model, separable(64, 0), epochs=4, batch_size=16, val_data=separable(32, 1), lr=0.2,
              schedule="cosine", checkpoint_dir=tmp_path, seed=0)
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    assert res.final["val_acc"] >= 0.9 and res["train_loss"][-1] < res["train_loss"][0]
    assert all(h["seconds"] > 0 for h in res.history)
    # The returned history is the one saved as JSON, and the checkpoint records the last epoch.
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["history"] == json.loads(json.dumps(res.history))
    assert saved["config"]["schedule"] == "cosine"
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ck["epoch"] == 4 and states_equal(ck["model"], model.state_dict())
    assert not list(tmp_path.glob("*.tmp"))


def test_same_seed_same_weights_and_cpu_auto_amp_is_float32():
    runs = []
    for amp in ("auto", False):
        m = tiny_cnn()
        torch.manual_seed(1)
        m.load_state_dict(tiny_cnn().state_dict())
        fit(m, make_data(32, 1), epochs=2, batch_size=8, transforms=random_flip, seed=4, amp=amp, device="cpu")
        runs.append(m.state_dict())
    assert states_equal(*runs)  # deterministic; "auto" keeps a small model in float32 on the CPU
    m = tiny_cnn()
    torch.manual_seed(1)
    m.load_state_dict(tiny_cnn().state_dict())
    fit(m, make_data(32, 1), epochs=2, batch_size=8, transforms=random_flip, seed=5, device="cpu")
    assert not states_equal(runs[0], m.state_dict())  # the seed matters (dropout, order, flips)


def test_lr_history_follows_schedule():
    f = lr_schedule("multistep", epochs=4, steps_per_epoch=3, milestones=[1, 3], gamma=0.5)
    res = fit(linear(), separable(24), epochs=4, batch_size=8, lr=0.4, schedule="multistep",
              milestones=[1, 3], gamma=0.5)
    assert res["lr"] == pytest.approx([0.4 * f(3 * e + 2) for e in range(4)])
    assert res["lr"] == pytest.approx([0.4, 0.2, 0.2, 0.1])


def test_accepts_loader_and_dataset_objects():
    from types import SimpleNamespace

    x, y = separable(24)
    a, b = linear(), linear()
    fit(a, BatchLoader(x, y, 8, seed=2), epochs=1, seed=2)
    fit(b, SimpleNamespace(images=x, labels=y), epochs=1, batch_size=8, seed=2)
    assert states_equal(a.state_dict(), b.state_dict())
    with pytest.raises(ValueError, match="transforms on the loader"):
        fit(linear(), BatchLoader(x, y, 8), epochs=1, transforms=random_flip)


def test_loss_hook_and_adamw():
    calls = []

    def only_loss(model, x, y):
        calls.append((type(model).__name__, x.dtype, x.shape[0], y.shape[0]))
        return F.cross_entropy(model(x), y)

    res = fit(linear(), separable(16), epochs=1, batch_size=8, optimizer="adamw", lr=1e-2,
              weight_decay=0.01, loss=only_loss, val_data=separable(8, 1))
    assert calls[0] == ("Sequential", torch.float32, 8, 8)
    assert res.final["train_acc"] is None and res.final["val_acc"] is None  # no logits returned
    assert res.final["val_loss"] > 0

    def with_logits(model, x, y):
        out = model(x)
        return F.cross_entropy(out, y), out

    res = fit(linear(), separable(16), epochs=1, batch_size=8, loss=with_logits, val_data=separable(8, 1))
    assert res.final["train_acc"] is not None and res.final["val_acc"] is not None


def test_custom_optimizer_callable():
    made = []

    def sgd(model):
        made.append(model)
        return torch.optim.SGD(model.parameters(), lr=0.05)

    m = linear()
    res = fit(m, separable(16), epochs=1, batch_size=8, optimizer=sgd, lr=0.05, schedule="constant")
    assert made == [m] and res.config["optimizer"] == "callable:test_custom_optimizer_callable.<locals>.sgd"


def test_grad_clip_bounds_the_update():
    m = linear()
    w0 = [p.detach().clone() for p in m.parameters()]
    fit(m, separable(8), epochs=1, batch_size=8, lr=1.0, momentum=0.0, weight_decay=0.0,
        schedule="constant", grad_clip=1e-3)
    step = math.sqrt(sum(((p.detach() - q) ** 2).sum() for p, q in zip(m.parameters(), w0)))
    assert step == pytest.approx(1e-3, rel=1e-3)  # one SGD step of lr·(clipped gradient)


def test_label_smoothing_raises_the_loss_floor():
    # With smoothing ε the optimal CE is no longer 0, so a well-fit model's loss is higher.
    a, b = linear(), linear()
    ra = fit(a, separable(32), epochs=3, batch_size=8, lr=0.5, schedule="constant")
    rb = fit(b, separable(32), epochs=3, batch_size=8, lr=0.5, schedule="constant", label_smoothing=0.2)
    assert rb.final["train_loss"] > ra.final["train_loss"]


def test_divergence_is_reported():
    nan_loss = lambda m, x, y: m(x).sum() * float("nan")  # noqa: E731
    with pytest.raises(FloatingPointError, match="diverged"):
        fit(linear(), separable(8), epochs=1, batch_size=8, loss=nan_loss)


def test_select_best_keeps_best_weights(tmp_path):
    m = linear()
    res = fit(m, separable(32), epochs=4, batch_size=8, lr=2.0, schedule="constant",
              val_data=separable(16, 3), select_best="val_loss", checkpoint_dir=tmp_path)
    losses = res["val_loss"]
    assert res.best_epoch == 1 + losses.index(min(losses)) and res.best_metric == min(losses)
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert states_equal(m.state_dict(), ck["best_model"])
    assert evaluate(m, separable(16, 3))["loss"] == pytest.approx(min(losses), rel=1e-5)


@pytest.mark.parametrize("kw,match", [
    (dict(epochs=0), "epochs"),
    (dict(epochs=1.5), "epochs"),
    (dict(epochs=1, optimizer="adam"), "sgd, adamw"),
    (dict(epochs=1, schedule="step"), "multistep, cosine, onecycle, triangular, constant"),
    (dict(epochs=1, select_best="val_loss"), "needs val_data"),
    (dict(epochs=1, select_best="acc", val_data=separable(4)), "select_best"),
    (dict(epochs=1, lr=0.0), "lr"),
    (dict(epochs=1, schedule="onecycle", pct_start=1.5), "pct_start"),
    (dict(epochs=2, milestones=[2, 1]), "milestones"),
])
def test_fit_validates_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        fit(linear(), separable(8), batch_size=8, **kw)


def test_train_config_is_the_one_list_of_options():
    # Every field says how it is validated and whether a resumed run must match it.
    for f in dataclasses.fields(TrainConfig):
        assert {"record", "check"} <= set(f.metadata), f.name
    # fit's keyword arguments are exactly the fields (plus the data and config)
    with pytest.raises(TypeError, match="unknown option 'weight_decy'.*did you mean 'weight_decay'"):
        fit(linear(), separable(8), epochs=1, weight_decy=0.1)
    with pytest.raises(TypeError, match="needs epochs"):
        fit(linear(), separable(8), batch_size=8)
    # the record is derived from the fields: every recorded field is there, nothing else but the derived
    res = fit(linear(), separable(16), epochs=1, batch_size=8, progress=False)
    recorded = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata["record"]}
    assert set(res.config) == recorded | {"train_size", "steps_per_epoch", "world_size"}
    assert res.config["optimizer"] == "sgd" and res.config["loss"] == "cross_entropy"
    assert res.config["betas"] == [0.9, 0.999] and res.config["steps_per_epoch"] == 2


def test_fit_takes_a_config_and_keyword_overrides():
    kw = dict(epochs=2, batch_size=8, lr=0.1, seed=2, progress=False)
    runs = []
    for call in (lambda m: fit(m, separable(32), **kw),
                 lambda m: fit(m, separable(32), config=TrainConfig(**kw)),
                 lambda m: fit(m, separable(32), config=TrainConfig(**dict(kw, lr=0.5)), lr=0.1)):
        m = linear()
        r = call(m)
        runs.append((m.state_dict(), [h["train_loss"] for h in r.history], r.config))
    for other in runs[1:]:
        assert states_equal(runs[0][0], other[0]) and runs[0][1:] == other[1:]
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        fit(linear(), separable(8), config={"epochs": 1})
    with pytest.raises(ValueError, match="lr must be > 0"):
        TrainConfig(epochs=1, lr=-1)


def test_public_name_lists():
    assert OPTIMIZERS == ("sgd", "adamw")
    assert set(SCHEDULES) == {"multistep", "cosine", "onecycle", "triangular", "constant"}


# --------------------------------------------------------------------------- schedules


def test_onecycle_matches_torch():
    epochs, spe, lr = 3, 7, 0.3
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * spe, cycle_momentum=False)
    want = []
    for _ in range(epochs * spe):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    f = lr_schedule("onecycle", epochs=epochs, steps_per_epoch=spe)
    assert [lr * f(s) for s in range(epochs * spe)] == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_multistep_matches_torch_per_epoch():
    f = lr_schedule("multistep", epochs=10, steps_per_epoch=4, milestones=[3, 7], gamma=0.2)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[3, 7], gamma=0.2)
    for e in range(10):
        assert all(f(4 * e + i) == pytest.approx(opt.param_groups[0]["lr"]) for i in range(4))
        opt.step()
        ref.step()
    # Default milestones: half and three quarters of training (He et al. 2016).
    g = lr_schedule("multistep", epochs=8, steps_per_epoch=1)
    assert [g(s) for s in range(8)] == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])


def test_triangular_is_convmixers_piecewise_linear_schedule():
    E, spe = 10, 5
    f = lr_schedule("triangular", epochs=E, steps_per_epoch=spe)
    t = lambda s: (s + 1) / spe  # noqa: E731  ConvMixer: epoch + (i + 1)/len(loader)
    peak = [s for s in range(E * spe) if t(s) == 4.0][0]
    knee = [s for s in range(E * spe) if t(s) == 8.0][0]
    assert f(peak) == pytest.approx(1.0) and f(knee) == pytest.approx(1 / 20) and f(E * spe - 1) == 0.0
    assert f(0) == pytest.approx(t(0) / 4)  # linear ramp from 0
    vals = [f(s) for s in range(E * spe)]
    assert max(vals) == vals[peak]
    assert all(a <= b for a, b in zip(vals[:peak], vals[1 : peak + 1]))
    assert all(a >= b for a, b in zip(vals[peak:], vals[peak + 1 :]))


def test_cosine_and_warmup():
    f = lr_schedule("cosine", epochs=4, steps_per_epoch=5, warmup_epochs=1)
    assert [f(s) for s in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert f(5) == pytest.approx(1.0) and f(5 + 7) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 15)))
    g = lr_schedule("constant", epochs=2, steps_per_epoch=2, warmup_epochs=1)
    assert [g(s) for s in range(4)] == pytest.approx([0.5, 1, 1, 1])


# --------------------------------------------------------------------------- evaluate / predict


def test_evaluate_matches_manual_computation():
    torch.manual_seed(0)
    m = linear()
    x, y = separable(20, 4)
    with torch.no_grad():
        logits = m(x.float() / 255)
    r = evaluate(m, (x, y), batch_size=6)
    assert r["n"] == 20
    assert r["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert r["acc"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert m.training  # the mode is restored


def test_test_time_averaging_over_transforms():
    torch.manual_seed(0)
    m = linear()
    x, y = separable(12, 5)
    ts = [lambda v: v, lambda v: v.flip(-1), lambda v: 255 - v]
    with torch.no_grad():
        outs = torch.stack([m(t(x).float() / 255) for t in ts])
    probs = outs.softmax(-1).mean(0)
    r = evaluate(m, (x, y), transforms=ts)
    assert r["loss"] == pytest.approx(F.nll_loss(probs.log(), y).item(), rel=1e-5)
    assert r["acc"] == pytest.approx((probs.argmax(1) == y).float().mean().item())
    assert r["acc_each"] == pytest.approx([(o.argmax(1) == y).float().mean().item() for o in outs])
    rl = evaluate(m, (x, y), transforms=ts, average="logits")
    assert rl["loss"] == pytest.approx(F.cross_entropy(outs.mean(0), y).item(), rel=1e-5)
    p = predict(m, x, ts)
    assert torch.allclose(p, probs, atol=1e-6)
    assert torch.allclose(predict(m, x, ts, average="logits"), outs.mean(0).softmax(-1), atol=1e-6)
    # Transforms see the uint8 batch (so ciphers stay bit-exact) before the float conversion.
    seen = []
    evaluate(m, (x, y), transforms=[lambda v: seen.append(v.dtype) or v])
    assert seen == [torch.uint8]
    with pytest.raises(ValueError, match="average"):
        evaluate(m, (x, y), average="mean")


def test_evaluate_uses_a_loaders_transforms():
    torch.manual_seed(0)
    m = linear()
    x, y = separable(10, 6)
    inv = BatchLoader(x, y, 4, transforms=lambda v, g: 255 - v)
    direct = evaluate(m, (255 - x, y))
    assert evaluate(m, inv)["loss"] == pytest.approx(direct["loss"], rel=1e-6)


# --------------------------------------------------------------------------- checkpoints


def test_resume_of_finished_run_returns_saved_state(tmp_path):
    m = linear()
    r1 = fit(m, separable(16), epochs=2, batch_size=8, checkpoint_dir=tmp_path)
    m2 = linear(seed=9)
    r2 = fit(m2, separable(16), epochs=2, batch_size=8, checkpoint_dir=tmp_path)
    assert r2.resumed_from == 2 and metrics(r2.history) == metrics(r1.history)
    assert states_equal(m.state_dict(), m2.state_dict())
    # resume=False retrains from the given weights (and overwrites the checkpoint).
    r3 = fit(linear(seed=9), separable(16), epochs=2, batch_size=8, checkpoint_dir=tmp_path, resume=False)
    assert r3.resumed_from == 0 and metrics(r3.history) != metrics(r1.history)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    fit(linear(), separable(8), epochs=1, batch_size=8, checkpoint_dir=tmp_path)
    other = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    with pytest.raises(CheckpointError, match=r"last\.pt.*different model architecture.*'1\.bias': \[2\] vs \[3\].*delete"):
        fit(other, separable(8), epochs=1, batch_size=8, checkpoint_dir=tmp_path)


def test_checkpoint_of_another_config_is_refused(tmp_path):
    fit(linear(), separable(8), epochs=1, batch_size=8, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"different training configuration \(lr: 0\.1 -> 0\.2\).*delete"):
        fit(linear(), separable(8), epochs=1, batch_size=8, lr=0.2, checkpoint_dir=tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign"])
def test_corrupt_checkpoint_gives_clear_error(tmp_path, damage):
    fit(linear(), separable(8), epochs=1, batch_size=8, checkpoint_dir=tmp_path)
    path = tmp_path / "last.pt"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    else:
        torch.save({"model": {}}, path)
    match = "not a ppml.train checkpoint" if damage == "foreign" else "corrupt or truncated"
    with pytest.raises(CheckpointError, match=match) as e:
        fit(linear(), separable(8), epochs=1, batch_size=8, checkpoint_dir=tmp_path)
    assert str(path) in str(e.value)


def _worker(out: Path, ckpt: Path, delay: float = 0.0, marker: Path | None = None) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "tests" / "_train_worker.py"), str(out), str(ckpt), str(delay)]
    if marker is not None:
        cmd.append(str(marker))
    return subprocess.Popen(cmd, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(p: subprocess.Popen, timeout: float = 120) -> None:
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out


def test_sigkill_mid_epoch_then_resume_is_exact(tmp_path):
    """A run killed with SIGKILL in the middle of epoch 2 and restarted ends with exactly the
    weights and metrics of an uninterrupted run."""
    steps_per_epoch = 6  # 48 samples, batch 8 (see _train_worker.py)
    marker = tmp_path / "steps.log"
    ref = _worker(tmp_path / "ref.pt", tmp_path / "ck_ref")
    victim = _worker(tmp_path / "victim.pt", tmp_path / "ck", delay=0.25, marker=marker)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert victim.poll() is None, "the worker finished before it could be killed: " + victim.stdout.read()
            assert time.monotonic() < deadline, "the worker never reached epoch 2"
            steps = len(marker.read_text().splitlines()) if marker.exists() else 0
            if (tmp_path / "ck" / "last.pt").exists() and steps >= steps_per_epoch + 2:
                break
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "victim.pt").exists()
    steps = len(marker.read_text().splitlines())
    assert steps_per_epoch < steps < 2 * steps_per_epoch  # died inside epoch 2
    ck = torch.load(tmp_path / "ck" / "last.pt", weights_only=True)
    assert ck["epoch"] == 1 and len(ck["history"]) == 1
    # A kill during a save would leave a temporary file; the restart removes such leftovers.
    (tmp_path / "ck" / ".last.pt.leftover.tmp").write_bytes(b"partial")

    _finish(_worker(tmp_path / "victim.pt", tmp_path / "ck"))
    _finish(ref)
    a = torch.load(tmp_path / "ref.pt", weights_only=True)
    b = torch.load(tmp_path / "victim.pt", weights_only=True)
    assert b["resumed_from"] == 1 and a["resumed_from"] == 0
    assert states_equal(a["state"], b["state"])  # bit for bit, BN buffers included
    assert metrics(a["history"]) == metrics(b["history"])
    assert not list((tmp_path / "ck").glob("*.tmp"))


# --------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_processes_end_identical(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(ROOT / "tests" / "_ddp_worker.py"), str(tmp_path), str(tmp_path / "ck")]
    p = subprocess.run(cmd, env=worker_env(), capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    assert states_equal(r0["state"], r1["state"])  # parameters and BatchNorm buffers
    assert states_equal(r0["linear"], r1["linear"])
    assert metrics(r0["history"]) == metrics(r1["history"])  # all-reduced metrics
    assert r0["config"]["world_size"] == 2 and r0["config"]["steps_per_epoch"] == 5  # 40 / 2 ranks / 4
    saved = json.loads((tmp_path / "ck" / "history.json").read_text())  # written by rank 0
    assert metrics(saved["history"]) == metrics(json.loads(json.dumps(r0["history"])))

    # Two ranks with batch 4 take the same steps as one process with batch 8 (the global batch
    # is the union of the ranks' shards of one permutation), up to float summation order.
    seed_everything(0)
    from _ddp_worker import linear_model

    lin = linear_model()
    fit(lin, make_data(40, 1), epochs=2, batch_size=8, lr=0.1, momentum=0.0, weight_decay=0.0,
        schedule="constant", seed=3, device="cpu")
    for k, v in lin.state_dict().items():
        assert torch.allclose(v, r0["linear"][k], atol=1e-6), k
