"""RandAugment with timm's semantics, batched: every image of a batch draws its own ops and magnitudes.

A timm-style spec such as ``"rand-m9-mstd0.5-inc1"`` means: for each image, ``n`` (default 2) ops are drawn
uniformly with replacement from the op list; each drawn op is applied with probability ``p`` (0.5) at a
magnitude drawn per application from N(m, mstd), clipped to [0, mmax] (10), on a 0..10 scale; signed ops
(rotate, shear, translate, the "increasing" enhancements) flip their sign with probability 0.5.
``inc1`` selects the "increasing" variants, whose severity grows with the magnitude. docs/data.md lists
every op with its argument at a given magnitude.

The batch is processed op by op, not image by image: per layer the images are grouped by the op they
drew (one argsort), colour ops run on their group, and all geometric ops of the layer run as one batched
affine warp. Every random number comes from the ``generator`` passed in.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from . import ops

Tensor = torch.Tensor

LEVEL_DENOM = 10.0  # the magnitude scale: M = 10 is the strongest setting of every op

# timm's two op lists ("rand" and "rand-...-inc1"); Cutout is left to random erasing, as in timm.
RAND_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
    "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)
RAND_INCREASING_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing",
    "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)
GEOMETRIC_OPS = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
# Ops that do nothing to a 1-channel image; grayscale data draws from the list without them.
COLOR_ONLY_OPS = ("Color", "ColorIncreasing")

_PIXEL_FN = {
    "AutoContrast": ops.auto_contrast,
    "Equalize": ops.equalize,
    "Invert": ops.invert,
    "Posterize": ops.posterize,
    "PosterizeIncreasing": ops.posterize,
    "Solarize": ops.solarize,
    "SolarizeIncreasing": ops.solarize,
    "SolarizeAdd": ops.solarize_add,
    "Color": ops.color,
    "ColorIncreasing": ops.color,
    "Contrast": ops.contrast,
    "ContrastIncreasing": ops.contrast,
    "Brightness": ops.brightness,
    "BrightnessIncreasing": ops.brightness,
    "Sharpness": ops.sharpness,
    "SharpnessIncreasing": ops.sharpness,
}


def op_argument(name: str, level: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    """The argument op ``name`` takes at magnitude ``level`` (n,) on the 0..10 scale, with ``sign`` (n,) = +-1.

    Rotate: degrees 30 f; Shear: factor 0.3 f; Translate*Rel: 0.45 f of the width/height, in px (all signed);
    Posterize: bits floor(4 f) (Increasing: 4 - that); Solarize: threshold floor(256 f) (Increasing: 256 - that);
    SolarizeAdd: floor(110 f) added below 128; Color/Contrast/Brightness/Sharpness: factor 0.1 + 1.8 f
    (Increasing: max(0.1, 1 +- 0.9 f)); where f = level / 10.
    """
    f = level.to(torch.float32) / LEVEL_DENOM
    s = sign.to(torch.float32)
    if name == "Rotate":
        return 30.0 * f * s
    if name in ("ShearX", "ShearY"):
        return 0.3 * f * s
    if name == "TranslateXRel":
        return 0.45 * f * s * width
    if name == "TranslateYRel":
        return 0.45 * f * s * height
    if name == "Posterize":
        return torch.floor(4 * f)
    if name == "PosterizeIncreasing":
        return 4 - torch.floor(4 * f)
    if name == "Solarize":
        return torch.floor(256 * f)
    if name == "SolarizeIncreasing":
        return 256 - torch.floor(256 * f)
    if name == "SolarizeAdd":
        return torch.floor(110 * f)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return 1.8 * f + 0.1
    if name.endswith("Increasing"):
        return (1.0 + 0.9 * f * s).clamp_min(0.1)
    return torch.zeros_like(f)  # AutoContrast, Equalize, Invert take no argument


@dataclass(frozen=True)
class RandAugmentSpec:
    """A parsed timm RandAugment string."""

    magnitude: float = 10.0  # m: magnitude of every op, 0..10 scale
    num_ops: int = 2  # n: ops applied in sequence to each image (drawn with replacement)
    magnitude_std: float = 0.0  # mstd: per application the magnitude is N(m, mstd); inf (mstd > 100) = U(0, m)
    magnitude_max: float = LEVEL_DENOM  # mmax: the noisy magnitude is clipped to [0, mmax]
    increasing: bool = False  # inc: use the variants whose severity increases with the magnitude
    prob: float = 0.5  # p: probability that each drawn op is applied (timm's AugmentOp default)

    @property
    def op_names(self) -> tuple[str, ...]:
        return RAND_INCREASING_OPS if self.increasing else RAND_OPS


_SECTION = re.compile(r"^([a-z]+)(.*)$")


def parse_randaugment(spec: str | None) -> RandAugmentSpec | None:
    """Parse ``"rand-m9-n2-mstd0.5-mmax10-inc1-p0.5"`` (any subset of sections, any order); "" / None = off."""
    if not spec or spec.strip().lower() in ("none", "off"):
        return None
    parts = spec.strip().split("-")
    if parts[0] != "rand":
        raise ConfigError(f"RandAugment spec {spec!r} must start with 'rand' (e.g. 'rand-m9-mstd0.5-inc1')")
    keys = {"m": ("magnitude", float), "n": ("num_ops", int), "mstd": ("magnitude_std", float),
            "mmax": ("magnitude_max", float), "inc": ("increasing", int), "p": ("prob", float)}
    values: dict = {}
    for part in parts[1:]:
        match = _SECTION.match(part)
        if not match or match.group(1) not in keys or not match.group(2):
            raise ConfigError(
                f"bad RandAugment section {part!r} in {spec!r}; known: m<float> n<int> mstd<float> mmax<float> "
                "inc<0|1> p<prob> (weighted choice 'w' is not supported)"
            )
        field, kind = keys[match.group(1)]
        try:
            values[field] = kind(match.group(2))
        except ValueError:
            raise ConfigError(f"bad number in RandAugment section {part!r} of {spec!r}") from None
    if "increasing" in values:
        values["increasing"] = bool(values["increasing"])
    if values.get("magnitude_std", 0.0) > 100:
        values["magnitude_std"] = math.inf
    parsed = RandAugmentSpec(**values)
    if parsed.num_ops < 1 or parsed.magnitude < 0 or parsed.magnitude_std < 0 or parsed.magnitude_max <= 0:
        raise ConfigError(f"RandAugment {spec!r}: need n >= 1, m >= 0, mstd >= 0, mmax > 0")
    if not 0 <= parsed.prob <= 1:
        raise ConfigError(f"RandAugment {spec!r}: p must be in [0, 1]")
    return parsed


class RandAugment:
    """Batched RandAugment: ``ra(x, generator)`` with ``x`` float32 (B, C, H, W) holding integer values 0..255."""

    def __init__(
        self, spec: RandAugmentSpec | str, *, in_chans: int, fill: tuple[int, ...] = (128,),
        interpolation: str = "random",
    ) -> None:
        self.spec = parse_randaugment(spec) if isinstance(spec, str) else spec
        if self.spec is None:
            raise ConfigError("RandAugment needs a spec such as 'rand-m9-mstd0.5-inc1'")
        names = self.spec.op_names
        if in_chans == 1:
            names = tuple(n for n in names if n not in COLOR_ONLY_OPS)
        self.op_names = names  # the ops drawn from, in index order
        self.in_chans = in_chans
        self.fill = tuple(fill) * in_chans if len(fill) == 1 else tuple(fill)
        if len(self.fill) != in_chans:
            raise ConfigError(f"RandAugment fill {fill!r} does not have 1 or {in_chans} values")
        self.interpolation = interpolation  # "random" = bilinear or bicubic per image, as timm's training default
        self._geometric = [n in GEOMETRIC_OPS for n in names]
        # index in op_names of each geometric op (all five are in both lists and never filtered out)
        self._geometric_index = [names.index(n) for n in GEOMETRIC_OPS]

    def __repr__(self) -> str:
        return f"RandAugment({self.spec}, ops={len(self.op_names)}, interpolation={self.interpolation})"

    def draw(self, batch: int, generator: torch.Generator, device: torch.device) -> dict[str, Tensor]:
        """All random numbers for one batch, (num_ops, batch) each: op index, applied?, level, sign, cubic?"""
        s = self.spec
        shape = (s.num_ops, batch)

        def rand() -> Tensor:
            return torch.rand(shape, generator=generator, device=device)

        op = torch.randint(len(self.op_names), shape, generator=generator, device=device)
        applied = rand() < s.prob
        if math.isinf(s.magnitude_std):
            level = rand() * s.magnitude
        elif s.magnitude_std > 0:
            level = s.magnitude + s.magnitude_std * torch.randn(shape, generator=generator, device=device)
        else:
            level = torch.full(shape, float(s.magnitude), device=device)
        level = level.clamp(0, s.magnitude_max)
        sign = torch.where(rand() < 0.5, 1.0, -1.0)
        cubic = rand() < 0.5
        return {"op": op, "applied": applied, "level": level, "sign": sign, "cubic": cubic}

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        b, _, h, w = x.shape
        d = self.draw(b, generator, x.device)
        fill = torch.tensor(self.fill, dtype=x.dtype, device=x.device)
        n_ops = len(self.op_names)
        for layer in range(self.spec.num_ops):
            chosen = torch.where(d["applied"][layer], d["op"][layer], -1)
            counts = torch.bincount(chosen + 1, minlength=n_ops + 1).tolist()  # one sync per layer
            groups = torch.split(torch.argsort(chosen, stable=True), counts)[1:]
            geometric = []
            for k, idx in enumerate(groups):
                if idx.numel() == 0:
                    continue
                if self._geometric[k]:
                    geometric.append(idx)
                    continue
                name = self.op_names[k]
                arg = op_argument(name, d["level"][layer, idx], d["sign"][layer, idx], h, w)
                x.index_copy_(0, idx, _PIXEL_FN[name](x.index_select(0, idx), arg))
            if geometric:
                idx = torch.cat(geometric)
                self._warp(x, idx, {key: v[layer, idx] for key, v in d.items()}, fill)
        return x

    def _warp(self, x: Tensor, idx: Tensor, d: dict[str, Tensor], fill: Tensor) -> None:
        """Apply each selected image's geometric op (all five kinds) in one affine warp per interpolation."""
        h, w = x.shape[-2:]
        kind = torch.tensor(self._geometric_index, device=x.device)[None, :] == d["op"][:, None]  # (n, 5) one-hot
        args = torch.stack([op_argument(n, d["level"], d["sign"], h, w) for n in GEOMETRIC_OPS], 1)
        arg = (args * kind).sum(1)  # each image's own argument
        zero = torch.zeros_like(arg)
        rot_m, rot_o = ops.rotate_matrix(torch.where(kind[:, 0], arg, zero), h, w)
        matrix = torch.eye(2, device=x.device).repeat(len(idx), 1, 1)
        matrix[:, 0, 1] = torch.where(kind[:, 1], arg, zero)  # ShearX
        matrix[:, 1, 0] = torch.where(kind[:, 2], arg, zero)  # ShearY
        offset = torch.stack([torch.where(kind[:, 3], arg, zero), torch.where(kind[:, 4], arg, zero)], 1)
        is_rot = kind[:, 0]
        matrix = torch.where(is_rot[:, None, None], rot_m, matrix)
        offset = torch.where(is_rot[:, None], rot_o, offset)
        warp_groups(x, idx, matrix, offset, d["cubic"], self.interpolation, fill)


