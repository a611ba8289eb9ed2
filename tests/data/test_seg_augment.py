"""The joint augmentation: image and mask follow the same geometry, padding is ignored, bad options refused."""

import dataclasses

import pytest
import torch

from convmixer.data import AugmentConfig, augment_preset, no_augment
from convmixer.data.seg_augment import SegAugment, nearest_crop
from convmixer.errors import ConfigError


def _blocks(n=6, size=32, seed=0):
    """Images whose pixel value is 20 x (class) + 10, and the masks of those classes: pixels and labels must
    still agree after any geometry. Classes form random blocks, so crops and flips show."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randint(0, 5, (n, 1, 4, 4), generator=g).float()
    classes = torch.nn.functional.interpolate(low, size=(size, size), mode="nearest")[:, 0].to(torch.uint8)
    images = (classes * 20 + 10)[:, None]
    return images.to(torch.uint8), classes


def _augment(**fields):
    cfg = no_augment(**fields).validate()
    return SegAugment(cfg, num_classes=5, mean=(0.0,), std=(1 / 255,), in_chans=1, image_size=32)


@pytest.mark.parametrize("fields", [
    dict(crop="rrc", scale=(0.2, 1.0), interpolation="nearest", hflip=0.5),
    dict(crop="pad", crop_padding=6, pad_mode="zeros", hflip=0.5),
    dict(crop="pad", crop_padding=6, pad_mode="reflect", hflip=1.0),
    dict(crop="none", hflip=1.0),
])
def test_geometry_is_applied_to_image_and_mask_alike(fields):
    images, masks = _blocks()
    x, y = _augment(**fields)(images, masks, torch.Generator().manual_seed(3))
    assert x.shape == (6, 1, 32, 32) and y.shape == (6, 32, 32) and y.dtype == torch.int64
    pixels = x[:, 0].round().long()  # std 1/255, mean 0: normalized values are the pixel values
    labelled = y != 255
    assert torch.equal(pixels[labelled], y[labelled] * 20 + 10)
    if fields.get("crop") == "pad":
        assert (~labelled).any()  # some border is padding, ignored
        if fields["pad_mode"] == "zeros":
            assert (pixels[~labelled] == 0).all()


def test_bilinear_crop_agrees_away_from_class_edges():
    images, masks = _blocks(n=8)
    x, y = _augment(crop="rrc", scale=(0.3, 1.0), interpolation="bilinear")(images, masks,
                                                                             torch.Generator().manual_seed(1))
    pixels = x[:, 0].round().long()
    agree = (pixels == y * 20 + 10).float().mean().item()
    misplaced = (pixels == y.flip(-1) * 20 + 10).float().mean().item()  # what a mask off by a mirror would score
    assert agree > 0.8 and agree > misplaced + 0.2  # only pixels next to class boundaries blend


def test_flip_mirrors_both_and_is_deterministic():
    images, masks = _blocks()
    aug = _augment(hflip=1.0)
    x, y = aug(images, masks, torch.Generator().manual_seed(0))
    assert torch.equal(y, masks.flip(-1).long()) and torch.equal(x[:, 0].round().long(), images[:, 0].flip(-1).long())
    aug = _augment(crop="rrc", hflip=0.5, jitter=0.3)
    a = aug(images, masks, torch.Generator().manual_seed(7))
    b = aug(images, masks, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_jitter_changes_pixels_not_masks():
    images, masks = _blocks()
    x, y = _augment(jitter=0.5)(images, masks, torch.Generator().manual_seed(0))
    assert torch.equal(y, masks.long()) and not torch.equal(x[:, 0].round().long(), images[:, 0].long())


def test_nearest_crop_picks_the_pixel_under_each_centre():
    mask = torch.arange(16, dtype=torch.uint8).view(1, 4, 4)
    one = torch.ones(1)
    out = nearest_crop(mask, one, one, 2 * one, 2 * one, 4)  # the middle 2x2 block, doubled
    assert out.tolist() == [[[5, 5, 6, 6], [5, 5, 6, 6], [9, 9, 10, 10], [9, 9, 10, 10]]]


@pytest.mark.parametrize("field,value", [
    ("mixup_alpha", 0.2), ("cutmix_alpha", 1.0), ("randaugment", "rand-m9"), ("erase_prob", 0.25),
    ("label_smoothing", 0.1),
])
def test_options_without_a_mask_meaning_are_refused(field, value):
    cfg = dataclasses.replace(augment_preset("segmentation"), **{field: value}).validate()
    with pytest.raises(ConfigError, match=f"set aug.{field}=") as e:
        SegAugment(cfg, num_classes=3, mean=(0.5,), std=(0.5,), in_chans=1, image_size=8)
    assert "\n" not in str(e.value) and "segmentation cannot use" in str(e.value)


def test_paper_defaults_name_every_field_to_set():
    with pytest.raises(ConfigError) as e:
        SegAugment(AugmentConfig(), num_classes=3, mean=(0.5,), std=(0.5,), in_chans=1, image_size=8)
    for field in ("mixup_alpha", "cutmix_alpha", "randaugment", "erase_prob", "label_smoothing"):
        assert f"aug.{field}=" in str(e.value)


def test_repr_and_cfg():
    aug = _augment(crop="pad", crop_padding=2, test_flip=True)
    assert aug.cfg.test_flip and "pad(2" in repr(aug)
