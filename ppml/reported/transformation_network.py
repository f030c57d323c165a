"""Numbers printed in Ito, Kinoshita & Kiya, "Image Transformation Network for
Privacy-Preserving Deep Neural Networks and Its Security Evaluation" (paper 003 in
``shared/papers``), for notebook ``04_transformation_network``.

Table I (§III-A, p. 3): test accuracy (%) of ResNet-20 ψ on images from h_θ trained with
weight α, on plain images, and on the two perceptual-encryption baselines. Figs. 3–5 are
images and a box plot (PSNR of ITN-Attack estimates on the 10,000 CIFAR-100 test images,
α = 0.005) without printed numbers, so they have no entries here.

>>> TABLE1[0.005]
{'cifar10': 91.72, 'cifar100': 70.78}
>>> table1_rows()[4]
{'method': 'Plain image', 'alpha': None, 'cifar10': 91.23, 'cifar100': 67.9}
"""

from __future__ import annotations

__all__ = ["PAPER", "TABLE1", "TABLE1_PLAIN", "TABLE1_BASELINES", "SETTINGS", "table1_rows"]

PAPER = ("H. Ito, Y. Kinoshita and H. Kiya, \"Image Transformation Network for Privacy-Preserving Deep "
         "Neural Networks and Its Security Evaluation\"")

#: Table I, "Proposed" rows: α → accuracy (%) on CIFAR-10 and CIFAR-100.
TABLE1: dict[float, dict[str, float]] = {
    0.005: {"cifar10": 91.72, "cifar100": 70.78},
    0.01: {"cifar10": 91.41, "cifar100": 70.08},
    0.05: {"cifar10": 89.63, "cifar100": 42.91},
    0.1: {"cifar10": 39.92, "cifar100": 1.00},
}

#: Table I, "Plain image" row (ψ trained and tested on plain images).
TABLE1_PLAIN: dict[str, float] = {"cifar10": 91.23, "cifar100": 67.9}

#: Table I, conventional methods: Tanaka's learnable encryption [15] and the pixel-based
#: encryption [16], [17].
TABLE1_BASELINES: dict[str, dict[str, float]] = {
    "Tanaka [15]": {"cifar10": 85.18, "cifar100": 60.08},
    "Pixel-based [16], [17]": {"cifar10": 90.99, "cifar100": 60.50},
}

#: §III-A: training settings of every network (h_θ, ψ).
SETTINGS: dict[str, object] = {
    "h": "U-Net [23]", "psi": "ResNet-20 [24]",
    "train_val": {"cifar10": (45_000, 5_000), "cifar100": (47_500, 2_500)},
    "epochs": 200, "optimizer": "SGD", "momentum": 0.9, "weight_decay": 5e-4, "lr": 0.1,
    "milestones": (60, 120, 160), "gamma": 0.2, "batch_size": 128,
    "augmentation": "random crop, horizontal flip", "selection": "lowest validation loss",
    "fig3_alphas": (0.0, 0.005, 0.01), "fig3_dataset": "cifar100",
    "fig4_alpha": 0.005, "fig4_dataset": "cifar100", "fig5_images": 10_000,
}


def table1_rows() -> list[dict[str, object]]:
    """Table I as rows in the paper's order: method, α (None for non-proposed rows), accuracies."""
    rows: list[dict[str, object]] = [{"method": "Proposed", "alpha": a, **v} for a, v in TABLE1.items()]
    rows.append({"method": "Plain image", "alpha": None, **TABLE1_PLAIN})
    rows += [{"method": k, "alpha": None, **v} for k, v in TABLE1_BASELINES.items()]
    return rows
