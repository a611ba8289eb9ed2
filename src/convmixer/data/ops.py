"""Batched image operations with Pillow's semantics, for RandAugment and the crops.

Every op takes ``x``: float32 ``(n, C, H, W)`` holding integer pixel values 0..255 (uint8 promoted, so
Pillow's lookup-table arithmetic can be reproduced exactly) and one parameter per image as an ``(n,)``
tensor, and returns a tensor of the same shape and dtype whose values are again integers in 0..255.
All images are processed at once; there is no per-image Python.

Pillow's conventions reproduced here (see tests/data/test_ops.py, which compares against Pillow):
- blends (Color, Contrast, Brightness, Sharpness) compute ``degenerate + f * (img - degenerate)`` and
  truncate to 0..255 like ``Image.blend``;
- Color's degenerate is the ITU-R 601 luma ``(19595 R + 38470 G + 7471 B + 2**15) >> 16`` of ``convert("L")``;
  Contrast's is the constant ``int(mean(luma) + 0.5)``; Sharpness's is the 3x3 SMOOTH filter
  ``[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13`` with the one-pixel border left as it was;
- AutoContrast and Equalize build a 256-entry lookup table per image and channel from its histogram;
- geometry maps each output pixel centre through an affine transform into the input, like
  ``Image.transform(AFFINE)``: the matrix is about the top-left corner for shear/translate and about the
  centre for rotate; points that land outside the image take the fill colour.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _per_image(value: Tensor) -> Tensor:
    """(n,) parameter -> (n, 1, 1, 1), broadcastable against (n, C, H, W)."""
    return value.reshape(-1, 1, 1, 1).to(torch.float32)


def _blend(degenerate: Tensor, x: Tensor, factor: Tensor) -> Tensor:
    """Pillow's ``Image.blend(degenerate, x, factor)``: linear inter/extrapolation, truncated to 0..255."""
    return (degenerate + _per_image(factor) * (x - degenerate)).clamp_(0, 255).floor_()


def luma(x: Tensor) -> Tensor:
    """(n, 3, H, W) RGB -> (n, 1, H, W) Pillow ``convert("L")`` values; a 1-channel input is returned as is."""
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    # Exact in float32: the largest sum, 255 * 65536 + 32768, is below 2**24.
    return torch.floor((r * 19595 + g * 38470 + b * 7471 + 32768) / 65536)


def _apply_lut(x: Tensor, lut: Tensor) -> Tensor:
    """Look up every pixel of ``x`` (n, C, H, W) in ``lut`` (n * C, 256), per image and channel."""
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w).to(torch.int64)
    return torch.gather(lut.to(x.dtype), 1, flat).reshape(n, c, h, w)


def _histogram(x: Tensor) -> Tensor:
    """(n, C, H, W) -> (n * C, 256) pixel counts per image and channel (int64), via one scatter_add."""
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w).to(torch.int64)
    hist = torch.zeros(n * c, 256, dtype=torch.int64, device=x.device)
    return hist.scatter_add_(1, flat, torch.ones_like(flat))


# ----------------------------------------------------------------------------------------------------------------
# Colour ops
# ----------------------------------------------------------------------------------------------------------------
def identity(x: Tensor, *_: Tensor) -> Tensor:
    return x


def invert(x: Tensor, *_: Tensor) -> Tensor:
    return 255 - x


def auto_contrast(x: Tensor, *_: Tensor) -> Tensor:
    """Stretch each channel so its darkest pixel becomes 0 and its brightest 255 (constant channels: as is)."""
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w)
    lo, hi = flat.amin(1, keepdim=True).double(), flat.amax(1, keepdim=True).double()
    scale = 255.0 / (hi - lo).clamp_min(1)
    levels = torch.arange(256, dtype=torch.float64, device=x.device)
    # Pillow computes int(i * scale + offset) in double precision with offset = -lo * scale; do the same so
    # the values that land exactly on an integer round the same way.
    lut = (levels * scale + (-lo * scale)).clamp(0, 255).floor()
    lut = torch.where(hi > lo, lut, levels)
    return _apply_lut(x, lut)


