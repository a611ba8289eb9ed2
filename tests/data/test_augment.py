"""The whole batched recipe: shapes, reproducibility, per-image randomness, crops, flips, erasing."""

import math

import pytest
import torch

from convmixer.data import Augment, AugmentConfig, no_augment, normalize
from convmixer.data.augment import pad_crop, random_erasing, random_hflip, random_resized_crop, rrc_boxes
from convmixer.data.mix import smooth_one_hot
from convmixer.errors import InputShapeError

MEAN, STD = (0.3,), (0.35,)


def _aug(cfg: AugmentConfig, chans: int = 1, size: int = 28, classes: int = 10) -> Augment:
    return Augment(cfg, num_classes=classes, mean=MEAN * chans, std=STD * chans, in_chans=chans, image_size=size)


def _batch(n=32, c=1, size=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g), torch.randint(10, (n,), generator=g)


def test_everything_off_is_normalize_plus_one_hot():
    x, y = _batch()
    out, t = _aug(no_augment())(x, y, torch.Generator().manual_seed(0))
    assert torch.equal(out, normalize(x, MEAN, STD))
    assert torch.allclose(out, (x.float() / 255 - 0.3) / 0.35, atol=1e-5)
    assert torch.equal(t, smooth_one_hot(y, 10))
    _, t = _aug(no_augment(label_smoothing=0.1))(x, y, torch.Generator().manual_seed(0))
    assert torch.allclose(t, smooth_one_hot(y, 10, 0.1))


@pytest.mark.parametrize("chans", [1, 3])
def test_paper_recipe_output_and_reproducibility(chans):
    x, y = _batch(c=chans)
    aug = _aug(AugmentConfig(), chans=chans)
    a, ta = aug(x, y, torch.Generator().manual_seed(5))
    b, tb = aug(x, y, torch.Generator().manual_seed(5))
    c, _ = aug(x, y, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == torch.float32 and ta.shape == (32, 10)
    assert torch.equal(a, b) and torch.equal(ta, tb) and not torch.equal(a, c)
    assert torch.allclose(ta.sum(1), torch.ones(32))
    assert torch.equal(x, _batch(c=chans)[0])  # the input batch is not modified


def test_no_hidden_rng_state():
    """All draws come from the generator passed in: the global RNG is neither used nor advanced."""
    x, y = _batch()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    _aug(AugmentConfig())(x, y, torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)


def test_identical_images_are_augmented_differently():
    x, y = _batch(n=1)
    x, y = x.repeat(48, 1, 1, 1), y.repeat(48)
    cfg = AugmentConfig(mixup_alpha=0.0, cutmix_alpha=0.0)  # mixing would pair images on purpose
    out, _ = _aug(cfg)(x, y, torch.Generator().manual_seed(0))
    assert len(torch.unique(out.flatten(1), dim=0)) == 48


def test_rrc_boxes_follow_scale_and_ratio():
    top, left, h, w = rrc_boxes(5000, 40, 60, (0.08, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0),
                                torch.device("cpu"))
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 60).all()
    area = h * w / (40 * 60)
    assert area.min() > 0.06 and area.max() <= 1.0
    aspect = w / h
    assert aspect.min() > 0.7 and aspect.max() < 1.45  # rounding widens 3/4..4/3 slightly


def test_rrc_fallback_is_the_centre_crop():
    # scale above what fits: every attempt fails, the fallback is the whole image narrowed to ratio 1
    top, left, h, w = rrc_boxes(3, 20, 40, (1.0, 1.0), (1.0, 1.0), torch.Generator().manual_seed(0),
                                torch.device("cpu"))
    assert torch.equal(torch.stack([top, left, h, w], 1), torch.tensor([[0.0, 10, 20, 20]] * 3))


def test_rrc_full_box_is_identity():
    x = _batch(n=4)[0].float()
    out = random_resized_crop(x, 28, (1.0, 1.0), (1.0, 1.0), torch.Generator().manual_seed(0), "bilinear")
    assert torch.equal(out, x)
    up = random_resized_crop(x, 56, (1.0, 1.0), (1.0, 1.0), torch.Generator().manual_seed(0), "random")
    assert up.shape == (4, 1, 56, 56) and torch.equal(up, up.round()) and up.max() <= 255


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_pad_crop_translates_by_at_most_the_padding(mode):
    n, p = 64, 2
    x = torch.arange(28.0).view(1, 1, 1, 28).expand(n, 1, 28, 28).clone()  # column index as value
    out = pad_crop(x, p, torch.Generator().manual_seed(0), mode)
    centre = out[:, 0, 14, 14]  # column 14 (away from the border) shows the shift directly
    shifts = (centre - 14).unique().tolist()
    assert set(shifts) == {-2.0, -1.0, 0.0, 1.0, 2.0}
    if mode == "zeros":
        assert (out[:, 0, 14, 0] == 0).any()


def test_hflip_probability():
    x = torch.arange(8.0).view(1, 1, 1, 8).expand(1000, 1, 2, 8)
    out = random_hflip(x, 0.5, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == 7).float().mean().item()
    assert 0.45 < flipped < 0.55
    assert torch.equal(random_hflip(x, 0.0, torch.Generator()), x)


@pytest.mark.parametrize("mode", ["pixel", "rand", "const"])
def test_random_erasing(mode):
    n, h, w = 2000, 20, 20
    x = torch.full((n, 3, h, w), 100.0)
    out = random_erasing(x.clone(), 0.25, torch.Generator().manual_seed(0), mode=mode)
    erased = out != 100
    per_image = erased.any(1).flatten(1).float().mean(1)  # erased fraction of each image
    hit = per_image > 0
    assert 0.22 < hit.float().mean().item() < 0.28  # probability 0.25 per image
    assert per_image[hit].max() <= 1 / 3 + 0.05 and per_image[hit].min() >= 0.01
    if mode == "const":
        assert (out[erased] == 0).all()
    if mode == "rand":  # one colour per box and channel
        i = hit.nonzero()[0].item()
        assert len(out[i, 0][erased[i, 0]].unique()) == 1
    if mode == "pixel":
        assert abs(out[erased].std().item() - 1) < 0.05


def test_erasing_count_and_aspect():
    x = torch.zeros(500, 1, 32, 32)
    out = random_erasing(x, 1.0, torch.Generator().manual_seed(0), mode="pixel", max_count=3)
    assert (out != 0).flatten(1).any(1).all()  # probability 1: every image erased


def test_wrong_shapes_are_input_shape_errors():
    aug = _aug(no_augment())
    with pytest.raises(InputShapeError):
        aug(torch.zeros(2, 3, 28, 28, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), torch.Generator())
    with pytest.raises(InputShapeError):
        aug(torch.zeros(2, 1, 30, 30, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), torch.Generator())


def test_rrc_changes_resolution_to_image_size():
    x, y = _batch(size=40)
    out, _ = _aug(no_augment(crop="rrc"), size=28)(x, y, torch.Generator().manual_seed(0))
    assert out.shape == (32, 1, 28, 28) and math.isfinite(out.abs().max().item())
