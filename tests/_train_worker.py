"""Subprocess worker for tests/test_train.py: trains a tiny CNN for 3 epochs with checkpoints.

Usage: python tests/_train_worker.py OUT_FILE CHECKPOINT_DIR [SECONDS_PER_STEP [MARKER_FILE]]

With SECONDS_PER_STEP > 0 every training step sleeps and appends a line to MARKER_FILE, so the
test can kill the process in the middle of a known epoch.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)

from ppml.train import fit, seed_everything  # noqa: E402

N_TRAIN, BATCH, EPOCHS = 48, 8, 3  # 6 steps per epoch
DELAY = 0.0
MARKER: str | None = None


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    y = (x[:, 0].float().mean((1, 2)) > x[:, 1].float().mean((1, 2))).long()
    return x, y


def tiny_cnn() -> nn.Module:
    # BatchNorm (buffers) and dropout (global RNG) make resume exactness non-trivial.
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.3),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 2))


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=g) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)


def slow_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    if model.training and DELAY > 0:
        if MARKER:
            with open(MARKER, "a") as f:
                f.write("step\n")
        time.sleep(DELAY)
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def main() -> None:
    global DELAY, MARKER
    out, ckpt = sys.argv[1], sys.argv[2]
    DELAY = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    MARKER = sys.argv[4] if len(sys.argv) > 4 else None
    seed_everything(0)
    model = tiny_cnn()
    res = fit(model, make_data(N_TRAIN, 1), epochs=EPOCHS, batch_size=BATCH, transforms=random_flip,
              val_data=make_data(16, 2), optimizer="sgd", lr=0.1, schedule="cosine", loss=slow_ce,
              checkpoint_dir=ckpt, seed=5, device="cpu")
    torch.save({"state": model.state_dict(), "history": res.history, "resumed_from": res.resumed_from}, out)


if __name__ == "__main__":
    main()
