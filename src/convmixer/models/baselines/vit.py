"""Vision Transformer, as in "An Image is Worth 16x16 Words" (Dosovitskiy et al., 2021) and DeiT (Touvron et al., 2021).

    x (B, C_in, H, W)
    patch_embed:  Conv(C_in -> D, kernel p, stride p), flattened                       (B, N, D), N = (H/p)(W/p)
    tokens:       [cls; patches] + pos_embed  (global_pool="token")                    (B, 1 + N, D)
                  patches + pos_embed         (global_pool="avg": no class token)      (B, N, D)
    blocks:       depth x [ x + MHSA(LN(x)) ; x + MLP(LN(x)) ]   pre-norm, MLP D -> rD -> D with GELU
    norm:         LayerNorm(D)
    head:         class token (or mean of the patch tokens) -> Linear(D -> num_classes)

The default pools with the class token, as ViT and DeiT do. Position embeddings are learned for the
grid of ``img_size``; an input of another size gets them bicubically interpolated to its grid (the
class token's embedding is kept), so one model serves 28, 32 or 224 px. Attention runs through
``torch.nn.functional.scaled_dot_product_attention``. No dropout or stochastic depth: every model in
the comparison is trained with the same recipe. Linear weights start truncated-normal(0.02), position
embeddings and the class token too, as in DeiT.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..classifier import ImageClassifier, linear_head
from .common import (Mlp, PatchEmbed, check_choice, check_image, check_patch_model, check_positive,
                     init_transformer_weights)

POOLS = ("token", "avg")


class Attention(nn.Module):
    """Multi-head self-attention: (B, N, D) -> (B, N, D) with ``num_heads`` heads of D / num_heads."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, D / heads), softmax(q k^T / sqrt(d_head)) v
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer encoder block: (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(ImageClassifier):
    """ViT with width ``dim`` (D), ``depth`` blocks of ``num_heads`` heads, patches of ``patch_size`` (p) px.

    ``img_size`` only sets the grid the position embeddings are learned on. ``num_classes=0`` gives a
    feature extractor whose forward returns the pooled (B, D) features.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        global_pool: str = "token",
    ) -> None:
        super().__init__()
        check_patch_model("ViT", img_size, patch_size, in_chans, num_classes, dim, depth, ("num_heads", num_heads, 1))
        check_positive("ViT", "mlp_ratio", mlp_ratio)
        check_choice("ViT", "global_pool", global_pool, POOLS)
        if dim % num_heads:
            raise ConfigError(f"ViT dim {dim} is not divisible by num_heads {num_heads}")
        self.img_size, self.patch_size, self.in_chans, self.num_classes = img_size, patch_size, in_chans, num_classes
        self.dim, self.depth, self.num_heads, self.mlp_ratio = dim, depth, num_heads, mlp_ratio
        self.qkv_bias, self.global_pool = bool(qkv_bias), global_pool
        self.num_features = dim
        self.grid = img_size // patch_size
        self.num_prefix_tokens = 1 if global_pool == "token" else 0

        self.patch_embed = PatchEmbed(in_chans, dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if self.num_prefix_tokens else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + self.grid**2, dim))
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = linear_head(dim, num_classes)
        init_transformer_weights(self)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def config(self) -> dict[str, Any]:
        """The constructor arguments; ``VisionTransformer(**m.config())`` rebuilds the architecture."""
        return {
            "img_size": self.img_size, "patch_size": self.patch_size, "in_chans": self.in_chans,
            "num_classes": self.num_classes, "dim": self.dim, "depth": self.depth, "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio, "qkv_bias": self.qkv_bias, "global_pool": self.global_pool,
        }

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputShapeError` (a ValueError) for a batch this model cannot take."""
        check_image(x, "ViT", self.in_chans, self.patch_size)

    def position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """(1, prefix + grid_h * grid_w, D): the learned embeddings, interpolated if the grid differs."""
        if (grid_h, grid_w) == (self.grid, self.grid):
            return self.pos_embed
        prefix, pos = self.pos_embed[:, : self.num_prefix_tokens], self.pos_embed[:, self.num_prefix_tokens:]
        pos = pos.reshape(1, self.grid, self.grid, self.dim).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        return torch.cat([prefix, pos.flatten(2).transpose(1, 2)], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, prefix + N, D) normalized tokens, the class token first if there is one."""
        self.check_input(x)
        grid_h, grid_w = x.shape[2] // self.patch_size, x.shape[3] // self.patch_size
        x = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.position_embedding(grid_h, grid_w)
        return self.norm(self.blocks(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, prefix + N, D) -> (B, D) pooled features if ``pre_logits`` else (B, num_classes) logits."""
        x = x[:, 0] if self.global_pool == "token" else x.mean(dim=1)
        return x if pre_logits else self.head(x)

    def extra_repr(self) -> str:
        return (f"ViT D={self.dim}, depth={self.depth}, heads={self.num_heads}, p={self.patch_size}, "
                f"img_size={self.img_size}, pool={self.global_pool}")
