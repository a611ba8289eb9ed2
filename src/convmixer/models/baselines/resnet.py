"""ResNet with BasicBlocks, as in "Deep Residual Learning for Image Recognition" (He et al., 2016).

    x (B, C_in, H, W)
    stem:    "small":    Conv3x3(C_in -> w0, stride 1) -> BN -> ReLU                       (B, w0, H, W)
             "imagenet": Conv7x7(stride 2) -> BN -> ReLU -> MaxPool3x3(stride 2)          (B, w0, H/4, W/4)
    stages:  for each width w_i, depth n_i (stride 1 for the first stage, 2 after):
             n_i x BasicBlock  relu(BN(Conv3x3(relu(BN(Conv3x3(x))))) + shortcut(x))   (B, w_i, H/2^i, W/2^i)
    head:    global average pool -> Linear(w_last -> num_classes)

This is the original, post-activation ResNet (BN after each conv, ReLU after the addition). The CIFAR
networks of Section 4.2 are ``depths=(n, n, n)``, ``widths=(16, 32, 64)``, 6n+2 layers, with option A
shortcuts: identity, subsampled by 2 and zero-padded in channels where the shape changes, so they add
no parameters (ResNet-20: 0.27M). ResNet-18 is ``depths=(2, 2, 2, 2)``, ``widths=(64, 128, 256, 512)`` with
option B (a 1x1 conv + BN projection where the shape changes); on small images it keeps the 3x3 stem.
Convs have no bias (BN follows each); they are He-initialized (fan-out) and BN starts at weight 1, bias 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..classifier import ImageClassifier, linear_head
from .common import check_choice, check_image, check_ints

STEMS = ("small", "imagenet")
SHORTCUTS = ("A", "B")


class PadShortcut(nn.Module):
    """Option A: ``x[:, :, ::s, ::s]`` with ``extra`` zero channels appended; no parameters."""

    def __init__(self, stride: int, extra: int) -> None:
        super().__init__()
        self.stride, self.extra = stride, extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs and a shortcut: (B, c_in, H, W) -> (B, c_out, H/stride, W/stride)."""

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = conv3x3(c_out, c_out), nn.BatchNorm2d(c_out)
        self.act = nn.ReLU(inplace=True)
        if stride == 1 and c_in == c_out:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            if c_out < c_in:
                raise ConfigError(f"option A shortcuts can only widen (got {c_in} -> {c_out} channels); "
                                  "use shortcut='B'")
            self.shortcut = PadShortcut(stride, c_out - c_in)
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


def make_stem(in_chans: int, width: int, stem: str) -> nn.Sequential:
    if stem == "small":
        return nn.Sequential(conv3x3(in_chans, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
    return nn.Sequential(nn.Conv2d(in_chans, width, kernel_size=7, stride=2, padding=3, bias=False),
                         nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))


class ResNet(ImageClassifier):
    """ResNet with ``len(depths)`` stages of BasicBlocks; ``depths[i]`` blocks of width ``widths[i]`` each.

    ``stem_width`` defaults to ``widths[0]``. ``num_classes=0`` gives a feature extractor whose forward
    returns the pooled (B, widths[-1]) features.
    """

    def __init__(
        self,
        depths: Sequence[int] = (3, 3, 3),
        widths: Sequence[int] = (16, 32, 64),
        stem: str = "small",
        shortcut: str = "A",
        stem_width: int | None = None,
        num_classes: int = 10,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        depths, widths = tuple(depths), tuple(widths)
        if not depths or len(depths) != len(widths):
            raise ConfigError(f"ResNet depths and widths must be non-empty and of equal length, "
                              f"got {depths} and {widths}")
        stem_width = widths[0] if stem_width is None else stem_width
        check_ints("ResNet", *((f"depths[{i}]", d, 1) for i, d in enumerate(depths)),
                   *((f"widths[{i}]", w, 1) for i, w in enumerate(widths)),
                   ("stem_width", stem_width, 1), ("num_classes", num_classes, 0), ("in_chans", in_chans, 1))
        check_choice("ResNet", "stem", stem, STEMS)
        check_choice("ResNet", "shortcut", shortcut, SHORTCUTS)
        self.depths, self.widths, self.stem_type, self.shortcut = depths, widths, stem, shortcut
        self.stem_width, self.num_classes, self.in_chans = stem_width, num_classes, in_chans
        self.num_features = widths[-1]

        self.stem = make_stem(in_chans, stem_width, stem)
        stages, c_in = [], stem_width
        for i, (depth, width) in enumerate(zip(depths, widths)):
            blocks = [BasicBlock(c_in if j == 0 else width, width, 2 if i > 0 and j == 0 else 1, shortcut)
                      for j in range(depth)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.pooling = nn.AdaptiveAvgPool2d(1)
        self.head = linear_head(self.num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def config(self) -> dict[str, Any]:
        """The constructor arguments; ``ResNet(**m.config())`` rebuilds the architecture."""
        return {
            "depths": list(self.depths), "widths": list(self.widths), "stem": self.stem_type,
            "shortcut": self.shortcut, "stem_width": self.stem_width, "num_classes": self.num_classes,
            "in_chans": self.in_chans,
        }

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputShapeError` (a ValueError) for a batch this model cannot take."""
        check_image(x, "ResNet", self.in_chans)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, widths[-1], H', W') feature map before pooling (H' = H / 2^(stages-1) for "small")."""
        self.check_input(x)
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, C, H', W') -> (B, C) pooled features if ``pre_logits`` else (B, num_classes) logits."""
        x = self.pooling(x).flatten(1)
        return x if pre_logits else self.head(x)

    def extra_repr(self) -> str:
        layers = 2 * sum(self.depths) + 2
        return f"ResNet-{layers}, widths={list(self.widths)}, stem={self.stem_type}, shortcut={self.shortcut}"
