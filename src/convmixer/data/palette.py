"""Colours of class indices: the Pascal VOC palette, mask overlays, palette PNGs (data show, predict)."""

from __future__ import annotations

from pathlib import Path

OVERLAY_ALPHA = 0.55  # weight of a class colour over the image in a segmentation overlay


def voc_palette(n: int = 256) -> list[tuple[int, int, int]]:
    """Pascal VOC's colour of each class index: the bits of the index spread over the high bits of R, G and B
    (index 0 black, 1 dark red, ...; 255, the ignore value, is drawn (224, 224, 192))."""
    colours = []
    for index in range(n):
        rgb, value = [0, 0, 0], index
        for bit in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << bit
            value >>= 3
        colours.append(tuple(rgb))
    return colours


def overlay(image, mask):
    """A 0..1 image (C, H, W) with its mask (H, W) laid over it as (3, H, W): each class but 0 (background) in its
    VOC palette colour at weight OVERLAY_ALPHA; ignored pixels (255) in the palette's ignore colour."""
    import torch

    palette = torch.tensor(voc_palette(), dtype=torch.float32) / 255  # (256, 3)
    rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    colour = palette[mask.long()].permute(2, 0, 1)
    weight = torch.where(mask == 0, 0.0, torch.where(mask == 255, 1.0, OVERLAY_ALPHA))
    return rgb * (1 - weight) + colour * weight


def save_palette_png(mask, path: str | Path) -> None:
    """A uint8 mask (H, W) of class indices as a palette PNG (mode "P", VOC colours): its pixel values stay the
    indices, which is what the folder and VOC loaders read back, and any viewer shows the colours."""
    import numpy as np
    from PIL import Image

    from ..io import atomic_write

    img = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    img.putpalette([v for rgb in voc_palette() for v in rgb])
    with atomic_write(Path(path)) as f:
        img.save(f, format="PNG")
