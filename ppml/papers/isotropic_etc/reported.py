"""Numbers printed in MaungMaung & Kiya, "Privacy-Preserving Image Classification Using
Isotropic Network" (paper 03; ``shared/papers/002_*``), for notebook ``03_isotropic_etc``.

Copied from the paper's tables and Fig. 6 captions; accuracies in %, parameters in
millions, file sizes in MB. ``None`` marks a cell the paper leaves empty (model not applied to
that data set: its daggers and asterisks). Figs. 5, 7 and 8 are pictures/box plots without
printed numbers, so they have no entries here.

>>> TABLE2[1]["model"], TABLE2[1]["cifar10"], TABLE2[1]["imagenette"]
('ViT-B_16', 87.89, 90.62)
>>> TABLE4["JPEG QF=85"]
{'plain': 68.7, 'etc': 69.0, 'ele': 134.5}
>>> FIG6_SSIM["GAN-Attack"]["LE"]
0.864
"""

from __future__ import annotations

__all__ = ["PAPER", "TABLE2", "TABLE3", "TABLE4", "TABLE4_UNCOMPRESSED_MB", "FIG6_SSIM", "SETTINGS",
           "table2_row", "table3_row"]

PAPER = "A. MaungMaung and H. Kiya, \"Privacy-Preserving Image Classification Using Isotropic Network\""

#: Table II: classification accuracy (%) and parameters (×10⁶) of models trained and tested on
#: plain or encrypted images. ``block_size`` None = N/A; ``robust`` is the paper's last column.
TABLE2: list[dict] = [
    {"encryption": "Plain", "model": "ViT-B_16", "params_m": 85.81, "block_size": None,
     "cifar10": 99.06, "imagenette": 99.64, "robust": False},
    {"encryption": "EtC (proposed)", "model": "ViT-B_16", "params_m": 85.81, "block_size": 16,
     "cifar10": 87.89, "imagenette": 90.62, "robust": True},
    {"encryption": "Plain", "model": "ConvMixer-256/8", "params_m": 0.71, "block_size": None,
     "cifar10": 96.07, "imagenette": None, "robust": False},
    {"encryption": "EtC (proposed)", "model": "ConvMixer-256/8", "params_m": 0.71, "block_size": 16,
     "cifar10": 92.72, "imagenette": None, "robust": True},
    {"encryption": "Plain", "model": "ConvMixer-384/8", "params_m": 1.47, "block_size": None,
     "cifar10": None, "imagenette": 96.10, "robust": False},
    {"encryption": "EtC (proposed)", "model": "ConvMixer-384/8", "params_m": 1.47, "block_size": 16,
     "cifar10": None, "imagenette": 90.11, "robust": True},
    {"encryption": "Plain", "model": "ShakeDrop", "params_m": 28.48, "block_size": None,
     "cifar10": 96.70, "imagenette": None, "robust": False},
    {"encryption": "LE", "model": "Adaptation + ShakeDrop", "params_m": 62.97, "block_size": 4,
     "cifar10": 94.49, "imagenette": None, "robust": False},
    {"encryption": "ELE", "model": "Adaptation + ShakeDrop", "params_m": 62.97, "block_size": 4,
     "cifar10": 83.06, "imagenette": None, "robust": True},
    {"encryption": "EtC [5]", "model": "Adaptation + ShakeDrop", "params_m": 62.97, "block_size": 4,
     "cifar10": 89.09, "imagenette": None, "robust": True},
    {"encryption": "Plain", "model": "ResNet-18", "params_m": 11.17, "block_size": None,
     "cifar10": 95.53, "imagenette": None, "robust": False},
    {"encryption": "PE", "model": "ResNet-18", "params_m": 11.17, "block_size": None,
     "cifar10": 91.33, "imagenette": None, "robust": False},
]

