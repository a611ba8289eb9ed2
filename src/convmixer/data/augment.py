"""The training-batch transform, batched on the images' device.

``Augment(images uint8 (B, C, H, W), labels int64 (B,), generator)`` returns float32 normalized images
(B, C, S, S) and float32 soft targets (B, K), in timm's order:

    crop (random resized crop | pad-and-crop | none) -> horizontal flip -> brightness/contrast jitter -> RandAugment
    -> scale to 0..1 and normalize by mean/std -> random erasing -> mixup / CutMix + label smoothing

Crop, flip and RandAugment work on float32 pixels that stay integers in 0..255 (Pillow's uint8 arithmetic);
erasing writes N(0, 1) noise in normalized units, as timm's does after normalization. Every random number
comes from ``generator``; nothing here keeps state between calls.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError, InputShapeError
from . import ops
from .config import AugmentConfig
from .mix import Mix, box_mask
from .randaugment import RandAugment, parse_randaugment

Tensor = torch.Tensor


def normalize(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...], *, inplace: bool = False) -> Tensor:
    """uint8 (or 0..255 float) (B, C, H, W) -> float32 ``(x / 255 - mean) / std``, on the same device.
    ``inplace`` overwrites a float32 input instead of allocating (the augmentation owns its batch)."""
    c = images.shape[1]
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=images.device).view(1, c, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], device=images.device).view(1, c, 1, 1)
    if inplace and images.dtype == torch.float32:
        return images.mul_(scale).sub_(shift)
    return images.to(torch.float32) * scale - shift


def denormalize(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Inverse of :func:`normalize`, to 0..1 floats clamped for display."""
    c = x.shape[1]
    m = torch.tensor(mean, device=x.device).view(1, c, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, c, 1, 1)
    return (x * s + m).clamp(0, 1)


# ----------------------------------------------------------------------------------------------------------------
# Crops and flips
# ----------------------------------------------------------------------------------------------------------------
def rrc_fallback_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """The crop when no random box fits: the whole image narrowed to the nearest allowed aspect, centred."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def rrc_boxes(
    n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
    generator: torch.Generator, device: torch.device, attempts: int = 10,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random-resized-crop boxes (top, left, h, w) as float (n,) tensors, torchvision/timm's sampler: up to
    ``attempts`` draws of area ~ U(scale) * H * W and log-aspect ~ U(log ratio); the first box that fits wins;
    if none fits, the largest centred box with the aspect clamped into ``ratio``."""
    shape = (n, attempts)
    area = torch.empty(shape, device=device).uniform_(scale[0], scale[1], generator=generator) * (height * width)
    log_r = torch.empty(shape, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = fits.to(torch.int8).argmax(1, keepdim=True)  # index of the first fitting attempt
    w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], fits.any(1)
    u = torch.rand((2, n), generator=generator, device=device)
    top = torch.floor(u[0] * (height - h + 1))
    left = torch.floor(u[1] * (width - w + 1))
    fallback = torch.tensor(rrc_fallback_box(height, width, ratio), dtype=torch.float32, device=device)
    boxes = torch.stack([top, left, h, w], 1)
    boxes = torch.where(found[:, None], boxes, fallback[None, :])
    return boxes.unbind(1)


def random_resized_crop(
    x: Tensor, size: int, scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator,
    interpolation: str = "bilinear",
) -> Tensor:
    """(B, C, H, W) 0..255 float -> (B, C, size, size): each image's own random crop, resized like Pillow's
    ``resize(box=...)`` (antialiased when shrinking) with two batched matrix products."""
    b, c, h, w = x.shape
    top, left, ch, cw = rrc_boxes(b, h, w, scale, ratio, generator, x.device)
    return resize_boxes(x, top, left, ch, cw, size, interpolation, generator)


def resize_boxes(x: Tensor, top: Tensor, left: Tensor, ch: Tensor, cw: Tensor, size: int, interpolation: str,
                 generator: torch.Generator) -> Tensor:
    """Box (top, left, ch, cw) of each image of ``x`` resized to ``size`` x ``size``: antialiased bilinear or
    bicubic ("random": one or the other per image, drawn from ``generator``), or nearest."""
    b = x.shape[0]
    if interpolation == "random":  # timm's training default: bilinear or bicubic, per image
        cubic = torch.rand(b, generator=generator, device=x.device) < 0.5
    else:
        cubic = torch.full((b,), interpolation == "bicubic", device=x.device)
    if interpolation == "nearest":
        matrix = torch.zeros(b, 2, 2, device=x.device)
        matrix[:, 0, 0], matrix[:, 1, 1] = cw / size, ch / size
        return ops.warp_affine(x, matrix, torch.stack([left, top], 1), (size, size), mode="nearest")
    return ops.resized_crop(x, top, left, ch, cw, size, cubic)


