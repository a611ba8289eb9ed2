"""ResMLP, as in "ResMLP: Feedforward networks for image classification with data-efficient training"
(Touvron et al., 2021).

    x (B, C_in, H, W)
    patch_embed:  per-patch linear, Conv(C_in -> d, kernel p, stride p)          (B, N, d), N = (H/p)(W/p)
    blocks:       depth x [ x + LS(A Aff(x))       cross-patch: one Linear(N -> N) over the patch axis
                            x + LS(MLP(Aff(x))) ]  cross-channel: d -> r*d -> d with GELU
    norm:         Aff(d)
    head:         mean over the N patches -> Linear(d -> num_classes)

``Aff(x) = alpha * x + beta`` per channel (alpha=1, beta=0 at init) replaces LayerNorm: no statistics.
The paper's post-normalization Aff is a LayerScale ``LS(x) = gamma * x`` plus a bias; that bias is
redundant with the bias of the linear layer before it, so only the scale is kept. ``gamma`` starts at
``layerscale_init``; the paper uses 0.1 for depth 12, 1e-5 for depth 24 and 1e-6 deeper. The
cross-patch layer is a learned N x N map, so a built model takes one input size only: ``img_size``;
other sizes raise :class:`InputShapeError`. Linear weights start truncated-normal(0.02) (DeiT's recipe).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..classifier import linear_head
from .common import Mlp, PatchEmbed, PatchMLPClassifier, check_patch_model, check_positive, init_transformer_weights


class Affine(nn.Module):
    """Per-channel ``alpha * x + beta`` on the last axis; starts as the identity."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta, self.alpha, x)


class LayerScale(nn.Module):
    """Per-channel ``gamma * x`` on the last axis, gamma starting at ``init`` (a small residual branch)."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * x


class ResMLPBlock(nn.Module):
    """Cross-patch linear sublayer then cross-channel MLP sublayer: (B, N, d) -> (B, N, d)."""

    def __init__(self, num_patches: int, dim: int, mlp_ratio: float, layerscale_init: float) -> None:
        super().__init__()
        self.norm1 = Affine(dim)
        self.token_mix = nn.Linear(num_patches, num_patches)
        self.ls1 = LayerScale(dim, layerscale_init)
        self.norm2 = Affine(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layerscale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.token_mix(self.norm1(x).transpose(1, 2)).transpose(1, 2))
        return x + self.ls2(self.mlp(self.norm2(x)))


class ResMLP(PatchMLPClassifier):
    """ResMLP with width ``dim`` (d), ``depth`` blocks, channel-MLP ratio r and patches of ``patch_size`` px.

    ``num_classes=0`` gives a feature extractor whose forward returns the pooled (B, d) features.
    """

    arch = "ResMLP"

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        dim: int = 384,
        depth: int = 12,
        mlp_ratio: float = 4.0,
        layerscale_init: float = 0.1,
    ) -> None:
        super().__init__()
        check_patch_model(self.arch, img_size, patch_size, in_chans, num_classes, dim, depth)
        check_positive(self.arch, "mlp_ratio", mlp_ratio)
        check_positive(self.arch, "layerscale_init", layerscale_init)
        self.img_size, self.patch_size, self.in_chans, self.num_classes = img_size, patch_size, in_chans, num_classes
        self.dim, self.depth, self.mlp_ratio, self.layerscale_init = dim, depth, mlp_ratio, layerscale_init
        self.num_features = dim
        self.num_patches = (img_size // patch_size) ** 2

        self.patch_embed = PatchEmbed(in_chans, dim, patch_size)
        self.blocks = nn.Sequential(*[ResMLPBlock(self.num_patches, dim, mlp_ratio, layerscale_init)
                                      for _ in range(depth)])
        self.norm = Affine(dim)
        self.head = linear_head(dim, num_classes)
        init_transformer_weights(self)

    def config(self) -> dict[str, Any]:
        """The constructor arguments; ``ResMLP(**m.config())`` rebuilds the architecture."""
        return {
            "img_size": self.img_size, "patch_size": self.patch_size, "in_chans": self.in_chans,
            "num_classes": self.num_classes, "dim": self.dim, "depth": self.depth, "mlp_ratio": self.mlp_ratio,
            "layerscale_init": self.layerscale_init,
        }

    def extra_repr(self) -> str:
        return (f"ResMLP d={self.dim}, depth={self.depth}, r={self.mlp_ratio}, p={self.patch_size}, "
                f"img_size={self.img_size}, layerscale_init={self.layerscale_init}")
