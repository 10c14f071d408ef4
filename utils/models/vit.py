"""Vision Transformer (Dosovitskiy et al., 2021): cut the image into patches, embed each patch
linearly, prepend a learned class token, add learned position embeddings, run a Transformer
encoder (pre-norm blocks of multi-head self-attention and an MLP) and classify from the class
token. Chapter 07 builds each piece by hand.

``vit_b_16()`` has torchvision's 86,567,656 parameters; :func:`state_dict_from_torchvision` renames
a torchvision ViT ``state_dict`` to this module's names (same tensors), so torchvision's weights load
into the course's ViT (``vit_b_16(weights="vit_b_16.imagenet1k_v1")`` does it, see
:mod:`utils.models.weights`). :func:`vit_tiny` is a small ViT for 28 px grey images (patches of 4 px).

As a :class:`~utils.models.common.Backbone`, a plain ViT has no pyramid: every encoder block is one
*stage*, all at the stride of a patch (``stage_strides = [patch_size] * depth``) with ``dim``
channels (``stage_channels = [dim] * depth``); the stem cuts and embeds the patches and adds the
class token and the position embeddings. ``forward_features`` returns the normalised tokens
(N, 1 + num_patches, dim) rather than a map, ``forward_head`` classifies the class token, and
:func:`~utils.models.common.feature_maps` reshapes each stage's patch tokens (the class token
dropped) to an (N, dim, H / patch_size, W / patch_size) map, as ViT-based detectors read a plain ViT.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .common import Backbone, build, builder, check_positive

if TYPE_CHECKING:
    from .weights import Weights

__all__ = [
    "Attention",
    "EncoderBlock",
    "PatchEmbedding",
    "VisionTransformer",
    "state_dict_from_torchvision",
    "vit_b_16",
    "vit_tiny",
]


class PatchEmbedding(nn.Module):
    """Cut (N, C, H, W) images into non-overlapping ``patch_size`` x ``patch_size`` patches and map each
    linearly to ``dim`` numbers: (N, num_patches, dim), patches in row-major order (chapter 07).

    A convolution with kernel = stride = patch size (``proj``) *is* that linear map, applied to every
    patch: its weight (dim, C, p, p) is a ``Linear(C * p * p, dim)`` on patches flattened in
    (channel, row, column) order.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_channels: int = 3, dim: int = 768):
        super().__init__()
        check_positive(img_size=img_size, patch_size=patch_size, in_channels=in_channels, dim=dim)
        if img_size % patch_size:
            raise ValueError(f"img_size ({img_size}) must be divisible by patch_size ({patch_size})")
        self.img_size, self.patch_size, self.in_channels, self.dim = img_size, patch_size, in_channels, dim
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, img_size, img_size) -> (N, num_patches, dim)."""
        expected = (self.in_channels, self.img_size, self.img_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"PatchEmbedding expects images of shape (N, {', '.join(map(str, expected))}), "
                f"got {tuple(x.shape)}"
            )
        x = self.proj(x)  # (N, dim, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (N, num_patches, dim)


class Attention(nn.Module):
    """Multi-head self-attention: ``softmax(Q K^T / sqrt(d)) V`` in ``heads`` heads of ``dim / heads``
    numbers each, then an output projection (chapter 07). ``qkv`` computes Q, K and V in one matrix
    product."""

    def __init__(self, dim: int, heads: int, attention_dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_dropout = attention_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, T, dim) -> (N, T, dim)."""
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, self.head_dim)  # (N, T, 3, h, d/h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (N, h, T, d/h)
        dropout = self.attention_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)  # (N, h, T, d/h)
        out = out.transpose(1, 2).reshape(n, t, d)  # (N, T, dim): heads side by side
        return self.proj(out)


