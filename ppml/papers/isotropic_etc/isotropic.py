"""Why isotropic networks classify EtC images: the identities of MaungMaung & Kiya, Sec. III-F.

An isotropic network (ViT, ConvMixer) starts with a *patch embedding*: a linear map ``E``
applied to every non-overlapping ``P×P`` patch (a conv with kernel = stride = ``P``). When
the EtC block size equals ``P``, every encryption step acts patch by patch:

* **Eq. (4)** — step 1 (block permutation, key K1) only reorders the patch tokens. A ViT's
  transformer is permutation-equivariant over tokens and reads the class token, so the only
  thing that sees the order is the position embedding: a ViT whose position-embedding rows
  are permuted by the same key, ``E'_pos = E1 · E_pos`` (row ``i`` of ``E'_pos`` is row
  ``block_perm[i]`` of ``E_pos``), gives on the encrypted image *exactly* the logits the
  original ViT gives on the plain image. :func:`permute_position_embedding`, :func:`eq4_check`.
* **Eq. (5)** — steps 2–4 (rotation/flip, negative–positive, channel shuffle) map a patch to
  a fixed signed permutation of its ``C·P·P`` values (plus a constant where negated). *If
  every block uses the same codes*, this is absorbed into the patch embedding,
  ``E' = E2 · E``: column ``k`` of ``E'`` is ``±`` column ``g(k)`` of ``E`` and the bias takes
  the constant (the paper normalises to [−1, 1] so negation is a pure sign flip, Eq. (7);
  our models see [0, 1] inputs, so ``1 − p`` needs the bias term as well — still exact).
  :func:`absorb_block_transform`, :func:`eq5_check`.
* EtC draws steps 2–4 **per block**, so Eq. (5) does not hold for a real EtC key (the paper
  says so): no single ``E2`` from the 96 shared codes reproduces the logits; learning
  (Fig. 5, Table II) has to cope with the rest.
* ConvMixer has no position embedding and convolves across patches, so step 1 is *not*
  absorbed (Eq. (4) has no counterpart there); Eq. (5) holds for its patch embedding.

The module also holds the patch-embedding helpers of Fig. 5 and a small train-and-test helper
the notebook uses for its Table II/III rows.

>>> import torch
>>> from ppml.models import create_model
>>> vit = create_model("vit", patch_size=8, embed_dim=32, depth=1, num_heads=2).eval()
>>> r = eq4_check(vit, torch.rand(2, 3, 32, 32), seed=0)
>>> r["patch_size"], r["matched"] < 1e-5, r["mismatched"] > 1e-3
(8, True, True)
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ppml.ciphers import BlockGrid, BlockScramble, EtC
from ppml.ciphers.grid import block_gather_index
from ppml.keys import BlockScrambleKey, EtCKey

__all__ = [
    "patch_embedding", "patch_size_of", "has_position_embedding", "patch_permutation",
    "permute_position_embedding", "absorb_block_transform", "shared_code_key", "encrypted_equivalent",
    "max_logit_diff", "eq4_check", "eq5_check", "etc_stages", "patch_embedding_weights", "patch_embedding_grid",
    "plot_patch_embeddings", "embedding_similarity",
]


# ----------------------------------------------------------------------------- model anatomy
def patch_embedding(model: nn.Module) -> nn.Conv2d:
    """The patch-embedding conv of a ViT (timm ``patch_embed.proj``) or a ConvMixer (its
    first layer): a :class:`~torch.nn.Conv2d` whose kernel equals its stride.

    >>> from ppml.models import create_model
    >>> patch_embedding(create_model("convmixer", dim=8, depth=1, patch_size=4)).weight.shape
    torch.Size([8, 3, 4, 4])
    """
    conv = None
    pe = getattr(model, "patch_embed", None)
    if pe is not None and isinstance(getattr(pe, "proj", None), nn.Conv2d):
        conv = pe.proj
    elif isinstance(model, nn.Sequential) and len(model) and isinstance(model[0], nn.Conv2d):
        conv = model[0]
    if conv is None or conv.kernel_size != conv.stride or conv.padding not in ((0, 0), "valid"):
        raise TypeError(f"{type(model).__name__} has no patch embedding (a Conv2d with kernel = stride): "
                        "expected a timm VisionTransformer or a ppml ConvMixer")
    if conv.groups != 1 or conv.dilation != (1, 1) or conv.kernel_size[0] != conv.kernel_size[1]:
        raise TypeError("the patch embedding must be a plain square Conv2d (groups=1, dilation=1)")
    return conv


def patch_size_of(model: nn.Module) -> int:
    """Patch size ``P`` of an isotropic network.

    >>> from ppml.models import create_model
    >>> patch_size_of(create_model("vit", patch_size=8, embed_dim=16, depth=1, num_heads=2))
    8
    """
    return int(patch_embedding(model).kernel_size[0])


def has_position_embedding(model: nn.Module) -> bool:
    """Whether ``model`` adds a learnt position embedding to its patch tokens (timm ViT)."""
    return isinstance(getattr(model, "pos_embed", None), torch.Tensor)


def patch_permutation(block_perm: Sequence[int] | np.ndarray, image_size: int | tuple[int, int],
                      block_size: int, patch_size: int) -> np.ndarray:
    """The permutation of ``P×P`` patches that a permutation of ``B×B`` blocks induces.

    Blocks and patches are numbered row-major and ``out[i] = in[perm[i]]``. Exists only when
    the block size is a multiple of the patch size (every block is a group of whole patches);
    otherwise a block permutation cuts patches apart and no patch permutation (hence no
    position-embedding permutation) can match it: ``ValueError``.

    >>> patch_permutation([1, 0], (4, 8), block_size=4, patch_size=2).tolist()
    [2, 3, 0, 1, 6, 7, 4, 5]
    >>> patch_permutation([1, 0, 3, 2], 8, block_size=4, patch_size=8)
    Traceback (most recent call last):
    ...
    ValueError: block size 4 is not a multiple of patch size 8: a block permutation moves parts of patches, so no permutation of patches (or of position-embedding rows) matches it; use block_size = patch_size
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    blocks, patches = BlockGrid(image_size, block_size), BlockGrid(image_size, patch_size)
    b, p = blocks.block_size, patches.block_size
    if b % p:
        raise ValueError(f"block size {b} is not a multiple of patch size {p}: a block permutation moves parts "
                         "of patches, so no permutation of patches (or of position-embedding rows) matches it; "
                         "use block_size = patch_size")
    nb = blocks.n_blocks
    perm = np.asarray(block_perm, dtype=np.int64)
    if perm.shape != (nb,) or not np.array_equal(np.sort(perm), np.arange(nb)):
        raise ValueError(f"block_perm must be a permutation of {nb} blocks, got shape {perm.shape}")
    # on the grid of patches a block is a (B/P)x(B/P) block of patches: the block permutation's
    # gather table over that grid (one patch per "pixel") is the patch permutation
    return block_gather_index(patches.shape, b // p, 1, perm)


# ----------------------------------------------------------------------------- Eq. (4)
def permute_position_embedding(model: nn.Module, patch_perm: Sequence[int] | np.ndarray) -> nn.Module:
    """A copy of a timm ViT whose patch position-embedding rows are permuted: row ``i`` becomes
    row ``patch_perm[i]`` (``E'_pos = E1 · E_pos``, Eq. (4)); class/register-token rows stay.

    With ``patch_perm`` the block permutation of a key whose block size is the patch size,
    ``copy(encrypted) == model(plain)`` up to float rounding.

    >>> from ppml.models import create_model
    >>> m = create_model("vit", patch_size=16, embed_dim=16, depth=1, num_heads=2)
    >>> m2 = permute_position_embedding(m, [3, 2, 1, 0])
    >>> bool(torch.equal(m2.pos_embed[0, 1], m.pos_embed[0, 4])), bool(torch.equal(m2.pos_embed[0, 0], m.pos_embed[0, 0]))
    (True, True)
    """
    if not has_position_embedding(model):
        raise ValueError(f"{type(model).__name__} has no position embedding (pos_embed): Eq. (4) applies to a "
                         "ViT; ConvMixer convolves across patches, so a block permutation is not absorbed there")
    prefix = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 1))
    n = model.pos_embed.shape[1] - prefix
    perm = torch.from_numpy(np.array(patch_perm, dtype=np.int64))
    if perm.shape != (n,) or not torch.equal(perm.sort().values, torch.arange(n)):
        raise ValueError(f"patch_perm must be a permutation of the model's {n} patches, got shape "
                         f"{tuple(perm.shape)}; the key's block size must equal the patch size")
    out = copy.deepcopy(model)
    with torch.no_grad():
        pos = model.pos_embed
        out.pos_embed[:, prefix:] = pos[:, prefix:].index_select(1, perm.to(pos.device))
    return out


