"""The paper-scale rehearsal (issue 17): stand-in data in the real formats, the training caps,
the stamp on every output, every notebook's paper path, and one data-parallel training."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from ppml import datasets as D
from ppml import rehearsal as R
from ppml.train import fit, rehearsal_caps

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["01_scramblemix", "02_block_scramble_augmentation", "03_isotropic_etc",
             "04_transformation_network", "05_key_generation"]


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    return R.write_standins(tmp_path_factory.mktemp("standins"), datasets=["cifar10", "cifar100", "svhn"],
                            weights=False)


def test_standins_load_through_the_real_loaders(small_root):
    for name, classes in (("cifar10", 10), ("cifar100", 100), ("svhn", 10)):
        assert D.dataset_available(name, root=small_root)
        for split, n in zip(("train", "test"), R.STANDIN_SIZES[name]):
            d = D.load_dataset(name, split, root=small_root)
            assert d.images.shape == (n, 3, 32, 32) and d.images.dtype == torch.uint8
            assert d.num_classes == classes and int(d.labels.max()) < classes
            assert d.description.startswith("REHEARSAL STAND-IN")
    # SVHN stores digit 0 as label 10 in the .mat file: the real reader maps it back
    assert int(D.load_dataset("svhn", "test", root=small_root).labels.min()) == 0
    # CIFAR-10's train split is spread over the five pickled batches, 20 images per class
    assert D.load_dataset("cifar10", "train", root=small_root).labels.bincount().tolist() == [20] * 10


def test_md5_checks_stay_on_without_the_marker(small_root, tmp_path):
    """Only a root marked as stand-ins skips torchvision's md5 checks: a copy without the
    marker is what a corrupt real download looks like, and must be refused."""
    copy = tmp_path / "copy"
    shutil.copytree(small_root, copy)
    (copy / R.MARKER).unlink()
    for name in ("cifar10", "svhn"):
        with pytest.raises(D.DatasetNotAvailable, match="torchvision could not load it"):
            D.load_dataset(name, "test", root=copy)


def test_counts_scale_with_the_standin_size():
    p, changes = R.rehearsal_params("03_isotropic_etc", {"attack_n_train": 50_000, "attack_n_test": 10_000,
                                                         "epochs": 300, "batch_size": 64})
    # as many stand-in images as the real count is of the real data set: 50,000 of 50,000 → all 200
    assert p["attack_n_train"] == R.STANDIN_SIZES["cifar10"][0] and p["attack_n_test"] == R.STANDIN_SIZES["cifar10"][1]
    assert p["epochs"] == 300 and p["batch_size"] == 64 and set(changes) == {"attack_n_train", "attack_n_test"}
    p, _ = R.rehearsal_params("04_transformation_network", {"val_size": {"cifar10": 5000, "cifar100": 2500}})
    assert p["val_size"] == {"cifar10": 20, "cifar100": 1}  # 10 % and 5 % of the stand-in train splits


def test_fit_honours_the_rehearsal_caps(monkeypatch):
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(12, 2)

        def forward(self, x):
            seen.append((len(x), torch.is_autocast_enabled("cpu")))
            return self.lin(x.flatten(1))

    x = torch.rand(40, 3, 2, 2)
    y = torch.randint(0, 2, (40,))
    assert rehearsal_caps() == (None, None, None)
    for k, v in {"PPML_REHEARSE_STEPS": "2", "PPML_REHEARSE_EPOCHS": "1", "PPML_REHEARSE_BATCH": "3",
                 "PPML_CPU_AMP": "bf16"}.items():
        monkeypatch.setenv(k, v)
    res = fit(Spy(), (x, y), epochs=200, batch_size=128, lr=0.1, schedule="multistep", milestones=[60, 120],
              progress=False, device="cpu")
    assert len(res.history) == 1 and res.config["epochs"] == 200  # the paper's schedule, one epoch run
    assert seen == [(3, True), (3, True)]  # two steps of at most 3 samples, under bf16 autocast
    monkeypatch.setenv("PPML_REHEARSE_STEPS", "0")
    with pytest.raises(ValueError, match="PPML_REHEARSE_STEPS"):
        rehearsal_caps()


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PPML_", "HF_", "TORCH_HOME"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return env


def _cache_root() -> Path:
    """Stand-ins are kept between test runs (their version stamp rewrites them when they change)."""
    return ROOT / "build" / "rehearsal-standins"


#: The notebook whose rehearsal runs the AMP path (bf16 autocast on the CPU). This CPU has no
#: AMX/AVX512-BF16, so bf16 is emulated (about 3x float32 on the paper models): the others run in
#: float32, which keeps the rehearsal of every notebook inside the test suite's budget.
AMP_NOTEBOOK = "02_block_scramble_augmentation"


@pytest.mark.slow
def test_rehearsal_of_every_notebook(tmp_path):
    """Every notebook's paper path runs on stand-in data; every output is stamped and lands in
    build/rehearsal/, figures/ is not touched; one notebook trains under bf16 autocast.

    Slow: the paper models themselves (WRN-40-10, PyramidNet-110, ViT-B/16 at 224 px, ...) run,
    one step per training."""
    index = ROOT / "figures" / "index.md"
    before = index.stat().st_mtime_ns if index.exists() else None
    others = [s for s in NOTEBOOKS if s != AMP_NOTEBOOK]
    for stems, amp in (([AMP_NOTEBOOK], "bf16"), (others, "fp32")):
        p = subprocess.run([sys.executable, "-m", "ppml.reproduce", "--scale", "paper", "--rehearse", "--no-ddp",
                            "--rehearse-root", str(_cache_root()), "--build-dir", str(tmp_path), *stems],
                           cwd=ROOT, env={**_env(), "PPML_CPU_AMP": amp}, capture_output=True, text=True,
                           timeout=3600)
        print(p.stdout[-6000:], p.stderr[-3000:])
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        assert ("bf16 autocast on the CPU" if amp == "bf16" else "float32 (no autocast) on the CPU") in p.stdout
    figs = tmp_path / "rehearsal" / "figures"
    for stem in NOTEBOOKS:
        res = json.loads((figs / stem / "results.json").read_text())
        assert res["rehearsal"] is True and res["scale"] == "paper (rehearsal)"
        assert res["params"]  # the injected paper parameters are recorded
        for md in (figs / stem).glob("*.md"):
            assert R.STAMP in md.read_text(), md
        assert (tmp_path / "rehearsal" / f"{stem}.ipynb").exists()
    assert (index.stat().st_mtime_ns if index.exists() else None) == before


@pytest.mark.slow
def test_rehearsal_trains_data_parallel_under_torchrun(tmp_path):
    """Notebook 02's paper training (ResNet-18, per-image block scrambling, one-cycle SGD) on two
    gloo processes: both ranks end with the same weights."""
    root = R.prepare(_cache_root())
    env = {**_env(), **R.rehearsal_env(root)}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                        "-m", "ppml.rehearsal", "ddp", str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"ddp_rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["digest"] == ranks[1]["digest"]
    assert ranks[0]["config"]["world_size"] == 2 and ranks[0]["config"]["epochs"] == 250
    assert (tmp_path / "ddp_ck" / "last.pt").exists()  # rank 0 wrote the checkpoint


@pytest.mark.slow
def test_dry_run_lists_exactly_what_is_missing(tmp_path):
    """`--dry-run --scale paper` names every data set and weight file a notebook needs when none
    is there, and nothing once all are (the stand-ins stand for them)."""
    def dry(env):
        p = subprocess.run([sys.executable, "-m", "ppml.reproduce", "--dry-run", "--scale", "paper",
                            "--build-dir", str(tmp_path / "b")], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=1200)
        missing, stem = {}, None
        for line in p.stdout.splitlines():
            if line.startswith("["):
                stem = line.split()[1]
                missing[stem] = set()
            elif line.strip().startswith("missing "):
                missing[stem].add(line.split()[1].rstrip(":"))
        return p.returncode, missing

    empty = tmp_path / "empty"
    rc, missing = dry({**_env(), "PPML_DATA": str(empty), "PPML_WEIGHTS": str(empty / "w"),
                       "TORCH_HOME": str(empty / "t"), "HF_HOME": str(empty / "h"), "HF_HUB_OFFLINE": "1"})
    assert rc == 1
    assert missing == {
        "01_scramblemix": {"dataset:cifar10", "dataset:cifar100", "dataset:svhn", "weights:lpips-alex"},
        "02_block_scramble_augmentation": {"dataset:cifar10"},
        "03_isotropic_etc": {"dataset:cifar10", "dataset:imagenette", "weights:vit_b16", "weights:lpips-alex"},
        "04_transformation_network": {"dataset:cifar10", "dataset:cifar100", "weights:vgg16"},
        "05_key_generation": {"dataset:cifar10", "weights:lpips-alex", "weights:vgg16"},
        "06_benchmark": {"dataset:cifar10", "weights:lpips-alex", "weights:vgg16"},
    }
    root = R.prepare(_cache_root())
    rc, missing = dry({**_env(), **R.rehearsal_env(root)})
    assert rc == 0 and all(not m for m in missing.values()), missing
