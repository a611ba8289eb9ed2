"""Settings of the data pipeline: which dataset and how it is loaded (:class:`DataConfig`), and how training
batches are augmented (:class:`AugmentConfig`).

The :class:`AugmentConfig` defaults are the paper's ImageNet recipe (timm 0.5 flags of the official README):
RandomResizedCrop(0.08-1, 3/4-4/3) + flip 0.5 + RandAugment "rand-m9-mstd0.5-inc1" + random erasing 0.25
"pixel" + mixup 0.5 / CutMix 0.5 switching with probability 0.5 + label smoothing 0.1. docs/data.md says
what every setting means. Both classes are plain dataclasses of builtins, so ``dataclasses.asdict`` gives
a YAML/JSON-ready dict and ``DataConfig(**d)`` rebuilds one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..errors import ConfigError
from .registry import list_datasets

DATASETS = list_datasets()  # the built-in datasets' names (registry.py); DataConfig.validate asks the registry
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
CROPS = ("rrc", "pad", "none")
PAD_MODES = ("zeros", "reflect")
MIX_MODES = ("batch", "elem")
ERASE_MODES = ("pixel", "rand", "const")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_range(name: str, value: tuple, low: float, high: float) -> None:
    _check(
        isinstance(value, (tuple, list)) and len(value) == 2 and low <= value[0] <= value[1] <= high,
        f"{name} must be two numbers lo <= hi within [{low:g}, {high:g}], got {value!r}",
    )


@dataclass
class DataConfig:
    """Which dataset, where it lives and how it is batched."""

    dataset: str = "fashion_mnist"  # a registered dataset (registry.py: list_datasets())
    root: str | None = None  # explicit dataset location; None = search $CONVMIXER_DATA, the cache, system dirs
    download: bool = True  # download IDX datasets (MD5-checked) into the cache when not found anywhere
    mirror: str | None = None  # base URL to download from instead of the official ones (also $CONVMIXER_DATA_MIRROR)
    image_size: int | None = None  # square side in px; None = native size for small data, 224 for folder data
    batch_size: int = 128  # training images per batch per process (global batch = batch_size * world_size)
    eval_batch_size: int = 256  # evaluation images per batch per process
    workers: int = 2  # DataLoader worker processes that decode folder images (0 = decode in the main process)
    strict_images: bool = False  # folder data: fail on an unreadable image instead of skipping it with a warning
    crop_pct: float | None = None  # eval: resize short side to image_size / crop_pct, center crop; None = 0.96 folder
    interpolation: str = "bicubic"  # eval resize filter for folder data (and small data resized to image_size)
    mean: tuple[float, ...] | None = None  # per-channel mean of 0..1 pixels; None = the dataset's own
    std: tuple[float, ...] | None = None  # per-channel std of 0..1 pixels; None = the dataset's own
    train_subset: int | None = None  # use only the first N training samples (quick runs); None = all
    eval_subset: int | None = None  # use only the first N evaluation samples; None = all
    synthetic_size: int = 2048  # synthetic data: training samples
    synthetic_eval_size: int = 512  # synthetic data: evaluation samples
    synthetic_classes: int = 10  # synthetic data: number of classes
    synthetic_chans: int = 3  # synthetic data: channels (1 or 3)
    synthetic_image_size: int = 32  # synthetic data: native side in px
    synthetic_seed: int = 0  # synthetic data: seed of the images themselves (not of the training order)

    def validate(self) -> DataConfig:
        """Raise :class:`ConfigError` on a bad value; return ``self`` so calls can chain."""
        names = list_datasets()
        _check(self.dataset in names, f"unknown dataset {self.dataset!r}; choose one of {', '.join(names)}")
        for name in ("batch_size", "eval_batch_size", "synthetic_size", "synthetic_eval_size", "synthetic_classes",
                     "synthetic_image_size"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, f"{name} must be a positive integer, got {value!r}")
        _check(isinstance(self.workers, int) and self.workers >= 0, f"workers must be >= 0, got {self.workers!r}")
        _check(self.image_size is None or (isinstance(self.image_size, int) and self.image_size >= 1),
               f"image_size must be a positive integer or None, got {self.image_size!r}")
        _check(self.crop_pct is None or 0 < self.crop_pct <= 1, f"crop_pct must be in (0, 1], got {self.crop_pct!r}")
        _check(self.interpolation in INTERPOLATIONS,
               f"unknown interpolation {self.interpolation!r}; choose one of {', '.join(INTERPOLATIONS)}")
        _check(self.synthetic_chans in (1, 3), f"synthetic_chans must be 1 or 3, got {self.synthetic_chans!r}")
        for name in ("train_subset", "eval_subset"):
            value = getattr(self, name)
            _check(value is None or (isinstance(value, int) and value >= 1), f"{name} must be >= 1 or None")
        for name in ("mean", "std"):
            value = getattr(self, name)
            _check(value is None or (len(value) >= 1 and all(isinstance(v, (int, float)) for v in value)),
                   f"{name} must be a list of numbers or None, got {value!r}")
        _check(self.std is None or all(v > 0 for v in self.std), f"std must be positive, got {self.std!r}")
        return self


@dataclass
class AugmentConfig:
    """Training augmentation; every piece can be turned off. Defaults: the paper's ImageNet recipe."""

    crop: str = "rrc"  # "rrc" random resized crop | "pad" random translate (pad + crop) | "none"
    scale: tuple[float, float] = (0.08, 1.0)  # rrc: crop area as a fraction of the image area (min, max)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # rrc: crop aspect ratio w/h (min, max), sampled log-uniformly
    crop_padding: int = 4  # pad: largest shift in px (pad by this much on every side, crop back)
    pad_mode: str = "reflect"  # pad: "reflect" or "zeros" for the uncovered border
    interpolation: str = "random"  # rrc and RandAugment geometry: "random" (bilinear or bicubic per image) or one
    hflip: float = 0.5  # probability of a horizontal flip, per image
    jitter: float = 0.0  # brightness and contrast factors uniform in [1 - jitter, 1 + jitter] per image (pixels
    # only, never masks; after the flip, before RandAugment); 0 = off
    randaugment: str = "rand-m9-mstd0.5-inc1"  # timm-style spec: m magnitude, n ops, mstd, mmax, inc, p; "" = off
    fill: tuple[int, ...] | None = None  # RandAugment geometry fill per channel 0..255; None = round(255 * mean)
    mixup_alpha: float = 0.5  # mixup Beta(alpha, alpha); 0 = off
    cutmix_alpha: float = 0.5  # CutMix Beta(alpha, alpha); 0 = off
    mix_prob: float = 1.0  # probability that a batch (mode "batch") or image (mode "elem") is mixed at all
    switch_prob: float = 0.5  # with both on: probability of CutMix instead of mixup
    mix_mode: str = "batch"  # "batch": one lambda per batch (the paper) | "elem": one per image
    correct_lam: bool = True  # CutMix: lambda = 1 - area of the box after clipping at the border / image area
    label_smoothing: float = 0.1  # soft targets: off = smoothing / classes, on = 1 - smoothing + off
    erase_prob: float = 0.25  # random erasing probability per image; 0 = off
    erase_mode: str = "pixel"  # "pixel" per-pixel N(0,1) | "rand" per-channel N(0,1) | "const" zeros (normalized)
    erase_count: int = 1  # at most this many boxes per image (count drawn uniformly in 1..erase_count)
    erase_area: tuple[float, float] = (0.02, 1 / 3)  # erased area as a fraction of the image, split over boxes
    erase_aspect: tuple[float, float] = (0.3, 1 / 0.3)  # erased box aspect ratio h/w, sampled log-uniformly
    test_flip: bool = False  # test-time augmentation: evaluate the mean logits of each image and its mirror (2x cost)

    @property
    def mixing(self) -> bool:
        """True when mixup or CutMix can change a batch."""
        return self.mix_prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def validate(self) -> AugmentConfig:
        """Raise :class:`ConfigError` on a bad value; return ``self`` so calls can chain."""
        from .randaugment import parse_randaugment  # parsing is the spec's validation

        _check(self.crop in CROPS, f"unknown crop {self.crop!r}; choose one of {', '.join(CROPS)}")
        _check_range("scale", self.scale, 1e-6, 1.0)
        _check(isinstance(self.ratio, (tuple, list)) and len(self.ratio) == 2 and 0 < self.ratio[0] <= self.ratio[1],
               f"ratio must be two numbers 0 < lo <= hi, got {self.ratio!r}")
        _check(isinstance(self.crop_padding, int) and self.crop_padding >= 0,
               f"crop_padding must be an integer >= 0, got {self.crop_padding!r}")
        _check(self.pad_mode in PAD_MODES, f"unknown pad_mode {self.pad_mode!r}; choose one of {', '.join(PAD_MODES)}")
        interps = ("random", *INTERPOLATIONS)
        _check(self.interpolation in interps,
               f"unknown interpolation {self.interpolation!r}; choose one of {', '.join(interps)}")
        for name in ("hflip", "jitter", "mix_prob", "switch_prob", "erase_prob"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and 0 <= value <= 1, f"{name} must be in [0, 1], got {value!r}")
        for name in ("mixup_alpha", "cutmix_alpha"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and value >= 0, f"{name} must be >= 0 (0 = off), got {value!r}")
        _check(isinstance(self.label_smoothing, (int, float)) and 0 <= self.label_smoothing < 1,
               f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        _check(self.mix_mode in MIX_MODES, f"unknown mix_mode {self.mix_mode!r}; choose one of {', '.join(MIX_MODES)}")
        _check(self.erase_mode in ERASE_MODES,
               f"unknown erase_mode {self.erase_mode!r}; choose one of {', '.join(ERASE_MODES)}")
        _check(isinstance(self.erase_count, int) and self.erase_count >= 1,
               f"erase_count must be an integer >= 1, got {self.erase_count!r}")
        _check_range("erase_area", self.erase_area, 1e-6, 1.0)
        _check(isinstance(self.erase_aspect, (tuple, list)) and len(self.erase_aspect) == 2
               and 0 < self.erase_aspect[0] <= self.erase_aspect[1] and math.isfinite(self.erase_aspect[1]),
               f"erase_aspect must be two numbers 0 < lo <= hi, got {self.erase_aspect!r}")
        _check(self.fill is None or all(isinstance(v, int) and 0 <= v <= 255 for v in self.fill),
               f"fill must be integers in 0..255 or None, got {self.fill!r}")
        parse_randaugment(self.randaugment)
        return self


def no_augment(**overrides) -> AugmentConfig:
    """Every augmentation off: the batch is only normalized and its targets one-hot (what eval and tests use)."""
    off = dict(crop="none", hflip=0.0, randaugment="", mixup_alpha=0.0, cutmix_alpha=0.0, label_smoothing=0.0,
               erase_prob=0.0)
    return AugmentConfig(**{**off, **overrides})


# Named recipes for the CLI and configs. "paper": the ImageNet recipe (the defaults). "light": the cheap
# small-image baseline, random 2 px translate + flip (airbench-style). "none": nothing. "segmentation": what
# a mask can follow: random scale-and-crop (a quarter of the area up to all of it), flip, brightness/contrast.
AUGMENT_PRESETS = {
    "paper": AugmentConfig,
    "light": lambda: no_augment(crop="pad", crop_padding=2, hflip=0.5),
    "none": no_augment,
    "segmentation": lambda: no_augment(crop="rrc", scale=(0.25, 1.0), interpolation="bilinear", hflip=0.5,
                                       jitter=0.2),
}


def augment_preset(name: str, **overrides) -> AugmentConfig:
    """The preset ``name`` (see :data:`AUGMENT_PRESETS`) with ``overrides`` applied, validated."""
    if name not in AUGMENT_PRESETS:
        raise ConfigError(f"unknown augmentation preset {name!r}; choose one of {', '.join(AUGMENT_PRESETS)}")
    return dataclasses.replace(AUGMENT_PRESETS[name](), **overrides).validate()