def equalize(x: Tensor, *_: Tensor) -> Tensor:
    """Histogram equalization per channel, Pillow's ``ImageOps.equalize`` lookup table."""
    hist = _histogram(x)
    n, c, h, w = x.shape
    top = x.reshape(n * c, h * w).amax(1).to(torch.int64)
    last = hist.gather(1, top[:, None])  # count of the brightest value present
    step = (h * w - last) // 255  # (n*C, 1)
    before = torch.cumsum(hist, 1) - hist  # pixels strictly darker than each level
    lut = (step // 2 + before) // step.clamp_min(1)
    levels = torch.arange(256, device=x.device).expand_as(lut)
    lut = torch.where(step > 0, lut.clamp(max=255), levels)  # step 0: one value (or almost) -> unchanged
    return _apply_lut(x, lut)


def posterize(x: Tensor, bits: Tensor) -> Tensor:
    """Keep the top ``bits`` (0..8) bits of every value; 8 or more: unchanged."""
    quantum = torch.pow(2.0, (8 - bits.clamp(0, 8)).to(torch.float32))
    q = _per_image(quantum)
    return torch.floor(x / q) * q


def solarize(x: Tensor, threshold: Tensor) -> Tensor:
    """Invert the values at or above ``threshold`` (256: unchanged)."""
    return torch.where(x >= _per_image(threshold), 255 - x, x)


def solarize_add(x: Tensor, add: Tensor, threshold: float = 128) -> Tensor:
    """Add ``add`` to the values below ``threshold``, saturating at 255."""
    return torch.where(x < threshold, (x + _per_image(add)).clamp_(max=255), x)


def color(x: Tensor, factor: Tensor) -> Tensor:
    """Saturation: 0 = grayscale, 1 = unchanged, > 1 more saturated. A no-op on 1-channel images."""
    if x.shape[1] == 1:
        return x
    return _blend(luma(x).expand_as(x), x, factor)


def contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the image's mean gray level: 0 = flat gray, 1 = unchanged."""
    mean = torch.floor(luma(x).mean(dim=(1, 2, 3), keepdim=True) + 0.5)
    return _blend(mean.expand_as(x), x, factor)


def brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with black: 0 = black, 1 = unchanged."""
    return (x * _per_image(factor)).clamp_(0, 255).floor_()


def sharpness(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with a smoothed copy: 0 = smoothed, 1 = unchanged, > 1 sharpened. Border pixels stay as they are.

    The smoothed copy is Pillow's SMOOTH filter [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, computed as
    (9 * 3x3 mean + 4 * centre) / 13 (an average pool is much cheaper than a convolution call on tiny images).
    """
    if x.shape[-2] < 3 or x.shape[-1] < 3:
        return x
    centre = x[:, :, 1:-1, 1:-1]
    smooth = (F.avg_pool2d(x, 3, stride=1) * 9 + centre * 4) / 13
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = torch.floor(smooth + 0.5).clamp_(0, 255)
    return _blend(degenerate, x, factor)


# ----------------------------------------------------------------------------------------------------------------
# Geometry: one batched affine warp for rotate / shear / translate and the random resized crop
# ----------------------------------------------------------------------------------------------------------------
def warp_affine(
    x: Tensor,
    matrix: Tensor,
    offset: Tensor,
    out_size: tuple[int, int] | None = None,
    *,
    mode: str = "bilinear",
    fill: Tensor | None = None,
) -> Tensor:
    """Resample ``x`` (n, C, H, W) so that output point p (pixel units, (x, y), pixel i spans [i, i+1]) takes
    the input at ``matrix @ p + offset`` (``matrix`` (n, 2, 2), ``offset`` (n, 2)), like Pillow's AFFINE
    transform. ``mode`` is "nearest", "bilinear" or "bicubic"; points outside the input take ``fill``
    ((C,) values 0..255, default 0). Returns (n, C, *out_size) rounded to integers in 0..255.
    """
    n, c, h, w = x.shape
    oh, ow = out_size or (h, w)
    dtype = x.dtype
    m = matrix.to(dtype)
    o = offset.to(dtype)
    if mode == "nearest":
        # Pillow takes floor(p) of the input point p; grid_sample rounds p - 0.5 half-to-even. Nudge points that
        # land exactly on a pixel edge (integer p, e.g. translate by whole pixels) so both pick the same pixel.
        o = o + 1e-3
    # Input point of every output pixel centre in grid_sample's coordinates (u = 2 p / size - 1), built by
    # broadcasting: affine_grid's batched matmul is slow for small images on CPU.
    to_unit = torch.tensor([2.0 / w, 2.0 / h], dtype=dtype, device=x.device)
    a = m * to_unit[None, :, None]  # row 0 (x) scaled by 2/w, row 1 (y) by 2/h
    b = o * to_unit - 1
    xs = torch.arange(ow, dtype=dtype, device=x.device) + 0.5
    ys = torch.arange(oh, dtype=dtype, device=x.device) + 0.5
    grid = a[:, None, None, :, 0] * xs[None, None, :, None] + (a[:, None, :, 1] * ys[None, :, None] + b[:, None, :])[:, :, None, :]
    # Pillow interpolates with edge-replicated neighbours for points inside the input and gives the fill to
    # points outside it: sample with border padding, then overwrite the outside.
    out = F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)
    bad = (grid < -1) | (grid >= 1)
    outside = (bad[..., 0] | bad[..., 1])[:, None]  # (n, 1, oh, ow)
    f = torch.zeros((), dtype=dtype, device=x.device) if fill is None else fill.to(dtype).reshape(1, c, 1, 1)
    out = torch.where(outside, f, out)
    # Pillow truncates interpolated values (cubic may overshoot: clamp first); the small epsilon keeps values
    # that are integers up to float32 rounding (e.g. a 90 degree turn) from dropping by one.
    return out.add_(1e-3).clamp_(0, 255).floor_()


