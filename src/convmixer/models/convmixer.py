"""ConvMixer, exactly as in "Patches Are All You Need?" (Trockman & Kolter, 2022).

    x (B, C_in, H, W)
    stem:    Conv2d(C_in -> h, kernel p, stride p) -> act -> BN             (B, h, H/p, W/p)
    blocks:  depth x [ x + BN(act(DepthwiseConv2d(k, "same")(x)))            spatial mixing
                       BN(act(Conv2d(h -> h, kernel 1)(x))) ]                channel mixing
    head:    global average pool -> Linear(h -> num_classes)                (B, num_classes)

BatchNorm comes *after* the activation everywhere ("post-activation BN"). Submodule names follow
timm's port, so state_dict keys are ``stem.0``, ``stem.2``, ``blocks.{i}.0.fn.0`` (depthwise conv),
``blocks.{i}.0.fn.2`` (its BN), ``blocks.{i}.1`` (pointwise conv), ``blocks.{i}.3`` (its BN), ``head``.

As a backbone (docs/usage.md, "Backbone API"): ``forward_intermediates`` gives chosen blocks' maps,
``prune_intermediate_layers`` drops what follows them, ``feature_info`` describes them, and
``set_grad_checkpointing`` trades recomputation for activation memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, InputShapeError
from .backbone import OUTPUT_FORMATS, block_feature_info, checkpointed, take_indices
from .classifier import GlobalPool2d, ImageClassifier, check_num_classes, linear_head

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


def stem_padding(stem_kernel: int, patch_size: int) -> int:
    """Zero padding of a stem conv with kernel ``stem_kernel`` >= stride ``patch_size``: the overlap split evenly,
    so the grid stays H/p x W/p (for H divisible by p) and a patch's window is centred on it."""
    return (stem_kernel - patch_size + 1) // 2


