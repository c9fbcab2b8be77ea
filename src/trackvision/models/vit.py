"""A Vision Transformer trained from scratch, sized by params (patch, dim, depth, heads).

Built on timm's ``VisionTransformer`` so the blocks are the well-tested reference ones. What is the
project's own is the sizing for small images and little data:
- ``stem: conv`` replaces the linear patch projection with a few stride-2 3x3 convolutions
  (Xiao et al., 2021, "Early convolutions help transformers see better"). A plain ViT from scratch
  on a few thousand images stays near chance, as the Fashion-MNIST report found; the conv stem
  gives it the locality prior it lacks. ``stem: patch`` is the original ViT.
- mean-pooled tokens (``pool: avg``) instead of a lone class token: steadier from scratch.
"""

from __future__ import annotations

import functools
import math

from torch import nn

STEMS = ("conv", "patch")


def conv_stem(in_chans: int, dim: int, patch_size: int) -> nn.Sequential:
    """log2(patch_size) stride-2 conv-BN-ReLU blocks widening to ``dim`` channels."""
    n = int(math.log2(patch_size))
    widths = [max(8, dim >> (n - 1 - k)) for k in range(n)]
    layers: list[nn.Module] = []
    for width in widths:
        layers += [
            nn.Conv2d(in_chans, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        in_chans = width
    return nn.Sequential(*layers)


def build_vit(
    in_chans: int,
    num_classes: int,
    image_size: int,
    patch_size: int = 4,
    dim: int = 96,
    depth: int = 4,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    dropout: float = 0.1,
    pool: str = "avg",
    stem: str = "conv",
) -> nn.Module:
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    if dim % heads:
        raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
    if stem not in STEMS:
        raise ValueError(f"stem {stem!r} is not one of {', '.join(STEMS)}")
    # Here, not at the top: timm's import costs seconds that the other models' stages never pay.
    from timm.models.vision_transformer import VisionTransformer
    from timm.models.vision_transformer_hybrid import HybridEmbed

    embed = {}
    if stem == "conv":
        if patch_size & (patch_size - 1) or patch_size < 2:
            raise ValueError(f"stem conv needs a power-of-two patch_size >= 2, got {patch_size}")
        backbone = conv_stem(in_chans, dim, patch_size)
        # The stem already downsamples by patch_size: tokens are its output pixels (patch 1).
        embed = {"embed_layer": functools.partial(HybridEmbed, backbone=backbone), "patch_size": 1}
    return VisionTransformer(
        img_size=image_size,
        patch_size=embed.pop("patch_size", patch_size),
        in_chans=in_chans,
        num_classes=num_classes,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        mlp_ratio=mlp_ratio,
        drop_rate=dropout,
        proj_drop_rate=dropout,
        attn_drop_rate=0.0,
        global_pool=pool,
        class_token=pool == "token",
        **embed,
    )
