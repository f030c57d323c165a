"""Paper 02 — Chuman & Kiya, "Block Scrambling Image Encryption Used in Combination with Data
Augmentation for Privacy-Preserving DNNs" (no public code).

**The paper prints no accuracy numbers.** Fig. 3 ("Image classification accuracy") is a pair of
bar charts — (a) no data augmentation, (b) data augmentation and test-time augmentation —
without printed values, and the text available to us (``shared/papers/001_*.txt``) holds only
the captions, not the bars. So nothing here is a number read from the paper: :data:`FIG3` is
``None`` for every bar, and the notebook shows our numbers with the scale beside them and the
paper's *claims* (:data:`CLAIMS`) in words.

What the paper does state — its settings (Sec. II and III) — is kept here so the notebook's
paper-scale parameters can be checked against it.

>>> FIG3["b"]["plain"] is None and FIG3["a"]["block_scrambled"] is None
True
>>> SETTINGS["block_size"], SETTINGS["num_keys"], SETTINGS["epochs"], SETTINGS["batch_size"]
(8, 4, 250, 128)
"""

from __future__ import annotations

__all__ = ["PAPER", "SETTINGS", "FIG3", "CLAIMS", "UNSPECIFIED"]

PAPER = ("T. Chuman and H. Kiya, Block Scrambling Image Encryption Used in Combination with Data "
         "Augmentation for Privacy-Preserving DNNs (shared/papers/001)")

#: The settings the paper states (Sec. II "Proposed scheme", Sec. III "Simulation condition").
SETTINGS = {
    "dataset": "cifar10",            # 50,000 train / 10,000 test, 32×32, 10 classes
    "model": "ResNet-18",            # our registry: resnet18_cifar
    "block_size": 8,                 # "Bx = By = 8 is used as a block size" (Fig. 2, Sec. II)
    "num_keys": 4,                   # "4 permuted images were generated from every modified image, namely N = 4"
    "key_per_image": True,           # K_{j,s}: image j's own keys; "all images are encrypted by using different security keys"
    "key_redrawn": "every epoch",    # "s is randomly chosen per each epoch"
    "epochs": 250,
    "optimizer": "sgd",
    "batch_size": 128,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "max_lr": 5e-4,                  # "maximum learning rate of 0.0005" (the schedule is not named)
    "train_augmentation": ("random crop, padding 4", "random horizontal flip", "GridMask [Chen et al. 2020]"),
    "augment_before_encryption": True,
    "test_client_augmentation": ("random crop, padding 4", "random horizontal flip"),
    "test_key": "K_T",               # a key of its own for the test image (Sec. II, test step 2)
    "server_tta": ("horizontal flip of the encrypted image",),
}

#: What the paper leaves open, and what this package does about it.
UNSPECIFIED = {
    "lr_schedule": "only a 'maximum learning rate' is given; paper scale uses a one-cycle schedule peaking there",
    "gridmask_parameters": "not given; we use Chen et al.'s ImageNet setting scaled to 32 px (ppml.data.GRIDMASK_32)",
    "tta_averaging": "not said how the two predictions are combined; we average softmax probabilities",
    "test_key_relation": "K_T's relation to the training keys is not stated; we draw a fresh key per test image",
}

#: Fig. 3 bar heights: the paper prints none (see the module docstring).
FIG3 = {
    "a": {"caption": "No data augmentation", "plain": None, "block_scrambled": None},
    "b": {"caption": "Data augmentation and test time augmentation", "plain": None, "block_scrambled": None},
}

#: The paper's claims about Fig. 3 (Sec. III "Simulation result"), quoted.
CLAIMS = (
    "the proposed method was confirmed to improve a classification performance under the use of not only "
    "plain images but also encrypted ones",
    "the difference of accuracies between plain images and encrypted ones was reduced compared to the "
    "difference in Fig. 3(a)",
)