def warp_groups(x: Tensor, idx: Tensor, matrix: Tensor, offset: Tensor, cubic: Tensor, interpolation: str,
                fill: Tensor | None) -> None:
    """Warp images ``x[idx]`` in place with per-image affine maps; ``interpolation`` "random" splits them into a
    bilinear and a bicubic group by ``cubic`` (bool per image)."""
    modes = [(interpolation, slice(None))] if interpolation != "random" else [("bilinear", ~cubic), ("bicubic", cubic)]
    for mode, sel in modes:
        part = idx[sel]
        if part.numel():
            x.index_copy_(0, part, ops.warp_affine(x.index_select(0, part), matrix[sel], offset[sel], mode=mode,
                                                   fill=fill))


def apply_op(
    name: str, images: Tensor, magnitude: float, *, sign: float = 1.0, fill: int = 128,
    interpolation: str = "bilinear",
) -> Tensor:
    """Apply RandAugment op ``name`` at ``magnitude`` (0..10) to every image of a uint8 or 0..255 float batch
    (B, C, H, W); returns the same dtype and shape. For inspection and tests; training uses :class:`RandAugment`."""
    if name not in _PIXEL_FN and name not in GEOMETRIC_OPS:
        raise ConfigError(f"unknown RandAugment op {name!r}; known: {', '.join(RAND_OPS + RAND_INCREASING_OPS[4:11])}")
    b, c, h, w = images.shape
    x = images.to(torch.float32, copy=True)
    level = torch.full((b,), float(magnitude), device=x.device)
    signs = torch.full((b,), float(sign), device=x.device)
    arg = op_argument(name, level, signs, h, w)
    if name in GEOMETRIC_OPS:
        kind = {"Rotate": "rotate", "ShearX": "shear_x", "ShearY": "shear_y", "TranslateXRel": "translate_x",
                "TranslateYRel": "translate_y"}[name]
        fill_t = torch.full((c,), float(fill), device=x.device)
        x = getattr(ops, kind)(x, arg, mode=interpolation, fill=fill_t)
    else:
        x = _PIXEL_FN[name](x, arg)
    return x.to(images.dtype)
