"""U-Net (Ronneberger et al., MICCAI 2015), small: the baseline for the ConvMixer segmenter at equal parameters.

    x (B, C_in, H, W)
    encoder:  level 0: double conv (C_in -> w) at H x W; level i = 1..L: 2x2 max-pool, double conv (w 2^(i-1) -> w 2^i)
    decoder:  level i = L..1: 2x2 stride-2 transposed conv (w 2^i -> w 2^(i-1)), concatenated with the encoder's
              level i-1 map (skip connection), double conv (w 2^i -> w 2^(i-1))
    head:     1x1 conv (w -> num_classes)                                         (B, num_classes, H, W)

A double conv is ``[3x3 conv (no bias, padding 1) -> BN -> ReLU] x 2``. As in the paper the channels double at every
downsampling and the up-convolution halves them; unlike the paper the convolutions are padded (the output is the
input's size, no cropping of the skip maps) and BatchNorm follows every conv, the usual modern form. ``width`` (w)
is the knob that sets the size; ``levels`` (L) the number of poolings.

Input rule: H and W must be multiples of 2^L (each pooling halves the map exactly, so every skip map lines up with
its upsampled partner); anything else is a :class:`ConfigError` naming the nearest sizes that work.

``unet_fmnist`` (width 19, 2 levels, 1 channel in, 11 classes) has 165,102 parameters, 2.5% fewer than
``convmixer_seg_fmnist`` (ConvMixer-128/8, k5, p2, pixel-shuffle head: 169,388); tests/models/test_unet.py checks
both counts. (With 3 levels no width comes within 5%: widths 9 and 10 give 153,164 and 188,961.) Its receptive field
is 44 px on 64 x 64 inputs (the ConvMixer's: 66 px).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import ConfigError, InputShapeError
from .common import check_ints


def double_conv(c_in: int, c_out: int) -> nn.Sequential:
    """(B, c_in, H, W) -> (B, c_out, H, W): two padded 3x3 convs, each followed by BN and ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A U-Net of ``levels`` poolings with ``width`` channels at full resolution (see the module docstring).

    ``forward`` maps (B, in_chans, H, W) to (B, num_classes, H, W) logits, H and W multiples of 2^levels.
    Parts: ``down`` (``levels + 1`` double convs, the last one the bottleneck), ``up`` (``levels`` transposed convs),
    ``merge`` (``levels`` double convs after each concatenation), ``classifier`` (the 1x1 conv).
    """

    def __init__(self, width: int = 16, levels: int = 3, num_classes: int = 11, in_chans: int = 1) -> None:
        super().__init__()
        check_ints("UNet", ("width", width, 1), ("levels", levels, 1), ("num_classes", num_classes, 1),
                   ("in_chans", in_chans, 1))
        self.width, self.levels, self.num_classes, self.in_chans = width, levels, num_classes, in_chans
        chans = [width * 2**i for i in range(levels + 1)]
        self.down = nn.ModuleList([double_conv(in_chans, chans[0])] +
                                  [double_conv(chans[i - 1], chans[i]) for i in range(1, levels + 1)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(nn.ConvTranspose2d(chans[i], chans[i - 1], 2, stride=2) for i in range(levels, 0, -1))
        self.merge = nn.ModuleList(double_conv(chans[i], chans[i - 1]) for i in range(levels, 0, -1))
        self.classifier = nn.Conv2d(chans[0], num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def config(self) -> dict[str, Any]:
        return {"width": self.width, "levels": self.levels, "num_classes": self.num_classes, "in_chans": self.in_chans}

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (2^levels: every pooling halves the map exactly)."""
        return 2 ** self.levels

    def check_input(self, x: torch.Tensor) -> None:
        """InputShapeError for a batch of the wrong rank or channels; ConfigError for sides not multiples of 2^L."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise InputShapeError(f"UNet expects a batch (B, {self.in_chans}, H, W), got shape {tuple(x.shape)}")
        step = 2**self.levels
        bad = [s for s in x.shape[2:] if s < step or s % step]
        if bad:
            sizes = sorted({max(step, s // step * step) for s in bad} | {-(-s // step) * step for s in bad})
            raise ConfigError(f"UNet with {self.levels} levels takes H and W that are multiples of {step} (2^levels); "
                              f"got {x.shape[2]}x{x.shape[3]}: resize or pad to {' or '.join(map(str, sizes))}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()  # the bottleneck
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        return self.classifier(x)

    def extra_repr(self) -> str:
        return f"width {self.width}, {self.levels} levels"
