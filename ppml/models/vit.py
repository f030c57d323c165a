"""Vision Transformer (Dosovitskiy et al., ICLR 2021, "An Image is Worth 16x16 Words"),
built with timm's ``VisionTransformer``.

The patch embedding is a conv with kernel = stride = ``patch_size``, so — as in the
isotropic-network + EtC paper (MaungMaung & Kiya) — a block-wise encryption whose block size
equals the patch size acts patch by patch, and a block *permutation* is equivalent to
permuting the rows of the position-embedding matrix (their Eq. 4).

* ``vit``: a configurable ViT trained from scratch (``pretrained=False``, the offline smoke
  path). ``pretrained=True`` needs ``pretrained_name`` (a timm model name with its tag).
* ``vit_b16``: ViT-B/16 (embed 768, depth 12, 12 heads) at 224×224; with ``pretrained=True``
  it loads timm's ImageNet-21k weights ``vit_base_patch16_224.augreg_in21k`` (Steiner et al.
  2022, "How to train your ViT?"), which timm downloads from the Hugging Face Hub. That needs
  a network connection (or a warm cache); offline it raises :class:`PretrainedUnavailableError`.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from . import register_model

__all__ = ["PretrainedUnavailableError", "vit", "vit_b16"]


class PretrainedUnavailableError(OSError):
    """Pretrained weights could not be loaded (offline, or not cached)."""


def _timm_pretrained(name: str, **kw: Any) -> nn.Module:
    import timm

    try:
        # timm re-initialises the classifier for num_classes, resamples the position
        # embedding for a different img_size and the patch embedding for another patch_size.
        return timm.create_model(name, pretrained=True, **kw)
    except (OSError, RuntimeError) as e:  # huggingface_hub's LocalEntryNotFoundError is an OSError
        raise PretrainedUnavailableError(
            f"could not load the pretrained weights {name!r} through timm ({type(e).__name__}: {e}). "
            "They are downloaded from the Hugging Face Hub, which needs a network connection "
            "(unset HF_HUB_OFFLINE) or a cached copy; offline, use pretrained=False and train from scratch."
        ) from e


@register_model
def vit(*, num_classes: int = 10, img_size: int = 32, patch_size: int = 4, embed_dim: int = 192,
        depth: int = 6, num_heads: int = 3, mlp_ratio: float = 4.0, in_chans: int = 3,
        drop_rate: float = 0.0, drop_path_rate: float = 0.0, pretrained: bool = False,
        pretrained_name: str | None = None) -> nn.Module:
    """A ViT with a class token and learnt position embeddings (timm ``VisionTransformer``).

    Defaults are a small ViT for 32×32 images with 4×4 patches (64 tokens + class token).
    With ``pretrained=True``, ``pretrained_name`` names the timm weights; the architecture then
    comes from that name and only ``img_size``, ``patch_size``, ``in_chans``, ``num_classes``
    and the drop rates are passed on.

    >>> import torch
    >>> vit(embed_dim=32, depth=1, num_heads=2)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    if img_size % patch_size:
        raise ValueError(f"img_size={img_size} is not divisible by patch_size={patch_size}")
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
    if pretrained:
        if not pretrained_name:
            raise ValueError("pretrained=True needs pretrained_name, a timm model name such as "
                             "'vit_base_patch16_224.augreg_in21k' (or use create_model('vit_b16', pretrained=True))")
        return _timm_pretrained(pretrained_name, num_classes=num_classes, img_size=img_size,
                                patch_size=patch_size, in_chans=in_chans, drop_rate=drop_rate,
                                drop_path_rate=drop_path_rate)
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                             num_classes=num_classes, embed_dim=embed_dim, depth=depth,
                             num_heads=num_heads, mlp_ratio=mlp_ratio, drop_rate=drop_rate,
                             drop_path_rate=drop_path_rate)


@register_model
def vit_b16(*, num_classes: int = 10, img_size: int = 224, patch_size: int = 16, in_chans: int = 3,
            drop_rate: float = 0.0, drop_path_rate: float = 0.0, pretrained: bool = False,
            pretrained_name: str = "vit_base_patch16_224.augreg_in21k") -> nn.Module:
    """ViT-B/16 (Dosovitskiy et al. 2021): 768-dim, 12 layers, 12 heads, 224×224 input.

    ``pretrained=True`` fine-tunes from ImageNet-21k weights as in the isotropic-network
    paper (needs the Hugging Face Hub). 86,567,656 parameters with 1000 classes.
    """
    return vit(num_classes=num_classes, img_size=img_size, patch_size=patch_size, embed_dim=768,
               depth=12, num_heads=12, in_chans=in_chans, drop_rate=drop_rate,
               drop_path_rate=drop_path_rate, pretrained=pretrained, pretrained_name=pretrained_name)
