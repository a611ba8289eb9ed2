"""Semantic segmentation with a ConvMixer backbone: a class score for every pixel.

Why this shape of model: a ConvMixer keeps one (B, h, H/p, W/p) map from its stem to its last block (it never
downsamples after the patch embedding), so a dense predictor needs no feature pyramid and no decoder stages; a head
that maps the last map to class scores and brings them back to the input resolution is the whole decoder. That is
the SETR-naive / Segmenter-linear baseline for isotropic (ViT-like) backbones, and the question it answers is
how much of segmentation an isotropic patch model does on its own.

    x (B, C_in, H, W)
    pad:       the last row/column repeated up to the next multiple of p          (B, C_in, H', W')
    backbone:  the ConvMixer's stem and blocks (no pooling, no classifier)        (B, h, H'/p, W'/p)
    decode:    "linear":       BN -> 1x1 conv (h -> K) -> bilinear x p           (B, K, H', W')
               "pixelshuffle": 1x1 conv (h -> K p^2) -> PixelShuffle(p)          (B, K, H', W')
    crop:      the top-left H x W                                                 (B, K, H, W)

Input sides that are not multiples of p: the input is extended at the bottom and right to the next multiple of p by
repeating its last row and column (replicate padding: it commutes with the input normalization, so the folded export
is exact; see :func:`pad_to_multiple`), the logits of the padded image are computed and cropped back to H x W. So
every output pixel is scored from the patch that holds it, the upsampling is exactly x p for both heads (no
stretching of a grid that covers less than the image), and the output is always the input's size.

Auxiliary heads (``aux_indices``): a "linear" head on the map of each named block, upsampled and cropped the same
way. They give the early blocks a direct training signal, as SETR's auxiliary heads do. Their loss weight (SETR:
0.4) belongs to the training task, not to the model.

``forward`` returns (B, K, H, W) logits. The one exception, in training mode with auxiliary heads, is the tuple
``(main, aux_1, ..., aux_n)``, each (B, K, H, W), the auxiliary heads in ascending block order (torchvision's
Inception ``aux_logits`` convention: the extra outputs exist only while training). In eval mode it is always the
main tensor alone.

State-dict keys: ``backbone.stem.*`` and ``backbone.blocks.*`` are a ConvMixer classifier's ``stem.*`` and
``blocks.*`` under a ``backbone.`` prefix (so a classification checkpoint initializes the backbone:
:func:`convmixer.factory.load_pretrained_backbone`); then ``decode_head.*`` and ``aux_heads.{i}.*``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputShapeError
from .backbone import take_indices
from .classifier import check_num_classes
from .convmixer import ConvMixer

HEADS = ("linear", "pixelshuffle")


class LinearSegHead(nn.Module):
    """(B, h, N, M) -> (B, K, pN, pM): BatchNorm, a 1x1 conv to the K class scores at the patch grid, then bilinear
    upsampling by p (``align_corners=False``: each patch's score sits at its centre)."""

    def __init__(self, dim: int, num_classes: int, patch_size: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.proj = nn.Conv2d(dim, num_classes, kernel_size=1)
        self.upsample = nn.Upsample(scale_factor=patch_size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.proj(self.norm(x)))


class PixelShuffleSegHead(nn.Module):
    """(B, h, N, M) -> (B, K, pN, pM): a 1x1 conv to K p^2 channels, rearranged by ``PixelShuffle(p)`` into a p x p
    block of K scores per patch: a learned upsampling, each pixel of a patch with its own linear map of the patch's
    features.

    Initialization: the p^2 filters of a class start identical (one default-initialized filter repeated), so at
    step 0 the head is a 1x1 conv followed by nearest-neighbour upsampling, and the sub-pixel filters drift apart
    only as the data asks. Independent random filters would start as a checkerboard of p x p patterns (the argument
    of Aitken et al. 2017 for sub-pixel convolutions).
    """

    def __init__(self, dim: int, num_classes: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(dim, num_classes * patch_size * patch_size, kernel_size=1)
        self.shuffle = nn.PixelShuffle(patch_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reps = self.patch_size * self.patch_size
        one = nn.Conv2d(self.proj.in_channels, self.proj.out_channels // reps, kernel_size=1)
        with torch.no_grad():  # PixelShuffle reads channel c * p^2 + (i * p + j) for class c, sub-pixel (i, j)
            self.proj.weight.copy_(one.weight.repeat_interleave(reps, dim=0))
            self.proj.bias.copy_(one.bias.repeat_interleave(reps, dim=0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.proj(x))


def check_head(head: Any) -> None:
    if head not in HEADS:
        raise ConfigError(f"segmentation head must be one of {', '.join(map(repr, HEADS))}, got {head!r}")


def make_seg_head(head: str, dim: int, num_classes: int, patch_size: int) -> nn.Module:
    check_head(head)
    cls = LinearSegHead if head == "linear" else PixelShuffleSegHead
    return cls(dim, num_classes, patch_size)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``x`` (B, C, H, W) extended at the bottom and right, by repeating its last row and column, so that H and W
    are multiples of ``multiple``.

    Replicate rather than zero padding: it commutes with the per-channel normalization of the input, so the export,
    which folds the normalization into the stem conv and pads raw pixels, computes exactly what this model computes.
    It pads (a copy of the input, C_in channels: cheap) even by zero rows, without branching on the size, so an
    export with dynamic height and width (torch.export) keeps the padding for every size."""
    return F.pad(x, (0, (-x.shape[-1]) % multiple, 0, (-x.shape[-2]) % multiple), mode="replicate")


class ConvMixerSegmenter(nn.Module):
    """A ConvMixer backbone with a decode head at the patch grid, upsampled to the input size (see the module
    docstring for the shapes, the padding rule and the forward return rule).

    ``dim``, ``depth``, ``kernel_size``, ``patch_size``, ``act`` and ``in_chans`` are the backbone's, as in
    :class:`~convmixer.models.ConvMixer`; ``num_classes`` K the classes per pixel; ``head`` "linear" or
    "pixelshuffle"; ``aux_indices`` the blocks that feed auxiliary heads (block indices, negative ones counted from
    the end; empty: none).

    Named parts: ``backbone`` (a :class:`ConvMixer` without pooling or classifier), ``decode_head`` and ``aux_heads``
    (an ``nn.ModuleList``, one head per entry of ``aux_indices``, possibly empty).
    """

    def __init__(self, dim: int, depth: int, kernel_size: int = 9, patch_size: int = 7, num_classes: int = 150,
                 in_chans: int = 3, act: str = "gelu", head: str = "pixelshuffle",
                 aux_indices: Sequence[int] = ()) -> None:
        super().__init__()
        check_num_classes(num_classes)
        if num_classes < 1:
            raise ConfigError("a segmentation model needs num_classes >= 1 (a score per class and pixel)")
        check_head(head)
        self.backbone = ConvMixer(dim, depth, kernel_size, patch_size, num_classes=0, in_chans=in_chans, act=act,
                                  global_pool="")
        if isinstance(aux_indices, (str, bytes)) or not isinstance(aux_indices, Sequence):
            raise ConfigError(f"aux_indices must be a list of block indices, got {aux_indices!r}")
        chosen = take_indices(depth, list(aux_indices))[0] if len(aux_indices) else []
        self.dim, self.depth, self.kernel_size, self.patch_size = dim, depth, kernel_size, patch_size
        self.num_classes, self.in_chans, self.act = num_classes, in_chans, act
        self.head_type, self.aux_indices = head, tuple(chosen)
        self.decode_head = make_seg_head(head, dim, num_classes, patch_size)
        self.aux_heads = nn.ModuleList(LinearSegHead(dim, num_classes, patch_size) for _ in chosen)

    def config(self) -> dict[str, Any]:
        """The constructor arguments; ``ConvMixerSegmenter(**m.config())`` rebuilds the architecture (auxiliary
        block indices normalized: ascending, counted from 0)."""
        return {"dim": self.dim, "depth": self.depth, "kernel_size": self.kernel_size,
                "patch_size": self.patch_size, "num_classes": self.num_classes, "in_chans": self.in_chans,
                "act": self.act, "head": self.head_type, "aux_indices": list(self.aux_indices)}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the backbone's blocks in backward (see :meth:`ConvMixer.set_grad_checkpointing`)."""
        self.backbone.set_grad_checkpointing(enable)

    def reset_heads(self) -> None:
        """Fresh weights (and BatchNorm statistics) for the decode head and every auxiliary head."""
        for module in reversed([*self.decode_head.modules(), *self.aux_heads.modules()]):  # parts before wholes
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """(B, C_in, H, W) -> (B, K, H, W) logits; in training mode with auxiliary heads the tuple
        ``(main, aux_1, ..., aux_n)`` of such tensors (module docstring). Any H, W >= 1."""
        if x.dim() != 4 or x.shape[1] != self.in_chans or x.shape[2] < 1 or x.shape[3] < 1:
            raise InputShapeError(f"ConvMixerSegmenter expects a batch (B, {self.in_chans}, H, W) with H, W >= 1, "
                                  f"got shape {tuple(x.shape)}")
        height, width = x.shape[-2], x.shape[-1]
        x = pad_to_multiple(x, self.patch_size)
        if not (self.training and len(self.aux_heads)):
            return self.decode_head(self.backbone.forward_features(x))[..., :height, :width]
        final, maps = self.backbone.forward_intermediates(x, indices=list(self.aux_indices))
        outs = [self.decode_head(final), *(head(m) for head, m in zip(self.aux_heads, maps))]
        return tuple(out[..., :height, :width] for out in outs)

    def extra_repr(self) -> str:
        aux = f", aux heads on blocks {list(self.aux_indices)}" if self.aux_indices else ""
        return f"{self.num_classes} classes, {self.head_type} head{aux}"
