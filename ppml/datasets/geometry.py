"""Whole-tensor image geometry for the loaders: resize to a square, grey ↔ colour channels."""

from __future__ import annotations

import torch
import torch.nn.functional as F



# --------------------------------------------------------------------------------------------
# Image geometry helpers (whole tensors)
# --------------------------------------------------------------------------------------------

def _resize_square(images: torch.Tensor, size: int, chunk: int = 1024) -> torch.Tensor:
    """Resize uint8 ``(N, C, H, W)`` so the shorter side is ``size`` (bilinear, antialiased),
    then centre-crop to ``size × size``."""
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    out = torch.empty(n, c, size, size, dtype=torch.uint8)
    top, left = (nh - size) // 2, (nw - size) // 2
    for s in range(0, n, chunk):
        x = images[s:s + chunk].to(torch.float32)
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        out[s:s + chunk] = x[:, :, top:top + size, left:left + size].round().clamp(0, 255).to(torch.uint8)
    return out


def _to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        # ITU-R BT.601 luma, the usual RGB→grey conversion (as PIL's convert("L")).
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.to(torch.float32) * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise ValueError(f"cannot convert {c} channels to {channels}")


def _check_channels(channels: int | None) -> None:
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None (the data set's default); got {channels!r}")


def _check_size(size: int | None) -> None:
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise ValueError(f"size must be a positive int (output height = width) or None; got {size!r}")


def _grey_geometry(images28: torch.Tensor, size: int | None, channels: int | None) -> tuple[torch.Tensor, str]:
    """Zero-pad 28×28 grey images centrally to ``size`` (default 32) and replicate to
    ``channels`` (default 3). Returns the images and the words for the description."""
    size = 32 if size is None else size
    channels = 3 if channels is None else channels
    if size < 28:
        raise ValueError(f"size {size} < 28: Fashion-MNIST images are only zero-padded, never shrunk; "
                         f"use size >= 28 (32 makes blocks of 4, 8 and 16 divide the image)")
    extra = size - 28
    top, left = extra // 2, extra // 2
    x = F.pad(images28.unsqueeze(1), (left, extra - left, top, extra - top), value=0)
    x = _to_channels(x, channels)
    if extra == 0:
        words = "28×28 grey (no padding)"
    elif extra % 2 == 0:
        words = f"28×28 grey zero-padded to {size}×{size} ({extra // 2} px each side)"
    else:
        words = f"28×28 grey zero-padded to {size}×{size} ({top} px top/left, {extra - top} px bottom/right)"
    words += ", replicated to 3 channels" if channels == 3 else ", 1 channel"
    return x.contiguous(), words


def _colour_geometry(images: torch.Tensor, size: int | None, channels: int | None,
                     native: int) -> tuple[torch.Tensor, str]:
    size = native if size is None else size
    channels = 3 if channels is None else channels
    x = _resize_square(images, size)
    words = f"{native}×{native} RGB" if size == native else \
        f"{native}×{native} RGB resized to {size}×{size} (bilinear, antialiased)"
    if channels == 1:
        x = _to_channels(x, 1)
        words += ", converted to grey (BT.601 luma)"
    return x, words
