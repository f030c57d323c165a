"""torchrun worker for tests/test_train.py: data-parallel training on CPU with gloo.

Usage: python -m torch.distributed.run --nproc_per_node 2 ... tests/_ddp_worker.py OUT_DIR CKPT_DIR

Writes OUT_DIR/rank{r}.pt with (1) a BN + dropout + augmentation CNN's final state and
history and (2) a BN-free linear model's final weights, for comparison with one process.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.nn as nn

torch.set_num_threads(1)

from ppml.train import fit, seed_everything  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _train_worker import make_data, random_flip, tiny_cnn  # noqa: E402


def linear_model() -> nn.Module:
    torch.manual_seed(11)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))


def main() -> None:
    out, ckpt = sys.argv[1], sys.argv[2]
    seed_everything(0)
    model = tiny_cnn()
    res = fit(model, make_data(40, 1), epochs=2, batch_size=4, transforms=random_flip,
              val_data=make_data(15, 2), lr=0.1, schedule="constant", checkpoint_dir=ckpt, seed=3,
              device="cpu")
    lin = linear_model()
    # Per-process batch 4 on 2 ranks: each global step sees exactly one-process batch i of size 8.
    fit(lin, make_data(40, 1), epochs=2, batch_size=4, lr=0.1, momentum=0.0, weight_decay=0.0,
        schedule="constant", seed=3, device="cpu")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.save({"state": model.state_dict(), "history": res.history, "config": res.config,
                "linear": lin.state_dict(), "world": world}, f"{out}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()
    # Under heavy CPU load, torch 2.14's gloo occasionally aborts rank 0 during interpreter
    # finalisation *after* a clean destroy_process_group ("terminate called without an active
    # exception", SIGABRT; cf. pytorch/pytorch#179291). Everything is written by now, so skip
    # finalisation to keep the test about training, not about interpreter teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