#: Table III: accuracy (%) of models trained *and* tested on JPEG-compressed images.
TABLE3: list[dict] = [
    {"model": "ConvMixer-256/8 (EtC)", "dataset": "cifar10", "uncompressed": 92.72, "qf85": 90.43, "qf80": 89.95},
    {"model": "ConvMixer-384/8 (EtC)", "dataset": "imagenette", "uncompressed": 90.11, "qf85": 89.17, "qf80": 88.91},
    {"model": "ViT-B_16 (EtC)", "dataset": "cifar10", "uncompressed": 87.89, "qf85": 81.99, "qf80": 81.84},
    {"model": "ViT-B_16 (EtC)", "dataset": "imagenette", "uncompressed": 90.62, "qf85": 89.63, "qf80": 89.60},
    {"model": "ShakeDrop (ELE)", "dataset": "cifar10", "uncompressed": 83.06, "qf85": 31.5, "qf80": 30.51},
]

#: Table IV: total file size (MB) of all 60,000 CIFAR-10 images, plain vs EtC vs ELE.
TABLE4: dict[str, dict[str, float]] = {
    "JPEG QF=85": {"plain": 68.7, "etc": 69.0, "ele": 134.5},
    "JPEG QF=80": {"plain": 64.4, "etc": 64.7, "ele": 122.4},
    "JPEG-LS": {"plain": 135.9, "etc": 139.7, "ele": 222.1},
    "JPEG 2000": {"plain": 157.3, "etc": 163.8, "ele": 228.6},
}
#: Table IV, last row: the uncompressed data set (one value for all three).
TABLE4_UNCOMPRESSED_MB = 178.20

#: Fig. 6: SSIM under each example image (one CIFAR-10 test image; "partial results are taken
#: from [9]"). Rows: the encrypted image itself and the three attacks' reconstructions.
FIG6_SSIM: dict[str, dict[str, float]] = {
    "Encrypted": {"LE": 0.037, "ELE": 0.002, "PE": 0.041, "EtC": 0.047},
    "FR-Attack": {"LE": 0.101, "ELE": 0.055, "PE": 0.303, "EtC": 0.042},
    "GAN-Attack": {"LE": 0.864, "ELE": 0.009, "PE": 0.109, "EtC": 0.018},
    "ITN-Attack": {"LE": 0.281, "ELE": 0.071, "PE": 0.017, "EtC": 0.025},
}

#: Section IV-A: training settings.
SETTINGS = {
    "cifar10": {"convmixer": {"dim": 256, "depth": 8, "patch_size": 1, "kernel_size": 9, "epochs": 300,
                              "batch_size": 64, "optimizer": "adamw", "lr": 0.01, "weight_decay": 0.01,
                              "schedule": "triangular"}},
    "imagenette": {"convmixer": {"dim": 384, "depth": 8, "patch_size": 4, "kernel_size": 9, "epochs": 300,
                                 "batch_size": 64, "optimizer": "adamw", "lr": 0.01, "weight_decay": 0.01,
                                 "schedule": "triangular"}},
    "vit": {"model": "ViT-B_16 (ImageNet-21k)", "img_size": 224, "batch_size": 512, "optimizer": "sgd",
            "lr": 0.03, "momentum": 0.9, "schedule": "warmup + cosine", "steps_plain": 10_000,
            "steps_encrypted": 20_000},
    "etc_block_size": 16,
}


def table2_row(encryption: str, model: str) -> dict:
    """The Table II row for ``encryption`` ("Plain", "EtC (proposed)", "LE", …) and ``model``.

    >>> table2_row("Plain", "ConvMixer-256/8")["cifar10"]
    96.07
    """
    for r in TABLE2:
        if r["encryption"] == encryption and r["model"] == model:
            return r
    raise KeyError(f"Table II has no row ({encryption!r}, {model!r}); rows: "
                   f"{[(r['encryption'], r['model']) for r in TABLE2]}")


def table3_row(model: str, dataset: str) -> dict:
    """The Table III row for ``model`` on ``dataset`` ("cifar10" or "imagenette").

    >>> table3_row("ShakeDrop (ELE)", "cifar10")["qf85"]
    31.5
    """
    for r in TABLE3:
        if r["model"] == model and r["dataset"] == dataset:
            return r
    raise KeyError(f"Table III has no row ({model!r}, {dataset!r})")