def _eye(n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.eye(2, dtype=dtype, device=device).expand(n, 2, 2).clone()


def rotate_matrix(degrees: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Pillow's ``rotate(degrees)``: counter-clockwise on screen, about the image centre."""
    a = torch.deg2rad(-degrees.to(torch.float32))
    cos, sin = torch.cos(a), torch.sin(a)
    matrix = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    centre = torch.tensor([width / 2, height / 2], device=degrees.device)
    return matrix, centre - matrix @ centre


def shear_matrix(factor: Tensor, axis: int) -> tuple[Tensor, Tensor]:
    """Shear about the top-left corner: x_in = x + f * y (axis 0) or y_in = y + f * x (axis 1)."""
    matrix = _eye(len(factor), factor.device, torch.float32)
    matrix[:, axis, 1 - axis] = factor.to(torch.float32)
    return matrix, torch.zeros(len(factor), 2, device=factor.device)


def translate_matrix(pixels: Tensor, axis: int) -> tuple[Tensor, Tensor]:
    """Translate: the output at p takes the input at p + pixels along ``axis`` (content moves by -pixels)."""
    offset = torch.zeros(len(pixels), 2, device=pixels.device)
    offset[:, axis] = pixels.to(torch.float32)
    return _eye(len(pixels), pixels.device, torch.float32), offset


def _warp_one(kind: str, x: Tensor, value: Tensor, mode: str, fill: Tensor | None) -> Tensor:
    h, w = x.shape[-2:]
    if kind == "rotate":
        m, o = rotate_matrix(value, h, w)
    elif kind in ("shear_x", "shear_y"):
        m, o = shear_matrix(value, 0 if kind == "shear_x" else 1)
    else:  # translate_x / translate_y in pixels
        m, o = translate_matrix(value, 0 if kind == "translate_x" else 1)
    return warp_affine(x, m, o, mode=mode, fill=fill)


def rotate(x: Tensor, degrees: Tensor, *, mode: str = "nearest", fill: Tensor | None = None) -> Tensor:
    return _warp_one("rotate", x, degrees, mode, fill)


def shear_x(x: Tensor, factor: Tensor, *, mode: str = "nearest", fill: Tensor | None = None) -> Tensor:
    return _warp_one("shear_x", x, factor, mode, fill)


def shear_y(x: Tensor, factor: Tensor, *, mode: str = "nearest", fill: Tensor | None = None) -> Tensor:
    return _warp_one("shear_y", x, factor, mode, fill)


def translate_x(x: Tensor, pixels: Tensor, *, mode: str = "nearest", fill: Tensor | None = None) -> Tensor:
    return _warp_one("translate_x", x, pixels, mode, fill)


def translate_y(x: Tensor, pixels: Tensor, *, mode: str = "nearest", fill: Tensor | None = None) -> Tensor:
    return _warp_one("translate_y", x, pixels, mode, fill)


# ----------------------------------------------------------------------------------------------------------------
# Resized crops: separable resampling matrices, like Pillow's ``resize(size, filter, box)``
# ----------------------------------------------------------------------------------------------------------------
def _bicubic_(t: Tensor, a: float = -0.5) -> Tensor:
    """Keys' cubic convolution kernel with Pillow's a = -0.5 (support 2) of ``t`` >= 0; overwrites ``t``.

    Written with in-place arithmetic so the (n, S, in) temporaries stay few: on CPU every freshly allocated
    large tensor costs page faults, which here would cost more than the arithmetic itself."""
    inner = t < 1
    outer = (t < 2).logical_xor_(inner)
    near = t * (a + 2)
    near.sub_(a + 3).mul_(t).mul_(t).add_(1).mul_(inner)  # (a+2)|t|^3 - (a+3)|t|^2 + 1 on [0, 1)
    far = t.sub(5).mul_(t).add_(8).mul_(t).sub_(4).mul_(outer)  # a (|t|^3 - 5|t|^2 + 8|t| - 4) on [1, 2)
    return t.copy_(near).add_(far, alpha=a)


def resample_matrix(start: Tensor, length: Tensor, in_size: int, out_size: int, cubic: Tensor) -> Tensor:
    """(n, out_size, in_size) weights that resample the span [start, start + length) of an axis of ``in_size``
    pixels to ``out_size`` pixels, per image: output pixel i is centred at start + (i + 0.5) * length / out_size;
    the kernel (bicubic where ``cubic``, else bilinear) is widened by the scale when shrinking (antialiasing) and
    its taps are renormalized over the pixels that exist, as Pillow's resampling does."""
    dtype = torch.float32
    scale = (length / out_size).to(dtype)
    widen = scale.clamp_min(1.0)
    centres = start.to(dtype)[:, None] + (torch.arange(out_size, device=start.device, dtype=dtype) + 0.5) * scale[:, None]
    src = torch.arange(in_size, device=start.device, dtype=dtype) + 0.5
    t = (src[None, None, :] - centres[:, :, None]).div_(widen[:, None, None]).abs_()
    weights = (1 - t).clamp_min_(0)  # triangle (bilinear)
    weights.lerp_(_bicubic_(t), cubic.to(dtype).view(-1, 1, 1))
    return weights.div_(weights.sum(-1, keepdim=True).clamp_min_(1e-12))


def resized_crop(x: Tensor, top: Tensor, left: Tensor, height: Tensor, width: Tensor, size: int,
                 cubic: Tensor) -> Tensor:
    """Crop box (top, left, height, width) of each image of ``x`` (n, C, H, W) resized to ``size`` x ``size``:
    two batched matrix products. Like Pillow: horizontal pass first, each pass rounded and clipped to 0..255."""
    _, _, h, w = x.shape
    rows = resample_matrix(top, height, h, size, cubic)  # (n, S, H)
    cols = resample_matrix(left, width, w, size, cubic)  # (n, S, W)
    horizontal = torch.matmul(x, cols.transpose(1, 2)[:, None]).round_().clamp_(0, 255)  # (n, C, H, S)
    return torch.matmul(rows[:, None], horizontal).round_().clamp_(0, 255)
