"""Numbers printed in Madono, Tanaka & Onishi, "ScrambleMix: A Privacy-Preserving Image
Processing for Edge-Cloud Machine Learning" (slides, paper 01; ``shared/papers/000_*``), for
notebook ``01_scramblemix``. Accuracies in %. The slides have no page numbers; each table
names its slide by title. The security results ("Attacked Results by InstaHide Attack",
Inception Score) are shown only as pictures: the slides print no number for them.

>>> T1["wrn40_10"]["ScrambleMix"]["cifar10"], T1["shakedrop"]["DataMix"]["svhn"]
(93.08, 93.42)
>>> TTA["shakedrop"]["InstaHide, T=10"]["cifar100"]
74.06
"""

from __future__ import annotations

__all__ = ["PAPER", "T1", "TTA", "METHODS", "DATASETS", "MODELS", "SETTINGS"]

PAPER = ("K. Madono, M. Tanaka, M. Onishi, \"ScrambleMix: A Privacy-Preserving Image Processing for "
         "Edge-Cloud Machine Learning\" (slides)")

DATASETS = ("cifar10", "cifar100", "svhn")
MODELS = {"wrn40_10": "WideResNet40x10", "shakedrop": "Shakedrop"}
METHODS = ("DataMix", "InstaHide", "LE", "Random PE", "ScrambleMix")

#: Slide "Results (T=1, w/o Test-Time Augmentation)": accuracy at T = 1, per model.
T1: dict[str, dict[str, dict[str, float]]] = {
    "wrn40_10": {
        "DataMix": {"cifar10": 66.89, "cifar100": 38.31, "svhn": 19.60},
        "InstaHide": {"cifar10": 53.58, "cifar100": 39.06, "svhn": 52.47},
        "LE": {"cifar10": 91.34, "cifar100": 70.62, "svhn": 96.50},
        "Random PE": {"cifar10": 92.23, "cifar100": 70.82, "svhn": 96.83},
        "ScrambleMix": {"cifar10": 93.08, "cifar100": 71.71, "svhn": 96.96},
    },
    "shakedrop": {
        "DataMix": {"cifar10": 80.10, "cifar100": 50.97, "svhn": 93.42},
        "InstaHide": {"cifar10": 52.93, "cifar100": 39.95, "svhn": 52.87},
        "LE": {"cifar10": 94.02, "cifar100": 77.59, "svhn": 97.26},
        "Random PE": {"cifar10": 93.51, "cifar100": 77.10, "svhn": 97.26},
        "ScrambleMix": {"cifar10": 95.02, "cifar100": 79.39, "svhn": 97.47},
    },
}

#: Slide "Results (T>=1, with Test-Time Augmentation)": InstaHide with T = 10 encodings vs
#: ScrambleMix with T = 4 key pairs.
TTA: dict[str, dict[str, dict[str, float]]] = {
    "wrn40_10": {
        "InstaHide, T=10": {"cifar10": 94.92, "cifar100": 78.32, "svhn": 94.97},
        "ScrambleMix, T=4": {"cifar10": 93.12, "cifar100": 71.87, "svhn": 97.01},
    },
    "shakedrop": {
        "InstaHide, T=10": {"cifar10": 92.91, "cifar100": 74.06, "svhn": 93.38},
        "ScrambleMix, T=4": {"cifar10": 95.31, "cifar100": 79.41, "svhn": 97.54},
    },
}

#: Settings not on the slides but in the authors' code (REFERENCE_FACTS.md).
SETTINGS = {"num_pairs": 4, "alpha": 5e-3, "lam": 1.0, "epochs": 200, "lr": 0.1, "milestones": (60, 120, 180),
            "instahide_k": 4, "instahide_max_weight": 0.65}
