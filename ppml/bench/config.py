"""The scales (flat presets :data:`CONFIGS`), the columns and the settings each depends on, name parsing."""

from __future__ import annotations

from typing import Any, Sequence

import torch


BENCH_VERSION = 2

# ------------------------------------------------------------------------------------ scales
# One flat preset per scale (airbench / nanoGPT style): every number the bench uses is here.
_SMOKE: dict[str, Any] = dict(
    device="cpu", seed=0, image_size=32,
    # classification: the embedded real Fashion-MNIST sample
    dataset="fashion-mnist-smoke", n_train_per_class=100, n_test_per_class=50,
    model="convmixer", model_kwargs={"dim": 64, "depth": 3, "kernel_size": 5, "patch_size": 4},
    adaptation_out_chans=16, epochs=3, batch_size=64, optimizer="adamw", lr=0.01, weight_decay=0.01,
    schedule="triangular",
    # images for compression, LPIPS, throughput and attacks: real colour photo crops, 32 px
    n_examples=4, n_compress=64, jpeg_quality=85, lossless="png", n_lpips=32, n_throughput=1024, throughput_repeats=3,
    n_victims=32, n_victim_train=256, n_attacker=256,
    # attacker budgets
    gan={"epochs": 1, "width": 8, "d_width": 8, "block_features": 8, "n_res": 1, "batch_size": 32, "lr": 1e-3,
         "lr_d": 1e-3, "fix_polarity": True},
    itn={"epochs": 2, "width": 8, "depth": 2, "batch_size": 32}, itn_keys=2,
    jigsaw_n=4, le_stats={"restarts": 2, "fw_iters": 20},
    mixing={"n_private": 16, "encodings_per_image": 16},
    # the transformation network h_θ (one α) on the bench's training set; "frozen": ψ = the bench's classifier
    # trained on plain images first (the authors' later code; notebook 04's smoke regime), h_θ from an identity init
    transformnet={"alpha": 0.01, "regime": "frozen", "n_train": 1000, "identity_epochs": 4, "identity_lr": 0.01,
                  "epochs": 1, "width": 8, "depth": 1, "batch_size": 64, "optimizer": "adamw", "lr": 0.005,
                  "weight_decay": 0.0, "schedule": "cosine", "milestones": None},
)
_CPU: dict[str, Any] = {
    **_SMOKE, "n_train_per_class": None, "n_test_per_class": None, "epochs": 10,
    "model_kwargs": {"dim": 128, "depth": 4, "kernel_size": 5, "patch_size": 2},
    "n_compress": 256, "n_lpips": 128, "n_victims": 64, "n_victim_train": 1024, "n_attacker": 1024,
    "gan": {**_SMOKE["gan"], "epochs": 8, "width": 16, "d_width": 16, "block_features": 16, "n_res": 3},
    "itn": {"epochs": 10, "width": 16, "depth": 2, "batch_size": 32}, "itn_keys": 4,
    "jigsaw_n": 16, "le_stats": {"restarts": 6, "fw_iters": 40},
    "mixing": {"n_private": 32, "encodings_per_image": 40},
    "transformnet": {**_SMOKE["transformnet"], "n_train": 5000, "epochs": 5, "width": 16, "depth": 2},
}
_PAPER: dict[str, Any] = {
    **_CPU, "device": "cuda", "dataset": "cifar10",
    "model_kwargs": {"dim": 256, "depth": 8, "kernel_size": 9, "patch_size": 1},  # ConvMixer-256/8 (paper 002)
    "epochs": 200, "batch_size": 128, "n_compress": 1000, "n_lpips": 1000, "n_victims": 200, "n_victim_train": 5000,
    "n_attacker": 5000,
    "gan": {"epochs": 100, "width": 64, "d_width": 128, "block_features": 16, "n_res": 3, "batch_size": 128,
            "lr": 2e-4},  # SIA-GAN's own sizes
    "itn": {"epochs": 200, "width": 64, "depth": 4, "batch_size": 128}, "itn_keys": 8,
    "jigsaw_n": 100, "mixing": {"n_private": 100, "encodings_per_image": 40},
    "transformnet": {"alpha": 0.01, "regime": "joint", "n_train": 45000, "identity_epochs": 0, "identity_lr": 0.01,
                     "epochs": 200, "width": 64, "depth": 4, "batch_size": 128, "weight_decay": 5e-4,
                     "optimizer": "sgd", "lr": 0.1, "schedule": "multistep", "milestones": [60, 120, 160]},
}
#: scale → the flat preset (``cpu``: ~30 CPU-minutes; ``paper``: a GPU and CIFAR-10, wired but not run here)
CONFIGS: dict[str, dict[str, Any]] = {"smoke": _SMOKE, "cpu": _CPU, "paper": _PAPER}

#: column → the settings it depends on (its cache fingerprint)
_DATA = ("seed", "image_size")
_PHOTOS = _DATA + ("n_victims", "n_victim_train", "n_attacker")
COLUMNS: dict[str, tuple[str, ...]] = {
    "accuracy": _DATA + ("dataset", "n_train_per_class", "n_test_per_class", "model", "model_kwargs",
                         "adaptation_out_chans", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule"),
    "compression": _DATA + ("n_compress", "jpeg_quality", "lossless"),
    "lpips": _DATA + ("n_lpips",),
    "key_space": _DATA,
    "examples": _DATA + ("n_examples",),
    "throughput": _DATA + ("n_throughput", "throughput_repeats"),
    "fr": _PHOTOS, "gan": _PHOTOS + ("gan",), "itn": _PHOTOS + ("itn", "itn_keys"),
    "jigsaw": _PHOTOS + ("jigsaw_n",), "le_stats": _PHOTOS + ("le_stats",), "mixing": _PHOTOS + ("mixing",),
}
BASE_COLUMNS = ("accuracy", "compression", "lpips", "key_space", "throughput", "examples")


#: the attacker's and the measurements' budgets: a paper-scale rehearsal keeps the paper's data set and
#: classifier (their code paths) and takes these from the smoke preset
_BUDGET_KEYS = ("n_examples", "n_compress", "n_lpips", "n_throughput", "n_victims", "n_victim_train", "n_attacker",
                "gan", "itn", "itn_keys", "jigsaw_n", "le_stats", "mixing", "transformnet")


def _rehearsal_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Inside ``python -m ppml.reproduce --scale paper --rehearse`` (no GPU): the CPU and the smoke
    budgets for everything :func:`ppml.train.fit` does not cap itself."""
    from ppml.train import rehearsal_caps

    if rehearsal_caps()[0] is None or torch.cuda.is_available():
        return cfg
    return {**cfg, "device": "cpu", **{k: CONFIGS["smoke"][k] for k in _BUDGET_KEYS}}


# ------------------------------------------------------------------------------------ names
def parse_names(values: str | Sequence[str] | None, valid: Sequence[str], what: str) -> list[str]:
    """Split comma/space separated names, keep order, drop repeats; an unknown name raises
    ``ValueError`` naming it and the valid ones. ``None`` or ``"all"`` → every valid name."""
    if values is None:
        return list(valid)
    if isinstance(values, str):
        values = [values]
    names: list[str] = []
    for v in values:
        for n in str(v).replace(",", " ").split():
            if n not in names:
                names.append(n)
    if names == ["all"] or not names:
        return list(valid)
    bad = [n for n in names if n not in valid]
    if bad:
        raise ValueError(f"unknown {what}{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))}: "
                         f"choose from {', '.join(valid)}")
    return names