def patch_embedding(in_chans: int, dim: int, patch_size: int, act: str, stem_kernel: int | None = None) -> nn.Sequential:
    """p x p patches, linearly embedded: (B, C_in, H, W) -> (B, h, H/p, W/p).

    The paper's stem is non-overlapping (kernel = stride = p). ``stem_kernel`` > p makes each patch's embedding
    see a (stem_kernel x stem_kernel) window around it (stride p, padding :func:`stem_padding`): the same grid and
    blocks, a few more stem weights (an option beyond the paper, issue 15)."""
    k = patch_size if stem_kernel is None else stem_kernel
    return nn.Sequential(
        nn.Conv2d(in_chans, dim, kernel_size=k, stride=patch_size, padding=stem_padding(k, patch_size)),
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

    ``num_classes=0`` gives a feature extractor whose forward returns the pooled (B, h) features. ``forward`` and
    ``get_classifier`` come from :class:`~convmixer.models.classifier.ImageClassifier`.

    The head is ``global_pool`` -> dropout (``drop_rate``, training only) -> linear. ``global_pool`` is ``"avg"``
    (the paper's), ``"max"``, ``"avgmax"`` (the mean of the two) or ``""``: no pooling, and then the linear head
    is applied at every position, so ``forward`` gives (B, num_classes, H/p, W/p) class maps (and
    ``num_classes=0`` the (B, h, H/p, W/p) map). timm flattens the unpooled map instead, which only a 1 x 1 map
    survives. None of this adds state-dict keys: the defaults give exactly the paper's model and timm's keys.
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
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        stem_kernel: int | None = None,
    ) -> None:
        super().__init__()
        for field, value, low in (("dim", dim, 1), ("depth", depth, 1), ("kernel_size", kernel_size, 1),
                                  ("patch_size", patch_size, 1), ("num_classes", num_classes, 0),
                                  ("in_chans", in_chans, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"ConvMixer {field} must be an integer >= {low}, got {value!r}")
        if isinstance(drop_rate, bool) or not isinstance(drop_rate, (int, float)) or not 0 <= drop_rate < 1:
            raise ConfigError(f"ConvMixer drop_rate must be a number in [0, 1), got {drop_rate!r}")
        if stem_kernel is not None and (not isinstance(stem_kernel, int) or isinstance(stem_kernel, bool)
                                        or stem_kernel < patch_size):
            raise ConfigError(f"ConvMixer stem_kernel must be an integer >= the patch size {patch_size}, "
                              f"got {stem_kernel!r}")
        make_activation(act)  # validate the name before building anything
        self.dim, self.depth, self.kernel_size, self.patch_size = dim, depth, kernel_size, patch_size
        self.num_classes, self.in_chans, self.act = num_classes, in_chans, act
        self.global_pool, self.drop_rate = global_pool, float(drop_rate)
        self.stem_kernel = patch_size if stem_kernel is None else stem_kernel
        self.num_features = dim
        self.grad_checkpointing = False
        self.feature_info = block_feature_info(depth, dim, patch_size)

        self.stem = patch_embedding(in_chans, dim, patch_size, act, self.stem_kernel)
        self.blocks = nn.Sequential(*[convmixer_layer(dim, kernel_size, act) for _ in range(depth)])
        self.pooling = GlobalPool2d(global_pool)
        self.head_drop = nn.Dropout(self.drop_rate)
        self.head = linear_head(dim, num_classes)

    def config(self) -> dict[str, Any]:
        """The constructor arguments; ``ConvMixer(**m.config())`` rebuilds the architecture.

        ``global_pool`` and ``drop_rate`` appear only when they differ from the defaults, so the configs that
        checkpoints, exports and the fast path's probe cache already store stay what they were.
        """
        config = {
            "dim": self.dim, "depth": self.depth, "kernel_size": self.kernel_size,
            "patch_size": self.patch_size, "num_classes": self.num_classes,
            "in_chans": self.in_chans, "act": self.act,
        }
        if self.global_pool != "avg":
            config["global_pool"] = self.global_pool
        if self.drop_rate:
            config["drop_rate"] = self.drop_rate
        if self.stem_kernel != self.patch_size:
            config["stem_kernel"] = self.stem_kernel
        return config

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

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """With ``enable``, each block keeps only its input for backward and recomputes the rest there: activation
        memory of about one map per block instead of about seven, for one more forward pass of the blocks. It
        applies whenever gradients are being recorded (``torch.is_grad_enabled()``); gradients and BatchNorm
        running statistics are the same as without it."""
        self.grad_checkpointing = bool(enable)

    def _checkpointing(self) -> bool:
        return self.grad_checkpointing and torch.is_grad_enabled()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, h, H/p, W/p) feature map before pooling."""
        self.check_input(x)
        x = self.stem(x)
        if not self._checkpointing():
            return self.blocks(x)
        for block in self.blocks:
            x = checkpointed(block, x)
        return x

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The output maps of the chosen blocks, and the final map: ``(final, [maps])``, or ``[maps]`` alone with
        ``intermediates_only``.

        Every map is (B, h, H/p, W/p) (``output_fmt="NHWC"``: (B, H/p, W/p, h); the final map stays NCHW), in block
        order. ``indices``: None, every block; an int n, the last n blocks; a list of block indices, negative ones
        counted from the end (see :func:`~convmixer.models.backbone.take_indices`). ``norm`` is accepted for
        timm's signature and does nothing: ConvMixer has no norm after its last block (its last BatchNorm is part
        of the block, so every map is already normalized). ``stop_early`` skips the blocks after the last chosen
        one; the "final" map is then that block's. ``intermediates_only`` skips them too, as nothing would use them.
        """
        if output_fmt not in OUTPUT_FORMATS:
            raise ConfigError(f"output_fmt must be one of {', '.join(OUTPUT_FORMATS)}, got {output_fmt!r}")
        take, last = take_indices(len(self.blocks), indices)
        self.check_input(x)
        x = self.stem(x)
        stop = last if stop_early or intermediates_only else len(self.blocks) - 1
        recompute = self._checkpointing()
        maps = []
        for i, block in enumerate(self.blocks):
            if i > stop:
                break
            x = checkpointed(block, x) if recompute else block(x)
            if i in take:
                maps.append(x.permute(0, 2, 3, 1) if output_fmt == "NHWC" else x)
        return maps if intermediates_only else (x, maps)

    def prune_intermediate_layers(self, indices: int | Sequence[int] | None = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the blocks after the last one ``indices`` names (as in :meth:`forward_intermediates`; default: the
        last block only, so no block is dropped) and, with ``prune_head``, the pooling and classifier
        (``reset_classifier(0, "")``: ``forward`` then returns the last kept block's map). ``prune_norm`` does
        nothing (there is no final norm). Returns the chosen block indices, which stay valid for the pruned model.
        ``depth`` and ``feature_info`` follow the pruning, so ``config()`` rebuilds the pruned architecture."""
        take, last = take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: last + 1]
        self.depth = len(self.blocks)
        self.feature_info = self.feature_info[: last + 1]
        if prune_head:
            self.reset_classifier(0, "")
        return take

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, h, N, N) -> (B, h) pooled features if ``pre_logits`` else (B, num_classes) logits.

        With ``global_pool=""``: (B, h, N, N) unchanged if ``pre_logits`` else (B, num_classes, N, N), the head
        applied at every position. Dropout (``drop_rate``) acts on what the head sees, ``pre_logits`` included.
        """
        x = self.head_drop(self.pooling(x))
        if pre_logits:
            return x
        if x.dim() == 4:  # no pooling: the linear head at every position
            return self.head(x.movedim(1, -1)).movedim(-1, 1)
        return self.head(x)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh ``num_classes``-way head (0: none) and, when given, another ``global_pool``."""
        check_num_classes(num_classes)
        if global_pool is not None:
            self.pooling, self.global_pool = GlobalPool2d(global_pool), global_pool
        super().reset_classifier(num_classes)

    def extra_repr(self) -> str:
        pool = "" if self.global_pool == "avg" else f", global_pool={self.global_pool!r}"
        return f"ConvMixer-{self.dim}/{self.depth}, k={self.kernel_size}, p={self.patch_size}, act={self.act}{pool}"