def pad_shifts(n: int, padding: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """(2, n) random offsets (rows, columns) in 0..2 * padding of the pad-and-crop window, per image."""
    return torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=device)


def shifted_crop(x: Tensor, padding: int, shift: Tensor, mode: str = "reflect", value: float = 0.0) -> Tensor:
    """Pad ``x`` (B, C, H, W) by ``padding`` on every side ("reflect", or "zeros": the constant ``value``) and take
    the H x W window at offset ``shift`` (2, B) of each image."""
    b, c, h, w = x.shape
    if mode == "reflect" and (padding >= h or padding >= w):
        raise ConfigError(f"crop_padding {padding} must be smaller than the image ({h}x{w}) for reflect padding")
    padded = F.pad(x, (padding,) * 4, mode="reflect" if mode == "reflect" else "constant", value=value)
    rows = (shift[0][:, None] + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * padding)
    x = padded.gather(2, rows)
    cols = (shift[1][:, None] + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, c, h, w)
    return x.gather(3, cols)


def pad_crop(x: Tensor, padding: int, generator: torch.Generator, mode: str = "reflect") -> Tensor:
    """Random translate by up to ``padding`` px per axis (pad, then crop the original size at a random offset).
    ``mode`` "reflect" mirrors the border in (airbench), "zeros" fills it with black."""
    if padding == 0:
        return x
    return shifted_crop(x, padding, pad_shifts(x.shape[0], padding, generator, x.device), mode)


def random_hflip(x: Tensor, prob: float, generator: torch.Generator) -> Tensor:
    """Mirror each image left-right with probability ``prob``."""
    return flip_where(x, flip_draws(x.shape[0], prob, generator, x.device))


def flip_draws(n: int, prob: float, generator: torch.Generator, device: torch.device) -> Tensor:
    """(n,) bool: which images of a batch are mirrored."""
    return torch.rand(n, generator=generator, device=device) < prob


def flip_where(x: Tensor, flip: Tensor) -> Tensor:
    """``x`` (B, ...) mirrored along its last axis where ``flip`` (B,) is set."""
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def brightness_contrast(x: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    """Per image, Pillow-style Brightness then Contrast with factors uniform in [1 - strength, 1 + strength]
    (0..255 float pixels in and out)."""
    factors = torch.empty((2, x.shape[0]), device=x.device).uniform_(1 - strength, 1 + strength, generator=generator)
    return ops.contrast(ops.brightness(x, factors[0]), factors[1])


# ----------------------------------------------------------------------------------------------------------------
# Random erasing
# ----------------------------------------------------------------------------------------------------------------
def random_erasing(
    x: Tensor, prob: float, generator: torch.Generator, *, mode: str = "pixel", max_count: int = 1,
    area: tuple[float, float] = (0.02, 1 / 3), aspect: tuple[float, float] = (0.3, 1 / 0.3), attempts: int = 10,
) -> Tensor:
    """timm's RandomErasing on a normalized batch: with probability ``prob`` an image gets 1..max_count boxes,
    each of area ~ U(area) * H * W / count and aspect h/w ~ log-U(aspect) (up to ``attempts`` tries for a box
    strictly smaller than the image), filled with per-pixel N(0, 1) ("pixel"), a per-channel N(0, 1) colour
    ("rand") or 0 ("const")."""
    b, c, h, w = x.shape
    dev = x.device
    erase = torch.rand(b, generator=generator, device=dev) < prob
    if max_count > 1:
        count = torch.randint(1, max_count + 1, (b,), generator=generator, device=dev)
    else:
        count = torch.ones(b, dtype=torch.int64, device=dev)
    for box in range(max_count):
        shape = (b, attempts)
        target = torch.empty(shape, device=dev).uniform_(area[0], area[1], generator=generator)
        target = target * (h * w) / count[:, None]
        log_a = torch.empty(shape, device=dev).uniform_(math.log(aspect[0]), math.log(aspect[1]), generator=generator)
        bh = torch.round(torch.sqrt(target * torch.exp(log_a)))
        bw = torch.round(torch.sqrt(target / torch.exp(log_a)))
        fits = (bw < w) & (bh < h)
        first = fits.to(torch.int8).argmax(1, keepdim=True)
        bh, bw = bh.gather(1, first)[:, 0], bw.gather(1, first)[:, 0]
        u = torch.rand((2, b), generator=generator, device=dev)
        top = torch.floor(u[0] * (h - bh + 1))
        left = torch.floor(u[1] * (w - bw + 1))
        active = erase & (box < count) & fits.any(1)
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        mask = box_mask(top[idx], top[idx] + bh[idx], left[idx], left[idx] + bw[idx], h, w)
        if mode == "pixel":
            fill = torch.randn((len(idx), c, h, w), generator=generator, device=dev)
        elif mode == "rand":
            fill = torch.randn((len(idx), c, 1, 1), generator=generator, device=dev)
        else:
            fill = torch.zeros((), device=dev)
        x.index_copy_(0, idx, torch.where(mask, fill.to(x.dtype), x.index_select(0, idx)))
    return x


# ----------------------------------------------------------------------------------------------------------------
# The whole recipe
# ----------------------------------------------------------------------------------------------------------------
class BatchTransform:
    """What every training transform of a dataset holds: its validated AugmentConfig (``cfg``), the classes, the
    normalization statistics and the image shape it produces."""

    def __init__(self, cfg: AugmentConfig, *, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...],
                 in_chans: int, image_size: int) -> None:
        if len(mean) != in_chans or len(std) != in_chans:
            raise ConfigError(f"mean {mean} / std {std} need {in_chans} values, one per channel")
        self.cfg = cfg
        self.num_classes = num_classes
        self.mean, self.std = tuple(mean), tuple(std)
        self.in_chans = in_chans
        self.image_size = image_size


