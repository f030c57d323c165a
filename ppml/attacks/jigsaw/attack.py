"""The jigsaw attack on a batch (:func:`jigsaw_attack`) and the sweep of notebook 03
(:func:`jigsaw_sweep`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .pieces import SCHEMES, Arrangement, _grid, assemble, true_arrangement
from .solver import _norm_scheme, solve
from .scoring import aligned_reconstruction, score


# --------------------------------------------------------------------------------------------
# The attack on a batch, the sweep of notebook 03 and the augmentation study of notebook 02
# --------------------------------------------------------------------------------------------

SCORE_KEYS = ("direct", "neighbour", "largest_component", "colour", "ssim")


def jigsaw_attack(*, test_protected: torch.Tensor, block_size: int, scheme: str = "EtC",
                  truth: Arrangement | None = None, test_plain: torch.Tensor | None = None,
                  **solve_kwargs: Any) -> dict[str, Any]:
    """Solve the blocks of ``test_protected`` (ciphertext only), assemble and (given ``truth``
    and ``test_plain``, the plain images behind it) score: returns ``arrangement``,
    ``reconstruction`` (aligned to the truth when it is given), ``cpu_s`` and, with the truth,
    the mean scores of :func:`score`.

    >>> from ppml.ciphers import BlockScramble
    >>> from ppml.keys import BlockScrambleKey
    >>> from ppml.attacks.jigsaw import smooth_test_image
    >>> x = smooth_test_image(32, seed=2)[None]
    >>> p = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    >>> y = BlockScramble(key=BlockScrambleKey(p.numpy(), image_size=32, block_size=8))(x)
    >>> r = jigsaw_attack(test_protected=y, block_size=8, scheme="BlockScramble",
    ...                   truth=true_arrangement(p, grid=(4, 4)), test_plain=x)
    >>> r["direct"], r["ssim"]
    (1.0, 1.0)
    """
    t0 = time.process_time()
    _grid(test_protected, block_size, "jigsaw_attack", name="test_protected", value_range=(0.0, 1.0))
    encrypted, original = test_protected, test_plain
    sol = solve(encrypted, block_size, scheme=scheme, **solve_kwargs)
    out: dict[str, Any] = {"arrangement": sol}
    if truth is not None:
        out.update(score(sol, truth, original=original, encrypted=encrypted if original is not None else None,
                         block_size=block_size))
        out["reconstruction"] = aligned_reconstruction(encrypted, sol, truth, block_size)
    else:
        out["reconstruction"] = assemble(encrypted, sol, block_size)
    out["cpu_s"] = time.process_time() - t0
    return out


@dataclass
class JigsawResults:
    """``record[name]`` — mean scores of a configuration (``direct``, ``neighbour``,
    ``largest_component``, ``colour``, ``ssim``) with ``pieces``, ``n_images`` and ``cpu_s``;
    ``examples[name]`` — the first image of it: ``original``, ``encrypted``, ``reconstruction``
    (uint8 ``(C, H, W)``)."""

    record: dict[str, dict[str, float]]
    examples: dict[str, dict[str, torch.Tensor]]

    def rows(self) -> list[dict[str, Any]]:
        """One table row per configuration (scores rounded to 3 decimals)."""
        return [{"configuration": k, **{m: (round(v, 3) if isinstance(v, float) else v) for m, v in r.items()}}
                for k, r in self.record.items()]


def _summ(res: dict[str, Any], pieces: int, n: int, cpu: float, scheme: str) -> dict[str, float]:
    d = {m: float(res[m]) for m in SCORE_KEYS if m in res and not (m == "colour" and scheme != "EtC")}
    d.update(pieces=int(pieces), n_images=int(n), cpu_s=round(float(cpu), 2))
    return d


def jigsaw_sweep(images_by_size: Mapping[int, torch.Tensor], schemes: Sequence[str] = SCHEMES,
                 blocks: Sequence[int] = (4, 8, 16), *, seed: int = 0, max_pieces: int | None = None,
                 **solve_kwargs: Any) -> JigsawResults:
    """The solver against every scheme × block size × image size (Chuman, Kurihara & Kiya's
    experiment): every image is encrypted under its own key (derived from ``seed``), solved
    from its ciphertext alone and scored against the truth. ``images_by_size``: size → uint8
    images ``(N, 3, size, size)`` (e.g. :func:`ppml.datasets.photo_crops`); configurations whose
    size is not a multiple of the block, or with more than ``max_pieces`` pieces, are skipped.
    Record keys are ``f"{scheme}-B{block}-{size}px"``.

    >>> from ppml.attacks.jigsaw import smooth_test_image
    >>> x = {32: torch.stack([smooth_test_image(32, seed=s) for s in range(2)])}
    >>> res = jigsaw_sweep(x, blocks=(8,))
    >>> sorted(res.record), res.record["EtC-B8-32px"]["direct"]
    (['BlockScramble-B8-32px', 'EtC-B8-32px'], 1.0)
    """
    from ppml.ciphers import cipher_for
    from ppml.keys import BlockScrambleKey, EtCKey

    if not isinstance(images_by_size, Mapping) or not images_by_size:
        raise ValueError("jigsaw_sweep: images_by_size must be a non-empty mapping size -> images (N, C, size, size)")
    names = [_norm_scheme(s) for s in schemes]
    record: dict[str, dict[str, float]] = {}
    examples: dict[str, dict[str, torch.Tensor]] = {}
    for size, x in images_by_size.items():
        _grid(x, 1, "jigsaw_sweep", name=f"images_by_size[{size}]")
        if x.shape[-1] != int(size) or x.shape[-2] != int(size):
            raise ValueError(f"jigsaw_sweep: images given for size {size} are {tuple(x.shape[-2:])}")
        for si, scheme in enumerate(names):
            for b in blocks:
                if size % b or (size // b) ** 2 < 2 or (max_pieces is not None and (size // b) ** 2 > max_pieces):
                    continue
                t0 = time.process_time()
                sols, truths, encs = [], [], []
                for i in range(x.shape[0]):
                    ss = np.random.SeedSequence([int(seed), int(size), int(b), si, i])
                    kc = EtCKey if scheme == "EtC" else BlockScrambleKey
                    key = kc.generate(image_size=int(size), block_size=int(b), channels=x.shape[1], seed=ss)
                    y = cipher_for(key)(x[i:i + 1])
                    sols.append(solve(y, int(b), scheme=scheme, **solve_kwargs))
                    truths.append(true_arrangement(key))
                    encs.append(y)
                sol, tru, enc = Arrangement.concat(sols), Arrangement.concat(truths), torch.cat(encs)
                res = score(sol, tru, original=x, encrypted=enc, block_size=int(b))
                cpu = time.process_time() - t0
                name = f"{scheme}-B{b}-{size}px"
                record[name] = _summ(res, (size // b) ** 2, x.shape[0], cpu, scheme)
                examples[name] = {"original": x[0], "encrypted": enc[0],
                                  "reconstruction": aligned_reconstruction(enc[:1], sol[0], tru[0], int(b))[0]}
    return JigsawResults(record, examples)
