"""The batched ops against Pillow, the reference timm's RandAugment runs on."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from convmixer.data import ops
from convmixer.data.randaugment import RAND_INCREASING_OPS, RAND_OPS, apply_op

T = torch.tensor


def _images(c: int, n: int = 6, h: int = 19, w: int = 23, seed: int = 0) -> np.ndarray:
    """n images (H, W, C) uint8 with a limited range, so AutoContrast and Equalize have work to do."""
    return np.random.default_rng(seed).integers(30, 200, size=(n, h, w, c), dtype=np.uint8)


def _pil(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a[..., 0] if a.shape[2] == 1 else a)


def _batch(arrays: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arrays.transpose(0, 3, 1, 2).copy()).float()


def _unpil(img: Image.Image) -> np.ndarray:
    a = np.asarray(img)
    return (a[..., None] if a.ndim == 2 else a).transpose(2, 0, 1).astype(np.float32)


COLOR_CASES = [
    ("invert", lambda x: ops.invert(x), ImageOps.invert),
    ("autocontrast", lambda x: ops.auto_contrast(x), ImageOps.autocontrast),
    ("equalize", lambda x: ops.equalize(x), ImageOps.equalize),
    *[(f"posterize{b}", lambda x, b=b: ops.posterize(x, T([b] * len(x))),
       lambda im, b=b: ImageOps.posterize(im, b)) for b in (1, 4, 7)],
    *[(f"solarize{t}", lambda x, t=t: ops.solarize(x, T([t] * len(x))),
       lambda im, t=t: ImageOps.solarize(im, t)) for t in (0, 26, 128, 256)],
    *[(f"{name}{f}", lambda x, fn=fn, f=f: fn(x, T([f] * len(x))), lambda im, cls=cls, f=f: cls(im).enhance(f))
      for name, fn, cls in (("color", ops.color, ImageEnhance.Color), ("contrast", ops.contrast, ImageEnhance.Contrast),
                            ("brightness", ops.brightness, ImageEnhance.Brightness),
                            ("sharpness", ops.sharpness, ImageEnhance.Sharpness))
      for f in (0.1, 0.55, 1.9)],
]


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("name,ours,pil", COLOR_CASES, ids=[c[0] for c in COLOR_CASES])
def test_color_ops_match_pillow_exactly(name, ours, pil, c):
    arrays = _images(c)
    out = ours(_batch(arrays)).numpy()
    for a, o in zip(arrays, out):
        np.testing.assert_array_equal(o, _unpil(pil(_pil(a))), err_msg=name)


def test_solarize_add_matches_timm_definition():
    x = torch.arange(256.0).view(1, 1, 16, 16)
    out = ops.solarize_add(x, T([100.0])).flatten()
    ref = torch.tensor([min(255.0, i + 100) if i < 128 else float(i) for i in range(256)])
    assert torch.equal(out, ref)


def test_posterize_zero_bits_is_black():  # level 10 of PosterizeIncreasing; Pillow >= 10 rejects 0 bits
    assert ops.posterize(torch.full((1, 1, 4, 4), 200.0), T([0])).eq(0).all()


GEOMETRY = [
    ("rotate", ops.rotate, -27.0, lambda im, v, r, f: im.rotate(v, resample=r, fillcolor=f)),
    ("rotate", ops.rotate, 13.0, lambda im, v, r, f: im.rotate(v, resample=r, fillcolor=f)),
    ("shear_x", ops.shear_x, -0.3, lambda im, v, r, f: im.transform(im.size, Image.AFFINE, (1, v, 0, 0, 1, 0), r, fillcolor=f)),
    ("shear_y", ops.shear_y, 0.17, lambda im, v, r, f: im.transform(im.size, Image.AFFINE, (1, 0, 0, v, 1, 0), r, fillcolor=f)),
    ("translate_x", ops.translate_x, -7.3, lambda im, v, r, f: im.transform(im.size, Image.AFFINE, (1, 0, v, 0, 1, 0), r, fillcolor=f)),
    ("translate_y", ops.translate_y, 4.0, lambda im, v, r, f: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, v), r, fillcolor=f)),
]


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("mode,resample", [("nearest", Image.NEAREST), ("bilinear", Image.BILINEAR)])
@pytest.mark.parametrize("name,fn,value,pil", GEOMETRY, ids=[f"{g[0]}{g[2]}" for g in GEOMETRY])
def test_geometry_matches_pillow(name, fn, value, pil, mode, resample, c):
    arrays = _images(c, n=3)
    fill = (128,) * c if c == 3 else 128
    out = fn(_batch(arrays), T([value] * 3), mode=mode, fill=T([128.0] * c)).numpy()
    for a, o in zip(arrays, out):
        ref = _unpil(pil(_pil(a), value, resample, fill))
        diff = np.abs(o - ref)
        # nearest: the same pixel but for float ties; bilinear: Pillow's truncation, off by one at most
        assert (diff > 1).mean() < 0.01 and (diff > 0).mean() < (0.01 if mode == "nearest" else 0.05), name


@pytest.mark.parametrize("name", sorted(set(RAND_OPS + RAND_INCREASING_OPS)))
@pytest.mark.parametrize("c", [1, 3])
def test_every_op_keeps_dtype_shape_and_range(name, c):
    x = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (5, c, 17, 21), dtype=np.uint8))
    for magnitude, sign in ((0.0, 1.0), (5.0, -1.0), (10.0, 1.0)):
        out = apply_op(name, x, magnitude, sign=sign)
        assert out.dtype == torch.uint8 and out.shape == x.shape
        f = apply_op(name, x.float(), magnitude, sign=sign)
        assert f.dtype == torch.float32 and f.min() >= 0 and f.max() <= 255 and torch.equal(f, f.round())


def test_geometry_fill_and_identity():
    x = torch.full((2, 3, 8, 8), 10.0)
    out = ops.translate_x(x, T([4.0, 0.0]), fill=T([1.0, 2.0, 3.0]))
    assert torch.equal(out[1], x[1])  # zero translation: unchanged
    assert out[0, :, :, -4:].eq(T([1.0, 2.0, 3.0]).view(3, 1, 1)).all()  # uncovered right side: the fill colour
    assert out[0, :, :, :4].eq(10).all()


@pytest.mark.parametrize("cubic,resample", [(False, Image.BILINEAR), (True, Image.BICUBIC)])
@pytest.mark.parametrize("h,w,size", [(28, 28, 28), (40, 60, 28), (28, 28, 56), (100, 90, 20)])
def test_resized_crop_matches_pillow_resize_with_box(cubic, resample, h, w, size):
    """Pillow's resize(box=...): same kernels (bicubic a = -0.5), antialiasing when shrinking, two rounded passes."""
    rng = np.random.default_rng(h * w + size)
    for _ in range(5):
        a = rng.integers(0, 256, (h, w), dtype=np.uint8)
        bh, bw = int(rng.integers(3, h + 1)), int(rng.integers(3, w + 1))
        top, left = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        ref = np.asarray(Image.fromarray(a).resize((size, size), resample, box=(left, top, left + bw, top + bh)))
        out = ops.resized_crop(torch.from_numpy(a)[None, None].float(), T([float(top)]), T([float(left)]),
                               T([float(bh)]), T([float(bw)]), size, T([cubic]))[0, 0].numpy()
        diff = np.abs(out - ref)
        assert diff.max() <= 2 and (diff > 1).mean() < 0.005  # Pillow's fixed-point weights round differently
