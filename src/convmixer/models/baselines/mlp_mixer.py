"""MLP-Mixer, as in "MLP-Mixer: An all-MLP Architecture for Vision" (Tolstikhin et al., 2021).

    x (B, C_in, H, W)
    patch_embed:  per-patch linear, Conv(C_in -> C, kernel p, stride p)       (B, S, C), S = (H/p)(W/p)
    blocks:       depth x [ x + TokenMLP(LN(x)^T)^T    token mixing:   S -> D_S -> S, per channel
                            x + ChannelMLP(LN(x)) ]    channel mixing: C -> D_C -> C, per token
    norm:         LayerNorm(C)
    head:         mean over the S tokens -> Linear(C -> num_classes)

Both MLPs are Linear -> GELU -> Linear; weights are shared across channels (token MLP) or tokens
(channel MLP). The paper's models use D_S = C/2 and D_C = 4C (Mixer-S: C=512, 8 blocks, D_S=256,
D_C=2048), the ratios kept here by default. The token-mixing MLP is a learned S x S map, so a built
model takes one input size only: ``img_size``; other sizes raise :class:`InputShapeError`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..classifier import linear_head
from .common import Mlp, PatchEmbed, PatchMLPClassifier, check_ints, check_patch_model, init_transformer_weights


class MixerBlock(nn.Module):
    """Token mixing then channel mixing, each pre-norm and residual: (B, S, C) -> (B, S, C)."""

    def __init__(self, num_tokens: int, dim: int, token_mlp_dim: int, channel_mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mlp = Mlp(num_tokens, token_mlp_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mlp = Mlp(dim, channel_mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class MlpMixer(PatchMLPClassifier):
    """Mixer with hidden width ``dim`` (C), ``depth`` blocks, token/channel MLP widths D_S and D_C, patch p.

    ``token_mlp_dim`` and ``channel_mlp_dim`` default to C/2 and 4C. ``num_classes=0`` gives a feature
    extractor whose forward returns the pooled (B, C) features.
    """

    arch = "MLP-Mixer"

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        dim: int = 512,
        depth: int = 8,
        token_mlp_dim: int | None = None,
        channel_mlp_dim: int | None = None,
    ) -> None:
        super().__init__()
        check_patch_model(self.arch, img_size, patch_size, in_chans, num_classes, dim, depth)
        token_mlp_dim = max(1, dim // 2) if token_mlp_dim is None else token_mlp_dim
        channel_mlp_dim = 4 * dim if channel_mlp_dim is None else channel_mlp_dim
        check_ints(self.arch, ("token_mlp_dim", token_mlp_dim, 1), ("channel_mlp_dim", channel_mlp_dim, 1))
        self.img_size, self.patch_size, self.in_chans, self.num_classes = img_size, patch_size, in_chans, num_classes
        self.dim, self.depth, self.token_mlp_dim, self.channel_mlp_dim = dim, depth, token_mlp_dim, channel_mlp_dim
        self.num_features = dim
        self.num_tokens = (img_size // patch_size) ** 2

        self.patch_embed = PatchEmbed(in_chans, dim, patch_size)
        self.blocks = nn.Sequential(*[MixerBlock(self.num_tokens, dim, token_mlp_dim, channel_mlp_dim)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = linear_head(dim, num_classes)
        init_transformer_weights(self)

    def config(self) -> dict[str, Any]:
        """The constructor arguments; ``MlpMixer(**m.config())`` rebuilds the architecture."""
        return {
            "img_size": self.img_size, "patch_size": self.patch_size, "in_chans": self.in_chans,
            "num_classes": self.num_classes, "dim": self.dim, "depth": self.depth,
            "token_mlp_dim": self.token_mlp_dim, "channel_mlp_dim": self.channel_mlp_dim,
        }

    def extra_repr(self) -> str:
        return (f"Mixer C={self.dim}, depth={self.depth}, D_S={self.token_mlp_dim}, D_C={self.channel_mlp_dim}, "
                f"p={self.patch_size}, img_size={self.img_size}")
