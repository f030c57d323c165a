"""Reliability defects of issue 17: checkpoints (fingerprint, permissions, checksum, folder lock),
key files (immutability, geometry bounds, hostile JSON), metrics (non-finite input, SSIM memory)
and the notebook runner's input."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ppml.train import CheckpointError, fit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_train import _worker, linear, one_thread, separable, worker_env  # noqa: E402,F401 (one_thread: autouse)


# --------------------------------------------------------------------------- 1. resume fingerprint


def _scrambler(seed: int):
    """A transform holding a secret permutation in a closure (as a notebook would write it)."""
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(48))

    def scramble(x, g):
        return x.flatten(1)[:, perm].view_as(x)

    return scramble


def test_resume_with_another_key_is_refused(tmp_path):
    fit(linear(), separable(16), epochs=2, batch_size=8, transforms=_scrambler(1), checkpoint_dir=tmp_path)
    # the same key again resumes (a finished run returns its history)
    r = fit(linear(), separable(16), epochs=2, batch_size=8, transforms=_scrambler(1), checkpoint_dir=tmp_path)
    assert r.resumed_from == 2
    with pytest.raises(CheckpointError, match=r"transform 0 changed \(callable:_scrambler.<locals>.scramble: "
                                              r"its key tables differ \(another key\?\)") as e:
        fit(linear(), separable(16), epochs=2, batch_size=8, transforms=_scrambler(2), checkpoint_dir=tmp_path)
    assert "last.pt" in str(e.value)
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    perm = _scrambler(1).__closure__[0].cell_contents
    assert perm.numpy().tobytes().hex()[:32] not in json.dumps(ck["fingerprint"])  # a hash, never the key


def test_resume_with_a_cipher_module_of_another_key_is_refused(tmp_path):
    from ppml.ciphers import cipher_for
    from ppml.transforms import EncryptBatch
    from ppml.keys import BlockScrambleKey

    def enc(seed):
        return EncryptBatch(cipher_for(BlockScrambleKey.generate(image_size=4, block_size=2, seed=seed)))

    fit(linear(), separable(16), epochs=1, batch_size=8, transforms=enc(1), checkpoint_dir=tmp_path)
    assert fit(linear(), separable(16), epochs=1, batch_size=8, transforms=enc(1),
               checkpoint_dir=tmp_path).resumed_from == 1
    with pytest.raises(CheckpointError, match=r"transform 0 changed \(EncryptBatch: its key tables differ"):
        fit(linear(), separable(16), epochs=1, batch_size=8, transforms=enc(2), checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"other transforms \(1 -> 0 transforms"):
        fit(linear(), separable(16), epochs=1, batch_size=8, checkpoint_dir=tmp_path)


def test_resume_on_other_data_of_the_same_size_is_refused(tmp_path):
    fit(linear(), separable(16, 0), epochs=1, batch_size=8, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"other training data \(same size, different images or labels"):
        fit(linear(), separable(16, 1), epochs=1, batch_size=8, checkpoint_dir=tmp_path)


def test_resume_with_another_lambda_loss_is_refused(tmp_path):
    def hook(scale):
        return lambda m, x, y: F.cross_entropy(m(x) * scale, y)

    fit(linear(), separable(16), epochs=1, batch_size=8, loss=hook(1.0), checkpoint_dir=tmp_path)
    assert fit(linear(), separable(16), epochs=1, batch_size=8, loss=hook(1.0),
               checkpoint_dir=tmp_path).resumed_from == 1
    with pytest.raises(CheckpointError, match=r"another loss \(callable:.*<lambda>: its code or settings differ"):
        fit(linear(), separable(16), epochs=1, batch_size=8, loss=hook(2.0), checkpoint_dir=tmp_path)
    # Two lambdas of one function share a name but not their code.
    same_name = [lambda m, x, y: F.cross_entropy(m(x), y), lambda m, x, y: F.cross_entropy(m(x), y) * 2]
    fit(linear(), separable(16), epochs=1, batch_size=8, loss=same_name[0], checkpoint_dir=tmp_path / "b")
    with pytest.raises(CheckpointError, match=r"another loss \(callable:.*<lambda>: its code or settings differ"):
        fit(linear(), separable(16), epochs=1, batch_size=8, loss=same_name[1], checkpoint_dir=tmp_path / "b")


# --------------------------------------------------------------------------- 2. permissions


def test_checkpoints_are_private(tmp_path):
    fit(linear(), separable(16), epochs=2, batch_size=8, val_data=separable(8, 1), select_best="val_loss",
        checkpoint_dir=tmp_path)
    assert stat.S_IMODE((tmp_path / "last.pt").stat().st_mode) == 0o600


# --------------------------------------------------------------------------- 3. checksum


def test_a_flipped_bit_in_a_weight_is_detected(tmp_path):
    m = linear()
    fit(m, separable(16), epochs=1, batch_size=8, checkpoint_dir=tmp_path)
    path = tmp_path / "last.pt"
    raw = bytearray(path.read_bytes())
    weight = m.state_dict()["1.weight"].numpy().tobytes()
    at = bytes(raw).find(weight)
    assert at >= 0 and bytes(raw).find(weight, at + 1) < 0  # stored uncompressed, once
    raw[at + 41] ^= 0x04  # one bit of one float
    path.write_bytes(bytes(raw))
    torch.load(path, weights_only=True)  # torch itself does not notice
    with pytest.raises(CheckpointError, match=r"last\.pt fails its integrity check.*corrupted"):
        fit(linear(), separable(16), epochs=1, batch_size=8, checkpoint_dir=tmp_path)


# --------------------------------------------------------------------------- 4. one run per folder


def test_second_run_on_a_live_folder_is_refused_and_spares_the_first(tmp_path):
    marker = tmp_path / "steps.log"
    first = _worker(tmp_path / "first.pt", tmp_path / "ck", delay=0.1, marker=marker)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        deadline = time.monotonic() + 90
        while not (marker.exists() and marker.read_text()):
            assert first.poll() is None, first.stdout.read()
            assert time.monotonic() < deadline, "the worker never started training"
            time.sleep(0.02)
        # A temporary file of another live writer (pid in its name) must survive a sweep.
        live = tmp_path / "ck" / f".last.pt.{sleeper.pid}.abcd1234.tmp"
        live.write_bytes(b"partial")
        with pytest.raises(CheckpointError, match=rf"ck is in use by another training run \(pid {first.pid} on .*"
                                                  r"_train_worker\.py.*another checkpoint_dir"):
            fit(linear(), separable(16), epochs=1, batch_size=8, checkpoint_dir=tmp_path / "ck")
        out, _ = first.communicate(timeout=120)
        assert first.returncode == 0, out
        assert torch.load(tmp_path / "first.pt", weights_only=True)["resumed_from"] == 0
        ck = torch.load(tmp_path / "ck" / "last.pt", weights_only=True)
        assert ck["epoch"] == 3
        # Once the first run is done the folder is free; the sweep spares the live pid's file and
        # removes a dead writer's.
        dead = tmp_path / "ck" / ".last.pt.leftover.tmp"
        dead.write_bytes(b"partial")
        with pytest.raises(CheckpointError, match="different"):  # another model: refused, but after the sweep
            fit(linear(), separable(16), epochs=1, batch_size=8, checkpoint_dir=tmp_path / "ck")
        assert live.exists() and not dead.exists()
    finally:
        for p in (first, sleeper):
            if p.poll() is None:
                p.kill()
                p.wait()


# --------------------------------------------------------------------------- 5. immutable keys


def test_key_arrays_cannot_be_made_writable_again():
    import pickle

    from ppml.keys import SCHEMES

    for scheme, cls in SCHEMES.items():
        kw = {} if scheme == "pe" else {"block_size": 4}
        key = cls.generate(image_size=8, seed=0, **kw)
        for k in (key, pickle.loads(pickle.dumps(key))):
            for name, arr in k.arrays().items():
                with pytest.raises(ValueError, match="WRITEABLE"):
                    arr.setflags(write=True)
                with pytest.raises(ValueError, match="read-only"):
                    arr[...] = 0
                assert not np.asarray(getattr(k, name)).flags.writeable


def test_cipher_still_decrypts_after_an_attempt_to_mutate_its_key():
    from ppml.ciphers import cipher_for
    from ppml.keys import EtCKey

    key = EtCKey.generate(image_size=8, block_size=4, seed=0)
    cipher = cipher_for(key)
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    y = cipher(x)
    with pytest.raises(ValueError):
        key.block_perm.setflags(write=True)
    assert torch.equal(cipher_for(key).inverse(y), x)


# --------------------------------------------------------------------------- 6. geometry bounds


def _key_file(tmp_path, key, **changes) -> Path:
    d = key._to_dict()
    d.update(changes)
    d.pop("sha256")  # optional in the format: the geometry alone must be checked
    path = tmp_path / "k.json"
    path.write_text(json.dumps(d))
    return path


@pytest.mark.parametrize("cls,changes,geometry", [
    ("LEKey", {"image_size": [1_000_000, 1_000_000]}, "1000000x1000000 images in 4x4 blocks with 3 channel"),
    ("BlockScrambleKey", {"channels": 10**9}, "8x8 images in 4x4 blocks with 1000000000 channel"),
])
def test_key_file_claiming_a_huge_geometry_is_refused_at_load(tmp_path, cls, changes, geometry):
    from ppml import keys

    key = getattr(keys, cls).generate(image_size=8, block_size=4, seed=0)
    path = _key_file(tmp_path, key, **changes)
    assert path.stat().st_size < 2000
    with pytest.raises(ValueError, match="beyond the supported bound") as e:
        keys.load(path)
    assert str(path) in str(e.value) and geometry in str(e.value)


# --------------------------------------------------------------------------- 10. hostile key files


@pytest.mark.parametrize("text,match", [
    (None, r"unknown scheme \['etc'\]"),  # a non-string scheme
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"format": "ppml.key", "version": ' + "9" * 5000 + "}", "not a key file: Exceeds the limit"),
])
def test_hostile_key_files_name_the_file(tmp_path, text, match):
    from ppml.keys import EtCKey, load

    path = tmp_path / "k.json"
    if text is None:
        d = EtCKey.generate(image_size=8, block_size=4, seed=0)._to_dict()
        d["scheme"] = ["etc"]
        text = json.dumps(d)
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        load(path)
    assert type(e.value) is ValueError and f"key file {path}:" in str(e.value)


# --------------------------------------------------------------------------- 8. non-finite input


@pytest.mark.parametrize("metric", ["mse", "psnr", "ssim"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_metrics_reject_non_finite_input(metric, bad):
    from ppml import metrics
    from ppml._checks import RangeError

    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[1, 0, 3, 3] = bad
    for a, b, name in ((x, y, "y"), (y, x, "x")):
        with pytest.raises(RangeError, match=rf"{metric}: {name} must be finite, got 1 non-finite value\(s\) \(NaN or ±inf\)"):
            getattr(metrics, metric)(a, b)
    with pytest.raises(ValueError, match="value_range must be finite"):
        metrics.mse(x, x, value_range=(0, float("nan")))


# --------------------------------------------------------------------------- 9. ssim memory and N = 0


def test_ssim_works_in_chunks_of_bounded_size_with_identical_results(monkeypatch):
    from ppml.metrics import pixel as metrics

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 3, 16, 16), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 256, (40, 3, 16, 16), generator=g, dtype=torch.uint8)
    whole = {gw: metrics.ssim(x, y, gaussian_weights=gw) for gw in (False, True)}
    seen = []
    pool = F.avg_pool2d
    monkeypatch.setattr(metrics.F, "avg_pool2d", lambda t, *a, **k: seen.append(t.shape[0]) or pool(t, *a, **k))
    monkeypatch.setattr(metrics, "_SSIM_CHUNK_VALUES", 3 * 3 * 16 * 16)  # three images per chunk
    for gw in (False, True):
        part = metrics.ssim(x, y, gaussian_weights=gw)
        assert part.dtype == torch.float32 and torch.equal(part, whole[gw])  # bit for bit
    # the work arrays hold 5 planes per channel of at most 3 images, not of all 40
    assert seen and max(seen) == 5 * 3 * 3
    # the whole batch's size is independent of N under the default chunk, too
    monkeypatch.undo()
    seen.clear()
    monkeypatch.setattr(metrics.F, "avg_pool2d", lambda t, *a, **k: seen.append(t.numel()) or pool(t, *a, **k))
    big = torch.zeros(3000, 3, 32, 32, dtype=torch.uint8)
    assert torch.equal(metrics.ssim(big, big), torch.ones(3000))
    assert max(seen) <= 5 * metrics._SSIM_CHUNK_VALUES


def test_ssim_of_an_empty_batch():
    from ppml.metrics import mse, psnr, ssim

    e = torch.zeros(0, 3, 16, 16, dtype=torch.uint8)
    for f in (ssim, mse, psnr):
        r = f(e, e)
        assert r.shape == (0,) and r.dtype == torch.float32
    assert ssim(e.double(), e.double()).dtype == torch.float64
    with pytest.raises(ValueError, match="same shape"):
        ssim(e, torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


# --------------------------------------------------------------------------- 7. dry run lists weights


@pytest.mark.slow  # prepares notebook 03 with papermill in a subprocess (~10 s)
def test_dry_run_as_main_knows_registered_weights_and_vit(tmp_path):
    from ppml import pretrained

    cmd = [sys.executable, "-m", "ppml.reproduce", "--dry-run", "--scale", "paper", "03",
           "--build-dir", str(tmp_path / "build"), "--figures-dir", str(tmp_path / "figures")]
    p = subprocess.run(cmd, env=worker_env(), capture_output=True, text=True, timeout=300, cwd=ROOT)
    out = p.stdout + p.stderr
    assert "03_isotropic_etc" in out and "no module registers" not in out, out
    if not pretrained.trunk_available("alexnet"):
        assert "missing weights:lpips-alex: real ImageNet alexnet weights not found" in out
    if not pretrained.timm_weights_available(pretrained.VIT_B16_PRETRAINED):
        assert "missing weights:vit_b16: timm weights 'vit_base_patch16_224.augreg_in21k'" in out, out


def test_paper_parameters_of_notebook_03_require_vit_weights():
    from ppml import reproduce

    params = reproduce.load_params("paper", ROOT / "notebooks" / "params")["03_isotropic_etc"]
    reqs = [str(r) for r in reproduce.requirements_for(params, params.get("requires", []))]
    assert "weights:vit_b16" in reqs and "weights:lpips-alex" in reqs
    ok, how = reproduce.check_requirement(reproduce.Requirement("weights", "vit_b16"))
    assert "no module registers" not in how and "vit_base_patch16_224.augreg_in21k" in how


# --------------------------------------------------------------------------- 10. runner input


def test_runner_refuses_a_path_to_another_copy_of_a_notebook(tmp_path):
    from ppml import reproduce

    nbdir = ROOT / "notebooks"
    copy = tmp_path / "03_isotropic_etc.ipynb"
    copy.write_text("{}")
    with pytest.raises(reproduce.RunnerError, match=rf"{copy} is not in {nbdir}.*by stem or number"):
        reproduce.resolve([str(copy)], nbdir)
    assert reproduce.resolve([str(nbdir / "03_isotropic_etc.ipynb"), "03_isotropic_etc.ipynb", "03"],
                             nbdir) == ["03_isotropic_etc"] * 3


def test_runner_checks_parameter_types_against_defaults():
    from ppml import reproduce

    with pytest.raises(reproduce.RunnerError, match="parameter epochs = '3' is a str"):
        reproduce.check_parameters("nb", {"scale": "smoke", "epochs": 1}, {"epochs": "3"})
    declared = {"scale": "smoke", "epochs": 1, "lr": 0.1, "augment": True, "datasets": ["a"],
                "model_kwargs": {}, "train_per_class": None, "expr": reproduce._Expression("2 ** 3")}
    ok = {"epochs": 300, "lr": 1, "augment": False, "datasets": ["b", "c"], "model_kwargs": {"d": 1},
          "train_per_class": 50, "expr": 7, "scale": "paper"}
    reproduce.check_parameters("nb", declared, ok)
    reproduce.check_parameters("nb", declared, {"epochs": None})  # None: "all" / "default"
    for bad in ({"epochs": "3"}, {"epochs": 2.5}, {"epochs": True}, {"augment": 1}, {"lr": "0.1"},
                {"datasets": "cifar10"}, {"model_kwargs": []}):
        (name, value), = bad.items()
        with pytest.raises(reproduce.RunnerError, match=re.escape(
                f"nb: parameter {name} = {value!r} is a {type(value).__name__}, but the notebook's default")):
            reproduce.check_parameters("nb", declared, bad)


def test_requires_as_a_single_string_or_wrong_type():
    from ppml import reproduce

    assert [str(r) for r in reproduce.requirements_for({}, "weights:lpips-alex")] == ["weights:lpips-alex"]
    with pytest.raises(reproduce.RunnerError, match="requires must be a list"):
        reproduce.requirements_for({}, {"weights": "lpips-alex"})


def test_resume_of_a_model_holding_a_cipher_of_another_key_is_refused(tmp_path):
    from ppml.ciphers import cipher_for
    from ppml.keys import BlockScrambleKey

    class Encrypted(nn.Module):  # an encrypting first layer: its key tables are buffers of the model
        def __init__(self, seed):
            super().__init__()
            self.cipher = cipher_for(BlockScrambleKey.generate(image_size=4, block_size=2, seed=seed))
            self.net = linear()

        def forward(self, x):
            return self.net(self.cipher((x * 255).round().to(torch.uint8)).float() / 255)

    fit(Encrypted(1), separable(16), epochs=1, batch_size=8, checkpoint_dir=tmp_path)
    assert fit(Encrypted(1), separable(16), epochs=1, batch_size=8, checkpoint_dir=tmp_path).resumed_from == 1
    with pytest.raises(CheckpointError, match=r"a model whose integer buffers differ \(the key tables"):
        fit(Encrypted(2), separable(16), epochs=1, batch_size=8, checkpoint_dir=tmp_path)