class Augment(BatchTransform):
    """The training transform of one dataset: see the module docstring.

    ``crop_in_loader``: folder data is already random-resized-cropped to ``image_size`` by the loader's
    workers, so the batched crop is skipped there (flip, RandAugment, erasing and mixing still run here).
    ``cfg`` is validated where it enters (``AugmentConfig.validate``); the RandAugment spec is parsed here.
    """

    def __init__(
        self, cfg: AugmentConfig, *, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...],
        in_chans: int, image_size: int, crop_in_loader: bool = False,
    ) -> None:
        super().__init__(cfg, num_classes=num_classes, mean=mean, std=std, in_chans=in_chans, image_size=image_size)
        self.crop_in_loader = crop_in_loader
        spec = parse_randaugment(cfg.randaugment)
        fill = cfg.fill if cfg.fill is not None else tuple(min(255, round(255 * m)) for m in mean)
        self.randaugment = (
            RandAugment(spec, in_chans=in_chans, fill=fill, interpolation=cfg.interpolation) if spec else None
        )
        self.mix = Mix(
            num_classes=num_classes, mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha,
            mix_prob=cfg.mix_prob, switch_prob=cfg.switch_prob, mode=cfg.mix_mode, correct_lam=cfg.correct_lam,
            label_smoothing=cfg.label_smoothing,
        )

    def __repr__(self) -> str:
        c = self.cfg
        parts = [f"crop={'loader' if self.crop_in_loader else c.crop}", f"hflip={c.hflip}",
                 *([f"jitter={c.jitter}"] if c.jitter else []),
                 f"randaugment={c.randaugment or 'off'}", f"erase={c.erase_prob}",
                 f"mixup={c.mixup_alpha}", f"cutmix={c.cutmix_alpha}", f"smoothing={c.label_smoothing}"]
        return f"Augment({', '.join(parts)})"

    def pixels(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """The pixel stage only: uint8 (B, C, H, W) -> float32 0..255 (B, C, S, S) after crop, flip, RandAugment."""
        if images.dim() != 4 or images.shape[1] != self.in_chans:
            raise InputShapeError(f"expected images (B, {self.in_chans}, H, W), got {tuple(images.shape)}")
        cfg = self.cfg
        x = images.to(torch.float32, copy=True)  # the ops below work in place
        s = self.image_size
        if not self.crop_in_loader and cfg.crop == "rrc":
            x = random_resized_crop(x, s, cfg.scale, cfg.ratio, generator, cfg.interpolation)
        elif not self.crop_in_loader and cfg.crop == "pad":
            x = pad_crop(x, cfg.crop_padding, generator, cfg.pad_mode)
        if x.shape[-2:] != (s, s):
            raise InputShapeError(f"images are {tuple(x.shape[-2:])} but the pipeline's image_size is {s}")
        if cfg.hflip > 0:
            x = random_hflip(x, cfg.hflip, generator)
        if cfg.jitter > 0:
            x = brightness_contrast(x, cfg.jitter, generator)
        if self.randaugment is not None:
            x = self.randaugment(x, generator)
        return x

    def __call__(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        x = normalize(self.pixels(images, generator), self.mean, self.std, inplace=True)
        if cfg.erase_prob > 0:
            x = random_erasing(x, cfg.erase_prob, generator, mode=cfg.erase_mode, max_count=cfg.erase_count,
                               area=tuple(cfg.erase_area), aspect=tuple(cfg.erase_aspect))
        return self.mix(x, labels, generator)


