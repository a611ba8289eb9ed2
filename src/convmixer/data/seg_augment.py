"""The joint training transform of segmentation data: image and mask move together, batched on the device.

``SegAugment(images uint8 (B, C, H, W), masks uint8 (B, H, W), generator)`` returns float32 normalized images
(B, C, S, S) and int64 masks (B, S, S) with 255 = ignore, in this order:

    crop (random scale-and-crop | pad-and-crop | none) -> horizontal flip -> brightness/contrast jitter
    -> scale to 0..1 and normalize by mean/std

driven by the AugmentConfig fields ``crop``, ``scale``, ``ratio``, ``interpolation``, ``crop_padding``,
``pad_mode``, ``hflip`` and ``jitter``:

- "rrc": each image's own box (area ``scale`` of the image, aspect ``ratio``: the classification sampler,
  ``augment.rrc_boxes``) resized to S x S; the image with ``interpolation`` (antialiased bilinear/bicubic like
  the classification crop; "random" picks per image), the mask with nearest: output pixel i takes the mask pixel
  under its centre, ``floor(top + (i + 0.5) * h / S)``, the point the image's filter is centred on.
- "pad": shift by up to ``crop_padding`` px per axis; the image's border per ``pad_mode``, the mask's border 255
  (a reflected border shows pixels that have no label of their own there).
- the flip mirrors image and mask alike; the jitter changes the image only.

Mixup, CutMix, RandAugment, random erasing and label smoothing have no meaning for masks (or no mask-aware
version here): the constructor refuses a config that turns them on, in one line naming the field to set, rather
than leaving them silently off. Every random number comes from ``generator``; nothing is kept between calls.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, InputShapeError
from .augment import (
    BatchTransform,
    brightness_contrast,
    flip_draws,
    flip_where,
    normalize,
    pad_shifts,
    resize_boxes,
    rrc_boxes,
    shifted_crop,
)
from .config import AugmentConfig
from .randaugment import parse_randaugment
from .registry import IGNORE_INDEX

Tensor = torch.Tensor

# AugmentConfig fields that segmentation refuses: field -> (is it on?, the value that turns it off)
_REFUSED = {
    "mixup_alpha": (lambda c: c.mixup_alpha > 0 and c.mix_prob > 0, "0"),
    "cutmix_alpha": (lambda c: c.cutmix_alpha > 0 and c.mix_prob > 0, "0"),
    "randaugment": (lambda c: bool(parse_randaugment(c.randaugment)), "''"),
    "erase_prob": (lambda c: c.erase_prob > 0, "0"),
    "label_smoothing": (lambda c: c.label_smoothing != 0, "0"),
}


def refused_fields(cfg: AugmentConfig) -> list[str]:
    """The AugmentConfig settings that segmentation cannot honour, as ``aug.field=off-value`` strings."""
    return [f"aug.{name}={off}" for name, (on, off) in _REFUSED.items() if on(cfg)]


def check_for_segmentation(cfg: AugmentConfig) -> None:
    """A one-line ConfigError naming every setting to turn off when ``cfg`` asks for what masks cannot follow
    (the training config checks this on the way in, the augmentation again when it is built)."""
    refused = refused_fields(cfg)
    if refused:
        raise ConfigError(f"segmentation cannot use {', '.join(f.split('=')[0][4:] for f in refused)}: set "
                          f"{' '.join(refused)} (as configs/fmnist_seg.yaml does)")


def nearest_crop(masks: Tensor, top: Tensor, left: Tensor, height: Tensor, width: Tensor, size: int) -> Tensor:
    """Box (top, left, height, width) of each mask (B, H, W) resized to (B, size, size), nearest: output pixel i
    takes the pixel under its centre, ``floor(top + (i + 0.5) * height / size)``."""
    b, h, w = masks.shape
    steps = torch.arange(size, device=masks.device, dtype=torch.float32) + 0.5
    rows = (top[:, None] + steps * (height / size)[:, None]).floor().long()
    cols = (left[:, None] + steps * (width / size)[:, None]).floor().long()
    rows = torch.minimum(rows, (top + height - 1).long()[:, None]).clamp_(0, h - 1)
    cols = torch.minimum(cols, (left + width - 1).long()[:, None]).clamp_(0, w - 1)
    index = (rows[:, :, None] * w + cols[:, None, :]).view(b, size * size)
    return masks.reshape(b, h * w).gather(1, index).view(b, size, size)


class SegAugment(BatchTransform):
    """The training transform of a segmentation dataset (see the module docstring); the same call signature as
    :class:`~convmixer.data.augment.Augment`, with masks in place of labels. ``cfg`` is the validated
    AugmentConfig (``cfg.test_flip`` tells evaluation to average each image with its mirror)."""

    def __init__(self, cfg: AugmentConfig, *, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...],
                 in_chans: int, image_size: int) -> None:
        check_for_segmentation(cfg)
        super().__init__(cfg, num_classes=num_classes, mean=mean, std=std, in_chans=in_chans, image_size=image_size)

    def __repr__(self) -> str:
        c = self.cfg
        crop = {"rrc": f"rrc(scale={tuple(c.scale)}, ratio={tuple(round(r, 4) for r in c.ratio)})",
                "pad": f"pad({c.crop_padding}, {c.pad_mode})", "none": "none"}[c.crop]
        return f"SegAugment(crop={crop}, hflip={c.hflip}, jitter={c.jitter})"

    def pairs(self, images: Tensor, masks: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The geometric and photometric stage: uint8 images (B, C, H, W) and masks (B, H, W) -> float32 0..255
        images (B, C, S, S) and uint8 masks (B, S, S), before normalization."""
        if images.dim() != 4 or images.shape[1] != self.in_chans:
            raise InputShapeError(f"expected images (B, {self.in_chans}, H, W), got {tuple(images.shape)}")
        if masks.shape != (images.shape[0], *images.shape[2:]):
            raise InputShapeError(f"expected masks {(images.shape[0], *images.shape[2:])} to match the images, got "
                                  f"{tuple(masks.shape)}")
        cfg, s = self.cfg, self.image_size
        x = images.to(torch.float32, copy=True)
        b, _, h, w = x.shape
        if cfg.crop == "rrc":
            top, left, ch, cw = rrc_boxes(b, h, w, cfg.scale, cfg.ratio, generator, x.device)
            x = resize_boxes(x, top, left, ch, cw, s, cfg.interpolation, generator)
            masks = nearest_crop(masks, top, left, ch, cw, s)
        elif cfg.crop == "pad" and cfg.crop_padding > 0:
            shift = pad_shifts(b, cfg.crop_padding, generator, x.device)
            x = shifted_crop(x, cfg.crop_padding, shift, cfg.pad_mode)
            masks = shifted_crop(masks[:, None], cfg.crop_padding, shift, "zeros", IGNORE_INDEX)[:, 0]
        if x.shape[-2:] != (s, s):
            raise InputShapeError(f"images are {tuple(x.shape[-2:])} but the pipeline's image_size is {s}")
        if cfg.hflip > 0:
            flip = flip_draws(b, cfg.hflip, generator, x.device)
            x, masks = flip_where(x, flip), flip_where(masks, flip)
        if cfg.jitter > 0:
            x = brightness_contrast(x, cfg.jitter, generator)
        return x, masks

    def __call__(self, images: Tensor, masks: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x, masks = self.pairs(images, masks, generator)
        return normalize(x, self.mean, self.std, inplace=True), masks.to(torch.int64)


__all__ = ["SegAugment", "nearest_crop", "refused_fields"]