# ----------------------------------------------------------------------------- Eq. (5)
def _local_tables(patch_size: int, channels: int, rot_flip: int, negpos: int,
                  channel_perm: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather index ``g`` and negation flags ``t`` of one block's steps 2–4, read from the EtC
    cipher itself (a one-block key), on the flat ``(c, y, x)`` layout of a patch."""
    key = EtCKey(np.array([0]), np.array([rot_flip]), np.array([negpos]), np.array([channel_perm]),
                 image_size=(patch_size, patch_size), block_size=patch_size, channels=channels)
    cipher = EtC(key=key)
    return cipher.index.clone(), (cipher.mask > 0).to(torch.float64)


def absorb_block_transform(model: nn.Module, *, rot_flip: int = 0, negpos: int = 0,
                           channel_perm: int = 0) -> nn.Module:
    """A copy of ``model`` whose patch embedding absorbs one block's EtC steps 2–4 (Eq. (5)).

    With ``x_enc[k] = s_k·x[g(k)] + t_k`` inside each patch (``g``: the rotation/flip and
    channel shuffle; ``t_k = 1``, ``s_k = −1`` where negated, inputs in [0, 1]), the new
    weights are ``W'[:, k] = s_k·W[:, g(k)]`` and the bias ``b' = b − W'·t``, so
    ``copy(x_enc) == model(x)`` when *every* block of ``x_enc`` used these codes and the block
    size equals the patch size.

    >>> from ppml.models import create_model
    >>> m = create_model("convmixer", dim=8, depth=1, patch_size=4).eval()
    >>> m2 = absorb_block_transform(m, rot_flip=5, negpos=1, channel_perm=3).eval()
    >>> key = shared_code_key(EtCKey.generate(image_size=8, block_size=4, seed=0), rot_flip=5, negpos=1,
    ...                       channel_perm=3, block_perm=False)
    >>> x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    >>> max_logit_diff(m2, EtC(key=key)(x) / 255, m, x / 255) < 1e-5
    True
    """
    conv = patch_embedding(model)
    d, c, p, _ = conv.weight.shape
    if not 0 <= int(rot_flip) < 8 or int(negpos) not in (0, 1) or not 0 <= int(channel_perm) < math.factorial(c):
        raise ValueError(f"codes out of range: rot_flip in 0..7, negpos in {{0, 1}}, channel_perm in "
                         f"0..{math.factorial(c) - 1}; got {rot_flip}, {negpos}, {channel_perm}")
    g, t = _local_tables(p, c, int(rot_flip), int(negpos), int(channel_perm))
    out = copy.deepcopy(model)
    new = patch_embedding(out)
    with torch.no_grad():
        w = conv.weight.detach().reshape(d, -1).to(torch.float64)
        w_new = w[:, g.to(w.device)] * (1.0 - 2.0 * t.to(w.device))
        b = conv.bias.detach().to(torch.float64) if conv.bias is not None else torch.zeros(d, dtype=torch.float64,
                                                                                           device=w.device)
        b_new = b - w_new @ t.to(w.device)
        new.weight.copy_(w_new.reshape(d, c, p, p).to(new.weight.dtype))
        if new.bias is None:
            if bool(t.any()):
                new.bias = nn.Parameter(b_new.to(new.weight.dtype))
        else:
            new.bias.copy_(b_new.to(new.bias.dtype))
    return out


def shared_code_key(key: EtCKey, *, rot_flip: int | None = None, negpos: int | None = None,
                    channel_perm: int | None = None, block_perm: bool = True) -> EtCKey:
    """An EtC key like ``key`` whose steps 2–4 use *one* code for every block — the case in
    which Eq. (5) holds exactly. Codes default to block 0's; ``block_perm=False`` drops step 1.

    >>> k = shared_code_key(EtCKey.generate(image_size=32, block_size=8, seed=0), rot_flip=3)
    >>> sorted(set(k.rot_flip.tolist())), len(set(k.negpos.tolist())), len(set(k.channel_perm.tolist()))
    ([3], 1, 1)
    """
    if not isinstance(key, EtCKey):
        raise TypeError(f"expected an EtCKey, got {type(key).__name__}")
    n = key.n_blocks
    pick = lambda v, arr: np.full(n, int(arr[0]) if v is None else int(v), dtype=np.int64)  # noqa: E731
    perm = np.asarray(key.block_perm) if block_perm else np.arange(n)
    return EtCKey(perm.copy(), pick(rot_flip, key.rot_flip), pick(negpos, key.negpos),
                  pick(channel_perm, key.channel_perm), image_size=key.image_size, block_size=key.block_size,
                  channels=key.channels)


def _shared_codes(key: EtCKey) -> tuple[int, int, int] | None:
    codes = (key.rot_flip, key.negpos, key.channel_perm)
    if all(np.all(a == a[0]) for a in codes):
        return tuple(int(a[0]) for a in codes)  # type: ignore[return-value]
    return None


def encrypted_equivalent(model: nn.Module, key: EtCKey | BlockScrambleKey) -> nn.Module:
    """The model that gives on ``key``-encrypted images exactly what ``model`` gives on plain
    ones, built by Eqs. (4) and (5): position rows permuted (ViT) and the patch embedding
    transformed. Needs block size = patch size (or a multiple of it for a pure block
    permutation) and, for EtC, one shared code for steps 2–4 (see :func:`shared_code_key`);
    anything else raises ``ValueError`` saying why no such model exists.
    """
    p = patch_size_of(model)
    out = model
    if isinstance(key, EtCKey):
        codes = _shared_codes(key)
        if codes is None:
            raise ValueError("this EtC key draws rotation/negative-positive/channel codes per block, so no single "
                             "patch-embedding transform E2 exists (Eq. (5) needs one shared code); use "
                             "shared_code_key(key) for the exact case")
        if codes != (0, 0, 0):
            if key.block_size != p:
                raise ValueError(f"steps 2-4 act on {key.block_size}x{key.block_size} blocks but the patches are "
                                 f"{p}x{p}: Eq. (5) needs block_size = patch_size")
            out = absorb_block_transform(out, rot_flip=codes[0], negpos=codes[1], channel_perm=codes[2])
    elif not isinstance(key, BlockScrambleKey):
        raise TypeError(f"expected an EtCKey or BlockScrambleKey, got {type(key).__name__}")
    perm = np.asarray(key.block_perm)
    if not np.array_equal(perm, np.arange(perm.size)):
        patch_perm = patch_permutation(perm, key.image_size, key.block_size, p)
        out = permute_position_embedding(out, patch_perm)
    return out if out is not model else copy.deepcopy(model)


# ----------------------------------------------------------------------------- checks
@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` in eval mode without autograd (the model's mode is restored)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(x)
    finally:
        model.train(was)


def max_logit_diff(model_a: nn.Module, x_a: torch.Tensor, model_b: nn.Module, x_b: torch.Tensor) -> float:
    """``max |model_a(x_a) − model_b(x_b)|`` over all logits, both models in eval mode."""
    return float((_logits(model_a, x_a) - _logits(model_b, x_b)).abs().max())


def _as_float_images(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError("images must be a batch tensor (N, C, H, W), uint8 or float in [0, 1]")
    if images.dtype == torch.uint8:
        return images.float() / 255
    if not images.is_floating_point() or float(images.min()) < 0 or float(images.max()) > 1:
        raise ValueError("float images must lie in [0, 1] (x / 255 for 8-bit data)")
    # quantise like an 8-bit image so the ciphers' float path (which quantises) is exact
    return (images.float() * 255).round() / 255


def _encrypt(key: Any, x: torch.Tensor) -> torch.Tensor:
    cipher = EtC(key=key) if isinstance(key, EtCKey) else BlockScramble(key=key)
    return cipher.to(x.device)(x)


def eq4_check(model: nn.Module, images: torch.Tensor, *, block_sizes: Iterable[int] | None = None,
              seed: int = 0) -> dict[str, Any]:
    """Check Eq. (4) numerically on a ViT: ``max |Δlogit|`` for block permutations of several
    block sizes.

    For each block size ``B`` a random block permutation (a :class:`~ppml.keys.BlockScrambleKey`)
    encrypts ``images``; ``f`` is the ViT on plain images, ``f'`` the ViT with position rows
    permuted by the induced patch permutation. Rows report ``max |f'(enc(x)) − f(x)|`` when
    that permutation exists (``B`` a multiple of ``P``; ``compensated``) and
    ``max |f(enc(x)) − f(x)|`` otherwise (no position permutation can match: blocks cut
    patches). Default block sizes: ``P``, ``P/2`` (if even) and ``2P`` (if it divides the image).

    Returns ``{"patch_size", "logit_scale" (max |f(x)|, what Δ compares with), "matched" (Δ at B = P), "matched_uncompensated" (Δ of the ViT
    itself, B = P), "mismatched" (smallest Δ over the B that do not tile patches), "rows"}``.
    """
    if not has_position_embedding(model):
        raise ValueError(f"{type(model).__name__} has no position embedding: eq4_check needs a ViT "
                         "(use eq5_check for ConvMixer)")
    p = patch_size_of(model)
    x = _as_float_images(images).to(next(model.parameters()).device)
    h, w = x.shape[-2:]
    if block_sizes is None:
        block_sizes = [p] + ([p // 2] if p % 2 == 0 and p > 1 else []) + ([2 * p] if h % (2 * p) == 0 and w % (2 * p) == 0 else [])
    rows = []
    for i, b in enumerate(block_sizes):
        key = BlockScrambleKey.generate(image_size=(h, w), block_size=int(b), channels=x.shape[1], seed=seed + i)
        xe = _encrypt(key, x)
        row = {"model": "ViT", "patch_size": p, "block_size": int(b), "steps": "1 (block permutation)"}
        row["uncompensated"] = max_logit_diff(model, xe, model, x)
        try:
            comp = permute_position_embedding(model, patch_permutation(key.block_perm, (h, w), b, p))
        except ValueError as e:
            row.update(compensation="none exists (blocks cut patches)", max_abs_dlogit=row["uncompensated"],
                       exact=False, reason=str(e).split(":")[0])
        else:
            d = max_logit_diff(comp, xe, model, x)
            row.update(compensation="position rows permuted (Eq. 4)", max_abs_dlogit=d, exact=d <= 1e-5)
        rows.append(row)
    matched = [r for r in rows if r["block_size"] == p]
    bad = [r["max_abs_dlogit"] for r in rows if r["block_size"] % p]
    with torch.no_grad():
        scale = float(model.eval()(x).abs().max())
    return {"patch_size": p, "logit_scale": scale, "matched": matched[0]["max_abs_dlogit"] if matched else None,
            "matched_uncompensated": matched[0]["uncompensated"] if matched else None,
            "mismatched": min(bad) if bad else None, "rows": rows}


def eq5_check(model: nn.Module, images: torch.Tensor, *, seed: int = 0, search: bool = True) -> dict[str, Any]:
    """Check Eq. (5) (and Eq. (4) with it): EtC with block size = patch size.

    Rows (``max |Δlogit|``):

    * ``shared codes, no step 1``: steps 2–4 with one code for all blocks, absorbed into the
      patch embedding — exact;
    * ``shared codes, all 4 steps``: the above plus the block permutation — exact for a ViT
      (Eqs. (4)+(5)); for a ConvMixer step 1 has no counterpart, so it is large;
    * ``per-block codes (real EtC)``: a genuine EtC key; with ``search`` the *smallest* Δ over
      all 96 shared codes (8 dihedral × 2 negation × 6 channel orders) with the block
      permutation compensated where possible — large: EtC is not a patch-embedding transform.

    Returns ``{"patch_size", "shared": Δ of the exact case, "per_block": Δ of real EtC, "rows"}``.
    """
    p = patch_size_of(model)
    x = _as_float_images(images).to(next(model.parameters()).device)
    h, w = x.shape[-2:]
    c = x.shape[1]
    name = "ViT" if has_position_embedding(model) else type(model).__name__
    key = EtCKey.generate(image_size=(h, w), block_size=p, channels=c, seed=seed)
    rows = []
    base = {"model": name, "patch_size": p, "block_size": p}
    k1 = shared_code_key(key, block_perm=False)
    d1 = max_logit_diff(encrypted_equivalent(model, k1), _encrypt(k1, x), model, x)
    rows.append({**base, "steps": "2-4, one shared code", "compensation": "patch embedding (Eq. 5)",
                 "max_abs_dlogit": d1, "exact": d1 <= 1e-5})
    k2 = shared_code_key(key, block_perm=True)
    xe2 = _encrypt(k2, x)
    if has_position_embedding(model):
        d2 = max_logit_diff(encrypted_equivalent(model, k2), xe2, model, x)
        comp = "patch embedding + position rows (Eqs. 4, 5)"
    else:
        codes = _shared_codes(k2)
        d2 = max_logit_diff(absorb_block_transform(model, rot_flip=codes[0], negpos=codes[1], channel_perm=codes[2]),
                            xe2, model, x)
        comp = "patch embedding only (no position embedding to absorb step 1)"
    rows.append({**base, "steps": "1-4, one shared code", "compensation": comp, "max_abs_dlogit": d2,
                 "exact": d2 <= 1e-5})
    if search:
        xe3 = _encrypt(key, x)
        pos = permute_position_embedding(model, key.block_perm) if has_position_embedding(model) else model
        ref = _logits(model, x)  # the plain model's logits, once for all 96 codes
        best = min(float((_logits(absorb_block_transform(pos, rot_flip=r, negpos=n, channel_perm=s), xe3) - ref)
                         .abs().max()) for r, n, s in itertools.product(range(8), range(2), range(math.factorial(c))))
        rows.append({**base, "steps": "1-4, per-block codes (real EtC)",
                     "compensation": "best of all 96 shared codes" + (" + position rows" if pos is not model else ""),
                     "max_abs_dlogit": best, "exact": best <= 1e-5})
    return {"patch_size": p, "shared": d1 if name != "ViT" else min(d1, d2),
            "shared_all_steps": d2, "per_block": rows[-1]["max_abs_dlogit"] if search else None, "rows": rows}


# ----------------------------------------------------------------------------- Fig. 2
def etc_stages(x: torch.Tensor, key: EtCKey) -> dict[str, torch.Tensor]:
    """The EtC procedure step by step (Fig. 2): ``x`` after steps 1, 1–2, 1–3 and 1–4 of
    ``key``, each made by the real :class:`~ppml.ciphers.EtC` cipher with the later steps'
    codes set to identity. The last stage equals ``EtC(key=key)(x)``.

    >>> key = EtCKey.generate(image_size=8, block_size=4, seed=0)
    >>> x = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
    >>> s = etc_stages(x, key)
    >>> list(s)[1], torch.equal(s["4: colour shuffle"], EtC(key=key)(x))
    ('1: block permutation', True)
    """
    if not isinstance(key, EtCKey):
        raise TypeError(f"etc_stages needs an EtCKey, got {type(key).__name__}")
    n = key.n_blocks
    zero = np.zeros(n, dtype=np.int64)
    arrays = [key.block_perm, key.rot_flip, key.negpos, key.channel_perm]
    names = ["1: block permutation", "2: rotation / flip", "3: negative-positive", "4: colour shuffle"]
    out = {"plain": x}
    for k, name in enumerate(names, start=1):
        parts = [np.asarray(a).copy() if i < k else (np.arange(n) if i == 0 else zero) for i, a in enumerate(arrays)]
        sub = EtCKey(*parts, image_size=key.image_size, block_size=key.block_size, channels=key.channels)
        out[name] = EtC(key=sub).to(x.device)(x)
    return out


# ----------------------------------------------------------------------------- Fig. 5
def patch_embedding_weights(model: nn.Module) -> torch.Tensor:
    """Patch-embedding weights ``(D, C, P, P)`` (a detached CPU float copy)."""
    return patch_embedding(model).weight.detach().float().cpu().clone()


def patch_embedding_grid(weights: torch.Tensor, *, max_filters: int = 256, ncols: int = 16,
                         pad: int = 1) -> torch.Tensor:
    """Tile filters ``(D, C, P, P)`` into one image ``(C, H, W)`` in [0, 1], each filter
    min–max scaled on its own (as Trockman & Kolter and Fig. 5 show them), ``pad`` white
    pixels between filters. Filters of size 1 (``P = 1``) become 4×4 colour squares.

    >>> patch_embedding_grid(torch.randn(6, 3, 2, 2), ncols=3).shape
    torch.Size([3, 5, 8])
    """
    if weights.ndim != 4:
        raise ValueError(f"weights must be (D, C, P, P), got shape {tuple(weights.shape)}")
    w = weights[:max_filters].float()
    if w.shape[-1] == 1:
        w = w.repeat_interleave(4, -1).repeat_interleave(4, -2)
    d, c, p, q = w.shape
    flat = w.reshape(d, -1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    w = ((flat - lo) / (hi - lo).clamp_min(1e-12)).reshape(d, c, p, q)
    nrows = math.ceil(d / ncols)
    canvas = torch.ones(nrows * ncols, c, p + pad, q + pad)
    canvas[:d, :, :p, :q] = w
    grid = canvas.reshape(nrows, ncols, c, p + pad, q + pad).permute(2, 0, 3, 1, 4)
    grid = grid.reshape(c, nrows * (p + pad), ncols * (q + pad))
    return grid[:, :grid.shape[1] - pad, :grid.shape[2] - pad]


def plot_patch_embeddings(panels: Mapping[str, torch.Tensor | nn.Module], *, max_filters: int = 256,
                          ncols: int = 16, size: float = 3.2):
    """Fig. 5: one panel per entry (a title → weights ``(D, C, P, P)`` or a model); returns the figure."""
    import matplotlib.pyplot as plt

    if not panels:
        raise ValueError("panels is empty: give at least one title -> weights (or model)")
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size), squeeze=False)
    for ax, (title, w) in zip(axes[0], panels.items()):
        wt = patch_embedding_weights(w) if isinstance(w, nn.Module) else w
        g = patch_embedding_grid(wt, max_filters=max_filters, ncols=ncols)
        ax.imshow(g.permute(1, 2, 0).numpy() if g.shape[0] == 3 else g[0].numpy(), cmap=None if g.shape[0] == 3 else "gray")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    return fig


def embedding_similarity(w_a: torch.Tensor, w_b: torch.Tensor) -> dict[str, float]:
    """How alike two sets of patch-embedding filters are, ignoring filter order and sign.

    ``matched_cosine``: mean over filters of ``a`` of the best ``|cos|`` to any filter of
    ``b``. The paper reads Fig. 5 by eye ("high similarities"); this puts a number on it.
    ``random_baseline``: the same score against Gaussian filters of the same shape.

    >>> w = torch.randn(8, 3, 2, 2)
    >>> embedding_similarity(w, -w[torch.randperm(8)])["matched_cosine"]
    1.0
    """
    a = nn.functional.normalize(w_a.reshape(w_a.shape[0], -1).float(), dim=1)
    b = nn.functional.normalize(w_b.reshape(w_b.shape[0], -1).float(), dim=1)
    g = torch.Generator().manual_seed(20240611)
    r = nn.functional.normalize(torch.randn(b.shape, generator=g), dim=1)
    score = lambda u, v: float((u @ v.T).abs().max(1).values.mean())  # noqa: E731
    return {"matched_cosine": round(score(a, b), 6), "random_baseline": round(score(a, r), 6)}


# ----------------------------------------------------------------------------- training helper