class MLP(nn.Sequential):
    """``Linear(dim, mlp_dim) -> GELU -> Dropout -> Linear(mlp_dim, dim) -> Dropout``."""

    def __init__(self, dim: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(mlp_dim, dim)
        self.drop2 = nn.Dropout(dropout)


class EncoderBlock(nn.Module):
    """A pre-norm Transformer block: ``x = x + attn(norm1(x)); x = x + mlp(norm2(x))`` (chapter 07)."""

    def __init__(
        self, dim: int, heads: int, mlp_dim: int, dropout: float = 0.0, attention_dropout: float = 0.0
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, attention_dropout)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, mlp_dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, T, dim) -> (N, T, dim)."""
        x = x + self.drop(self.attn(self.norm1(x)))  # tokens exchange information
        return x + self.mlp(self.norm2(x))  # each token is transformed on its own


class VisionTransformer(Backbone):
    """ViT (chapter 07): :class:`PatchEmbedding`, a class token, position embeddings, ``depth``
    :class:`EncoderBlock` s, a final LayerNorm and a linear ``head`` on the class token.

    Args:
        img_size, patch_size, in_channels: square input images of ``img_size`` px, cut into
            ``(img_size / patch_size)**2`` patches.
        num_classes: outputs of the head.
        dim, depth, heads, mlp_dim: token width, number of blocks, attention heads, MLP hidden width.
        dropout, attention_dropout: dropout on the embeddings and in the blocks; on the attention weights.

    Backbone contract (see the module docstring): ``stem`` is :meth:`embed`, ``stages`` are the
    encoder blocks, :meth:`finalize` is the final LayerNorm, ``num_features`` is ``dim``.
    """

    classifier_name = "head"

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_channels: int = 3,
        num_classes: int = 1000,
        dim: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp_dim: int = 3072,
        *,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
    ):
        super().__init__()
        check_positive(num_classes=num_classes, depth=depth, heads=heads, mlp_dim=mlp_dim)
        self.patch_embed = PatchEmbedding(img_size, patch_size, in_channels, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))  # (1, 1, dim)
        num_tokens = self.patch_embed.num_patches + 1
        self.pos_embed = nn.Parameter(torch.empty(1, num_tokens, dim).normal_(std=0.02))  # (1, T, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *[EncoderBlock(dim, heads, mlp_dim, dropout, attention_dropout) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        self.img_size, self.patch_size, self.dim = img_size, patch_size, dim
        self.num_classes, self.in_channels, self.num_features = num_classes, in_channels, dim
        self.stage_channels, self.stage_strides = [dim] * depth, [patch_size] * depth
        self._init_weights()

    def _init_weights(self) -> None:
        proj = self.patch_embed.proj  # as torchvision: truncated normal, std 1/sqrt(fan_in), for the patches
        nn.init.trunc_normal_(proj.weight, std=math.sqrt(1.0 / (proj.in_channels * self.patch_size**2)))
        nn.init.zeros_(proj.bias)
        for block in self.blocks:
            for fc in (block.mlp.fc1, block.mlp.fc2):
                nn.init.xavier_uniform_(fc.weight)
                nn.init.normal_(fc.bias, std=1e-6)
            nn.init.xavier_uniform_(block.attn.qkv.weight)  # as nn.MultiheadAttention
            nn.init.zeros_(block.attn.qkv.bias)
            nn.init.zeros_(block.attn.proj.bias)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, img_size, img_size) -> tokens (N, 1 + num_patches, dim): the patches embedded,
        the class token prepended, the position embeddings added (the ViT's stem)."""
        x = self.patch_embed(x)  # (N, P, dim)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (N, 1, dim)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (N, 1 + P, dim)
        return self.drop(x)

    @property
    def stem(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """:meth:`embed` (a method: its class token and position embeddings are parameters of the ViT)."""
        return self.embed

    @property
    def stages(self) -> list[nn.Module]:
        """The encoder blocks, ``blocks[0]`` .. ``blocks[depth - 1]``: tokens (N, T, dim) -> (N, T, dim)."""
        return list(self.blocks)

    def finalize(self, x: torch.Tensor) -> torch.Tensor:
        """The final LayerNorm of the tokens."""
        return self.norm(x)

    def as_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (N, 1 + P, dim) -> the patch tokens as a map (N, dim, img_size / p, img_size / p)."""
        grid = self.patch_embed.grid_size
        return x[:, 1:].transpose(1, 2).reshape(x.shape[0], self.dim, grid, grid)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Tokens (N, 1 + P, dim) -> the class token (N, dim)."""
        return features[:, 0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, img_size, img_size) -> normalised tokens (N, 1 + num_patches, dim); token 0 is
        the class token."""
        self.check_input(x)
        return self.norm(self.blocks(self.embed(x)))  # (N, 1 + P, dim)

    # forward_head: the class token, then head (Backbone); forward classifies from the class token


@builder
def vit_b_16(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    img_size: int | None = None,
    **kwargs,
) -> VisionTransformer:
    """ViT-B/16: 16 px patches, 12 blocks of width 768 with 12 heads, MLP 3072; 86,567,656 parameters
    at 224 px and 1000 classes, as torchvision's (chapter 07). ``img_size`` defaults to 224, or to
    the weights' resolution (384 for ``"vit_b_16.imagenet1k_swag_e2e_v1"``)."""
    if weights is not None and img_size is None:
        from .weights import get_weights

        weights = get_weights(weights)
        img_size = weights.crop_size
    img_size = 224 if img_size is None else img_size
    return build(
        "vit_b_16",
        lambda n: VisionTransformer(img_size, 16, in_channels, n, 768, 12, 12, 3072, **kwargs),
        num_classes,
        weights,
    )


@builder
def vit_tiny(
    num_classes: int = 10,
    *,
    weights: str | Weights | None = None,
    img_size: int = 28,
    patch_size: int = 4,
    in_channels: int = 1,
    dim: int = 64,
    depth: int = 4,
    heads: int = 4,
    mlp_dim: int = 128,
    **kwargs,
) -> VisionTransformer:
    """A small ViT for the course's 28 px grey images: 49 patches of 4x4, 4 blocks of width 64 with
    4 heads (about 0.14M parameters). Much smaller than DeiT-Ti; every argument can be changed, by
    keyword: ``vit_tiny(10, img_size=32, patch_size=8, in_channels=3)``. No pretrained weights.
    Chapter 07 trains it."""

    def make(n: int) -> VisionTransformer:
        return VisionTransformer(img_size, patch_size, in_channels, n, dim, depth, heads, mlp_dim, **kwargs)

    return build("vit_tiny", make, num_classes, weights)


_TORCHVISION_NAMES = [  # (torchvision pattern, course name)
    (r"^conv_proj\.", "patch_embed.proj."),
    (r"^class_token$", "cls_token"),
    (r"^encoder\.pos_embedding$", "pos_embed"),
    (r"^encoder\.ln\.", "norm."),
    (r"^heads\.head\.", "head."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.ln_1\.", r"blocks.\1.norm1."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.ln_2\.", r"blocks.\1.norm2."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.in_proj_", r"blocks.\1.attn.qkv."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.out_proj\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.mlp\.0\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.mlp\.3\.", r"blocks.\1.mlp.fc2."),
]


def state_dict_from_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of a ``torchvision.models.VisionTransformer`` state dict to this module's names.

    The tensors are the same (``nn.MultiheadAttention``'s ``in_proj_weight`` is our ``qkv.weight``), so
    ``vit_b_16().load_state_dict(state_dict_from_torchvision(tv.state_dict()))`` gives the same
    outputs as ``tv``. Unknown keys (e.g. a ``pre_logits`` layer) raise a ``KeyError``. Chapter 07.
    """
    renamed = {}
    for key, value in state_dict.items():
        for pattern, replacement in _TORCHVISION_NAMES:
            new, count = re.subn(pattern, replacement, key)
            if count:
                renamed[new] = value
                break
        else:
            raise KeyError(f"no course name for the torchvision ViT key {key!r}")
    return renamed
