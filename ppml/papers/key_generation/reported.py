"""Paper 05 — Madono, Tanaka, Onishi & Ogawa, "Scrambling Parameter Generation to Improve
Perceptual Information Hiding" (IS&T Electronic Imaging).

Numbers copied from the paper text (``shared/papers/004_*.txt``): Table 2 (accuracy and PIH
metric, mean and SD, for the four schemes with random keys — "Original" — and with the
proposed key selection) and Table 3 (three CIFAR-10 test images: predicted class, posterior
probability and LPIPS for the plain image and PE / LE with selected keys). Figs. 3, 4 and 5
are plots whose values are not printed; only the paper's statements about them are kept
(:data:`CLAIMS`). Accuracies are in percent (as printed); PIH metrics are mean LPIPS-alex.

>>> TABLE2["original"]["PE"]["acc_mean"], TABLE2["proposed"]["LE"]["pih_mean"]
(93.4, 0.3016)
>>> [row["class"] for row in TABLE3]
['frog', 'automobile', 'horse']
>>> SETTINGS["trials"], SETTINGS["repeats"]
(20, 10)
"""

from __future__ import annotations

__all__ = ["PAPER", "SETTINGS", "TABLE2", "TABLE3", "CLAIMS", "UNSPECIFIED", "SCHEMES"]

PAPER = ("K. Madono, M. Tanaka, M. Onishi and T. Ogawa, Scrambling Parameter Generation to Improve "
         "Perceptual Information Hiding (shared/papers/004)")

#: The four scrambling schemes, in the order the paper lists them (Sec. "Experiments").
SCHEMES = ("PE", "EtC", "LE", "ELE")

#: What the paper states about its setup.
SETTINGS = {
    "dataset": "cifar10",
    "pih_metric": "LPIPS (AlexNet), mean over the image set, Eq. (1)",
    "pih_images": "CIFAR-10 training set (50,000 images)",
    "metric_study_images": 50_000,        # Fig. 3: "50,000 images from training dataset were scrambled"
    "metric_study_repeats": 10,           # Fig. 3: "iterated ten times for each inversion ratio"
    "trials": 20,                         # "we set 20 for the trial number from Fig. 5"
    "repeats": 10,                        # Figs. 4/5: "We iterated ten times for each trial number"
    "classifier": "ShakeDrop (PyramidNet) with the scheme's adaptation network",
    "epochs": 100,
    "batch_size": 64,
    "optimizer": "SGD, Nesterov, momentum 0.9",
    "lr": 0.1,
    "milestones": (50, 75),               # 0.1 → 0.01 at 50 → 0.001 at 75
    "gamma": 0.1,
}

#: What the paper leaves open, and what the notebook does about it.
UNSPECIFIED = {
    "block_sizes": "not stated; the notebook uses 4×4 blocks for EtC, LE and ELE (the authors' "
                   "ELE code uses 4×4 for all block-wise schemes) and PE has no blocks",
    "weight_decay": "not stated; 5e-4 as in the authors' adaptation-network code",
    "accuracy_runs": "the number of training runs behind the accuracy SD is not stated",
    "adaptation_for_pe_etc": "'the adaptation network is proposed in each image scramble approach'; "
                             "PE's paper has none (the notebook uses none), EtC gets the block-wise "
                             "ELE-style network (per-block convolutions + block mixing)",
    "fig3_normalisation": "Fig. 3 plots the nine metrics on one axis; the scaling is not stated — the "
                          "notebook min–max normalises each curve over the inversion ratios",
    "augmentation": "not stated; the authors' code uses random crop (padding 4) + horizontal flip "
                    "before scrambling",
}

#: Table 2: accuracy (%) and PIH metric, mean and SD, per scheme; "original" = random key,
#: "proposed" = the best of N = 20 keys (Algorithm 1).
TABLE2 = {
    "original": {
        "ELE": {"acc_mean": 69.49, "acc_sd": 1.6205, "pih_mean": 0.3000, "pih_sd": 0.0026},
        "EtC": {"acc_mean": 79.42, "acc_sd": 2.9198, "pih_mean": 0.1482, "pih_sd": 0.0033},
        "PE": {"acc_mean": 93.40, "acc_sd": 0.3114, "pih_mean": 0.3161, "pih_sd": 0.0038},
        "LE": {"acc_mean": 93.75, "acc_sd": 0.2620, "pih_mean": 0.2880, "pih_sd": 0.0091},
    },
    "proposed": {
        "ELE": {"acc_mean": 71.38, "acc_sd": 3.1268, "pih_mean": 0.2999, "pih_sd": 0.0030},
        "EtC": {"acc_mean": 78.47, "acc_sd": 3.3404, "pih_mean": 0.1513, "pih_sd": 0.0014},
        "PE": {"acc_mean": 93.58, "acc_sd": 0.1201, "pih_mean": 0.3420, "pih_sd": 0.0075},
        "LE": {"acc_mean": 93.05, "acc_sd": 0.8164, "pih_mean": 0.3016, "pih_sd": 0.0046},
    },
}

#: Table 3: three CIFAR-10 images; for each, the predicted class, probability and LPIPS of the
#: plain image and of PE / LE with selected keys (the class is the same in all three columns).
TABLE3 = [
    {"class": "frog", "plain": {"prob": 0.9902, "lpips": 0.0}, "PE": {"prob": 0.9993, "lpips": 0.3701},
     "LE": {"prob": 0.9978, "lpips": 0.2804}},
    {"class": "automobile", "plain": {"prob": 0.9971, "lpips": 0.0}, "PE": {"prob": 0.9986, "lpips": 0.3874},
     "LE": {"prob": 0.9999, "lpips": 0.3553}},
    {"class": "horse", "plain": {"prob": 0.9994, "lpips": 0.0}, "PE": {"prob": 0.9997, "lpips": 0.4070},
     "LE": {"prob": 0.9992, "lpips": 0.3130}},
]

#: The paper's findings in words (the figures print no values).
CLAIMS = {
    "fig3": "BRISQUE, FID and LPIPS are highest at a 50 % inversion ratio and lower towards 0 % and "
            "100 %; LPIPS has the sharpest peak, so LPIPS is chosen as the PIH metric.",
    "table1": "the image with 50 % inversion is the hardest to recognise, and LPIPS agrees.",
    "fig4": "the mean PIH metric of the selected key rises slightly with the number of trials, "
            "except for ELE (already high).",
    "fig5": "the SD of the PIH metric falls with the number of trials; PE's PIH is the most unstable; "
            "N = 20 is chosen from this figure.",
    "table2": "key selection raises the PIH of PE and LE and lowers its SD at comparable accuracy; "
              "ELE and EtC are less accurate than PE and LE.",
    "table3": "with selected keys, PE and LE predict the same class as the plain image with high "
              "probability while the images are very hard for humans to recognise.",
}
