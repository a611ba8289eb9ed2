"""ConvMixer, exactly as in "Patches Are All You Need?" (Trockman & Kolter, 2022).

    x (B, C_in, H, W)
    stem:    Conv2d(C_in -> h, kernel p, stride p) -> act -> BN             (B, h, H/p, W/p)
    blocks:  depth x [ x + BN(act(DepthwiseConv2d(k, "same")(x)))            spatial mixing
                       BN(act(Conv2d(h -> h, kernel 1)(x))) ]                channel mixing
    head:    global average pool -> Linear(h -> num_classes)                (B, num_classes)

BatchNorm comes *after* the activation everywhere ("post-activation BN"). Submodule names follow
timm's port, so state_dict keys are ``stem.0``, ``stem.2``, ``blocks.{i}.0.fn.0`` (depthwise conv),
``blocks.{i}.0.fn.2`` (its BN), ``blocks.{i}.1`` (pointwise conv), ``blocks.{i}.3`` (its BN), ``head``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, InputShapeError
from .classifier import ImageClassifier, linear_head

ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None


class Residual(nn.Module):
    """``x + fn(x)``; the attribute name ``fn`` is what puts ``.fn.`` in the checkpoint keys."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


def patch_embedding(in_chans: int, dim: int, patch_size: int, act: str) -> nn.Sequential:
    """Non-overlapping p x p patches, linearly embedded: (B, C_in, H, W) -> (B, h, H/p, W/p)."""
    return nn.Sequential(
        nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size),
        make_activation(act),
        nn.BatchNorm2d(dim),
    )


def convmixer_layer(dim: int, kernel_size: int, act: str) -> nn.Sequential:
    """One ConvMixer layer, (B, h, N, N) -> (B, h, N, N).

    Spatial mixing is a residual depthwise k x k conv; "same" padding keeps even kernels
    shape-correct (PyTorch pads (k-1)//2 before and k//2 after). Channel mixing is a 1x1 conv
    without a residual.
    """
    return nn.Sequential(
        Residual(
            nn.Sequential(
                nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same"),
                make_activation(act),
                nn.BatchNorm2d(dim),
            )
        ),
        nn.Conv2d(dim, dim, kernel_size=1),
        make_activation(act),
        nn.BatchNorm2d(dim),
    )


class ConvMixer(ImageClassifier):
    """ConvMixer-h/d with width ``dim`` (h), ``depth`` (d), depthwise ``kernel_size`` (k) and ``patch_size`` (p).

    ``num_classes=0`` gives a feature extractor whose forward returns the pooled (B, h) features. ``forward``,
    ``get_classifier`` and ``reset_classifier`` come from :class:`~convmixer.models.classifier.ImageClassifier`.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        kernel_size: int = 9,
        patch_size: int = 7,
        num_classes: int = 1000,
        in_chans: int = 3,
        act: str = "gelu",
    ) -> None:
        super().__init__()
        for field, value, low in (("dim", dim, 1), ("depth", depth, 1), ("kernel_size", kernel_size, 1),
                                  ("patch_size", patch_size, 1), ("num_classes", num_classes, 0),
                                  ("in_chans", in_chans, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"ConvMixer {field} must be an integer >= {low}, got {value!r}")
        make_activation(act)  # validate the name before building anything
        self.dim, self.depth, self.kernel_size, self.patch_size = dim, depth, kernel_size, patch_size
        self.num_classes, self.in_chans, self.act = num_classes, in_chans, act
        self.num_features = dim

        self.stem = patch_embedding(in_chans, dim, patch_size, act)
        self.blocks = nn.Sequential(*[convmixer_layer(dim, kernel_size, act) for _ in range(depth)])
        self.pooling = nn.AdaptiveAvgPool2d(1)
        self.head = linear_head(dim, num_classes)

    def config(self) -> dict[str, Any]:
        """The constructor arguments; ``ConvMixer(**m.config())`` rebuilds the architecture."""
        return {
            "dim": self.dim, "depth": self.depth, "kernel_size": self.kernel_size,
            "patch_size": self.patch_size, "num_classes": self.num_classes,
            "in_chans": self.in_chans, "act": self.act,
        }

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputShapeError` (a ValueError) for a batch this model cannot take."""
        if x.dim() != 4:
            raise InputShapeError(f"ConvMixer expects a 4-D batch (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise InputShapeError(
                f"ConvMixer was built for {self.in_chans} input channel(s), got {x.shape[1]} (input shape {tuple(x.shape)})"
            )
        if x.shape[2] < self.patch_size or x.shape[3] < self.patch_size:
            raise InputShapeError(
                f"input {x.shape[2]}x{x.shape[3]} is smaller than the patch size {self.patch_size}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, h, H/p, W/p) feature map before pooling."""
        self.check_input(x)
        return self.blocks(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, h, N, N) -> (B, h) pooled features if ``pre_logits`` else (B, num_classes) logits."""
        x = self.pooling(x).flatten(1)
        return x if pre_logits else self.head(x)

    def extra_repr(self) -> str:
        return f"ConvMixer-{self.dim}/{self.depth}, k={self.kernel_size}, p={self.patch_size}, act={self.act}"
