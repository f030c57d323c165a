"""Image coding of (encrypted) uint8 batches: file sizes and lossy/lossless round trips.

Paper 03 (MaungMaung & Kiya, Sec. IV-C, Tables III and IV) compresses every CIFAR-10 image
*separately* with JPEG (QF 85 and 80), JPEG-LS and JPEG 2000 and sums the file sizes;
EtC images with 16×16 blocks should cost almost exactly what plain images cost. This module
does the same with maintained codec libraries (no hand-written coder):

* ``jpeg`` — Pillow (libjpeg-turbo, IJG quality scaling): lossy baseline JPEG with the
  standard Huffman tables; ``quality`` (1–100) is required; chroma ``subsampling`` below.
* ``png`` — Pillow (zlib): lossless, ``compress_level=9``.
* ``jpeg-ls`` — imagecodecs (CharLS): lossless (``NEAR = 0``); ``quality`` must be None.
* ``jpeg2000`` — imagecodecs (OpenJPEG): lossless — reversible 5/3 wavelet and reversible
  colour transform, JP2 file container (what a ``.jp2`` file on disk holds); ``quality``
  must be None. (JPEG-LS and JPEG 2000 are the lossless methods of the paper's Table IV.)

**Chroma subsampling.** The paper does not print the JPEG subsampling. It does say the EtC
block size 16 "is enforced to be JPEG compatible": 16×16 pixels is exactly the minimum coded
unit (MCU) of 4:2:0 JPEG (a 4:4:4 MCU is 8×8, where 8×8 blocks would already suffice). So
the default here is ``subsampling="4:2:0"`` (also Pillow's and libjpeg's default for colour
images); ``"4:4:4"`` and ``"4:2:2"`` are available. Grey (1-channel) images have no chroma.

Each image is coded on its own, exactly as files would be, so the codec calls are one per
image (the libraries have no batch API); everything else is vectorised.

>>> import torch
>>> x = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
>>> encoded_size(x, "png") == int(encoded_sizes(x, "png").sum())
True
>>> torch.equal(roundtrip(x, "jpeg-ls"), x)
True
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
import torch

from ppml._checks import check_images, check_int

__all__ = ["CODECS", "LOSSLESS", "SUBSAMPLINGS", "encode", "encoded_size", "encoded_sizes", "roundtrip"]

#: codec names accepted by every function here
CODECS = ("jpeg", "png", "jpeg-ls", "jpeg2000")
#: codecs that reproduce their input exactly
LOSSLESS = ("png", "jpeg-ls", "jpeg2000")
#: JPEG chroma subsampling → Pillow's ``subsampling`` code
SUBSAMPLINGS = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
#: the paper's choice (16×16 EtC blocks = one 4:2:0 MCU); see the module docstring
DEFAULT_SUBSAMPLING = "4:2:0"


# ----------------------------------------------------------------------------- checks
def _check_codec(codec: str, quality: int | None, subsampling: str) -> None:
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; expected one of {', '.join(CODECS)}")
    if codec == "jpeg":
        if quality is None:
            raise ValueError("codec 'jpeg' needs a quality factor: pass quality=1..100 (the paper uses 85 and 80)")
        check_int(quality, "JPEG quality", minimum=1, maximum=100)
        if subsampling not in SUBSAMPLINGS:
            raise ValueError(f"unknown chroma subsampling {subsampling!r}; expected one of "
                             f"{', '.join(SUBSAMPLINGS)}")
    elif quality is not None:
        raise ValueError(f"codec {codec!r} is used losslessly here and takes no quality; pass quality=None "
                         f"(lossy coding: codec='jpeg')")


def _to_hwc(x: torch.Tensor) -> np.ndarray:
    """Validate a uint8 batch ``(N, C, H, W)`` (C = 1 or 3) and return it as ``(N, H, W, C)`` numpy."""
    # files hold 8-bit values; an empty batch codes to no files
    check_images(x, "x", "compression", dtype="uint8", channels=(1, 3), allow_empty=True)
    return np.ascontiguousarray(x.detach().cpu().permute(0, 2, 3, 1).numpy())


def _pil_image(a: np.ndarray):
    from PIL import Image

    return Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)


# ----------------------------------------------------------------------------- coders
def _encoder(codec: str, quality: int | None, subsampling: str) -> Callable[[np.ndarray], bytes]:
    if codec == "jpeg":
        ss = SUBSAMPLINGS[subsampling]

        def enc(a: np.ndarray) -> bytes:
            buf = io.BytesIO()
            kw = {"subsampling": ss} if a.shape[-1] == 3 else {}
            _pil_image(a).save(buf, format="JPEG", quality=int(quality), optimize=False, **kw)
            return buf.getvalue()
    elif codec == "png":
        def enc(a: np.ndarray) -> bytes:
            buf = io.BytesIO()
            _pil_image(a).save(buf, format="PNG", compress_level=9)
            return buf.getvalue()
    elif codec == "jpeg-ls":
        import imagecodecs

        def enc(a: np.ndarray) -> bytes:
            return bytes(imagecodecs.jpegls_encode(a[..., 0] if a.shape[-1] == 1 else a, level=0))
    else:  # jpeg2000
        import imagecodecs

        def enc(a: np.ndarray) -> bytes:
            return bytes(imagecodecs.jpeg2k_encode(a[..., 0] if a.shape[-1] == 1 else a, level=0,
                                                   codecformat="JP2", reversible=True, mct=a.shape[-1] == 3))
    return enc


def _decode(codec: str, data: bytes, channels: int) -> np.ndarray:
    if codec in ("jpeg", "png"):
        from PIL import Image

        img = Image.open(io.BytesIO(data))
        img = img.convert("L" if channels == 1 else "RGB")
        a = np.asarray(img)
    else:
        import imagecodecs

        a = imagecodecs.jpegls_decode(data) if codec == "jpeg-ls" else imagecodecs.jpeg2k_decode(data)
    return a.reshape(a.shape[0], a.shape[1], channels)


def encode(x: torch.Tensor, codec: str, quality: int | None = None, *,
           subsampling: str = DEFAULT_SUBSAMPLING) -> list[bytes]:
    """Code each image of the uint8 batch ``x`` ``(N, C, H, W)`` separately; one bytes object each.

    >>> import torch
    >>> data = encode(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), "jpeg", 85)
    >>> data[0][:2] == b"\\xff\\xd8"  # JPEG start-of-image marker
    True
    """
    _check_codec(codec, quality, subsampling)
    enc = _encoder(codec, quality, subsampling)
    return [enc(a) for a in _to_hwc(x)]  # one codec call per image: each is its own file


def encoded_sizes(x: torch.Tensor, codec: str, quality: int | None = None, *,
                  subsampling: str = DEFAULT_SUBSAMPLING) -> torch.Tensor:
    """Bytes of each image of ``x`` coded on its own, int64 tensor of shape ``(N,)``.

    Sizes are the complete file (headers and tables included), as the paper's per-file
    totals (Table IV) count them.

    >>> import torch
    >>> encoded_sizes(torch.zeros(3, 3, 32, 32, dtype=torch.uint8), "png").shape
    torch.Size([3])
    """
    return torch.tensor([len(b) for b in encode(x, codec, quality, subsampling=subsampling)], dtype=torch.int64)


def encoded_size(x: torch.Tensor, codec: str, quality: int | None = None, *,
                 subsampling: str = DEFAULT_SUBSAMPLING) -> int:
    """Total bytes of coding each image of the uint8 batch ``x`` separately (Table IV's sums).

    Args:
        x: uint8 ``(N, C, H, W)``, C = 1 or 3.
        codec: ``"jpeg"``, ``"png"``, ``"jpeg-ls"`` or ``"jpeg2000"`` (see the module docstring).
        quality: JPEG quality factor 1–100 (required for ``"jpeg"``, must be None otherwise).
        subsampling: JPEG chroma subsampling, ``"4:2:0"`` (default, the paper's 16×16 MCU),
            ``"4:2:2"`` or ``"4:4:4"``.

    >>> import torch
    >>> x = torch.full((2, 3, 32, 32), 128, dtype=torch.uint8)
    >>> encoded_size(x, "jpeg", 85) > encoded_size(x, "jpeg", 85, subsampling="4:4:4") - 1000
    True
    """
    return int(encoded_sizes(x, codec, quality, subsampling=subsampling).sum())


def roundtrip(x: torch.Tensor, codec: str, quality: int | None = None, *,
              subsampling: str = DEFAULT_SUBSAMPLING) -> torch.Tensor:
    """Encode and decode each image of ``x``; uint8 ``(N, C, H, W)`` on ``x``'s device.

    Lossless codecs (``png``, ``jpeg-ls``, ``jpeg2000``) return ``x`` exactly; ``jpeg`` returns
    the decoded lossy images (what a model trained on JPEG files sees, paper 03 Table III).

    >>> import torch
    >>> x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    >>> torch.equal(roundtrip(x, "jpeg2000"), x), torch.equal(roundtrip(x, "jpeg", 90), x)
    (True, False)
    """
    data = encode(x, codec, quality, subsampling=subsampling)
    c = x.shape[1]
    if not data:
        return x.clone()
    out = np.stack([_decode(codec, b, c) for b in data])
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(x.device)
