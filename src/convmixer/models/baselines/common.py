"""What the baselines share: argument and input checks, the patch embedding, the two-layer MLP, the weight init
and the base of MLP-Mixer and ResMLP.

Every baseline is a :class:`~convmixer.models.classifier.ImageClassifier`, like ConvMixer, so it offers the same
interface: ``forward_features``, ``forward_head(x, pre_logits)``, ``reset_classifier``, ``config()`` and
``num_features``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import ConfigError, InputShapeError
from ..classifier import ImageClassifier


def check_ints(owner: str, *fields: tuple[str, Any, int]) -> None:
    """Each ``(name, value, low)`` must be an int (not a bool) ``>= low``, else :class:`ConfigError`."""
    for name, value, low in fields:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{owner} {name} must be an integer >= {low}, got {value!r}")


def check_patch_model(owner: str, img_size: int, patch_size: int, in_chans: int, num_classes: int, dim: int,
                      depth: int, *more: tuple[str, Any, int]) -> None:
    """The arguments every patch-based baseline (ViT, MLP-Mixer, ResMLP) takes, plus ``more`` int fields."""
    check_ints(owner, ("img_size", img_size, 1), ("patch_size", patch_size, 1), ("in_chans", in_chans, 1),
               ("num_classes", num_classes, 0), ("dim", dim, 1), ("depth", depth, 1), *more)
    if img_size < patch_size:
        raise ConfigError(f"{owner} img_size {img_size} is smaller than patch_size {patch_size}")


def check_positive(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{owner} {name} must be a number > 0, got {value!r}")


def check_choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{owner} {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def check_image(x: torch.Tensor, owner: str, in_chans: int, min_size: int = 1) -> None:
    """Raise :class:`InputShapeError` unless ``x`` is (B, in_chans, H, W) with H, W >= ``min_size``."""
    if x.dim() != 4:
        raise InputShapeError(f"{owner} expects a 4-D batch (B, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise InputShapeError(
            f"{owner} was built for {in_chans} input channel(s), got {x.shape[1]} (input shape {tuple(x.shape)})"
        )
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise InputShapeError(f"input {x.shape[2]}x{x.shape[3]} is smaller than {owner}'s patch size {min_size}")


def check_fixed_size(x: torch.Tensor, owner: str, in_chans: int, img_size: int, patch_size: int) -> None:
    """For models whose token mixing is a learned N x N map: the input must be the size it was built for."""
    check_image(x, owner, in_chans, patch_size)
    if x.shape[2] != img_size or x.shape[3] != img_size:
        grid = img_size // patch_size
        raise InputShapeError(
            f"{owner} was built for {img_size}x{img_size} input ({grid}x{grid} patches of {patch_size} px) and its "
            f"token mixing fixes that number of patches; got {x.shape[2]}x{x.shape[3]}: resize the input or rebuild "
            f"the model with img_size={x.shape[2]}" + ("" if x.shape[2] == x.shape[3] else " (square inputs only)")
        )


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches, each linearly projected: (B, C_in, H, W) -> (B, N, D), N = (H/p)(W/p).

    A stride-p convolution is exactly "flatten each patch and apply one shared linear layer".
    """

    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """Linear(d_in -> hidden) -> GELU -> Linear(hidden -> d_in), on the last axis: (..., d_in) -> (..., d_in)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def init_transformer_weights(module: nn.Module) -> None:
    """The ViT/DeiT recipe's init for token models: truncated-normal(0.02) linear weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class PatchMLPClassifier(ImageClassifier):
    """MLP-Mixer and ResMLP: ``patch_embed`` -> ``blocks`` -> ``norm``, then the mean over patches -> ``head``.

    Their token mixing is a learned N x N map, so the input must be ``img_size`` square.
    """

    arch: str  # the name errors use
    img_size: int
    patch_size: int
    in_chans: int
    patch_embed: nn.Module
    blocks: nn.Module
    norm: nn.Module

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputShapeError` (a ValueError) unless ``x`` is (B, in_chans, img_size, img_size)."""
        check_fixed_size(x, self.arch, self.in_chans, self.img_size, self.patch_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, N, D) normalized patch tokens."""
        self.check_input(x)
        return self.norm(self.blocks(self.patch_embed(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, N, D) -> (B, D) patch-averaged features if ``pre_logits`` else (B, num_classes) logits."""
        x = x.mean(dim=1)
        return x if pre_logits else self.head(x)
