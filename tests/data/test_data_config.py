"""DataConfig / AugmentConfig validation and presets."""

import dataclasses

import pytest

from convmixer.data import AUGMENT_PRESETS, AugmentConfig, DataConfig, augment_preset, no_augment
from convmixer.errors import ConfigError


def test_defaults_are_the_paper_recipe():
    a = AugmentConfig().validate()
    assert (a.crop, a.scale, a.ratio, a.hflip) == ("rrc", (0.08, 1.0), (3 / 4, 4 / 3), 0.5)
    assert a.randaugment == "rand-m9-mstd0.5-inc1"
    assert (a.mixup_alpha, a.cutmix_alpha, a.mix_prob, a.switch_prob, a.label_smoothing) == (0.5, 0.5, 1.0, 0.5, 0.1)
    assert (a.erase_prob, a.erase_mode) == (0.25, "pixel") and a.mixing
    d = DataConfig().validate()
    assert d.dataset == "fashion_mnist" and d.image_size is None and d.download


def test_no_augment_turns_everything_off():
    a = no_augment()
    assert a.crop == "none" and a.hflip == 0 and a.randaugment == "" and a.erase_prob == 0
    assert not a.mixing and a.label_smoothing == 0
    assert no_augment(label_smoothing=0.1).label_smoothing == 0.1


def test_presets():
    assert set(AUGMENT_PRESETS) == {"paper", "light", "none", "segmentation"}
    seg = augment_preset("segmentation")
    assert seg.crop == "rrc" and seg.jitter > 0 and not seg.mixing and seg.randaugment == "" and seg.erase_prob == 0
    assert augment_preset("light").crop == "pad" and augment_preset("paper", hflip=0.0).hflip == 0.0
    with pytest.raises(ConfigError, match="unknown augmentation preset"):
        augment_preset("fancy")


def test_configs_round_trip_as_dicts():
    a = AugmentConfig(erase_prob=0.1)
    assert AugmentConfig(**dataclasses.asdict(a)) == a
    assert DataConfig(**dataclasses.asdict(DataConfig(batch_size=3))).batch_size == 3


@pytest.mark.parametrize("field,value", [
    ("crop", "random"), ("scale", (0.5, 0.1)), ("scale", (0.0, 1.5)), ("ratio", (0, 1)), ("hflip", 1.5),
    ("mixup_alpha", -1), ("label_smoothing", 1.0), ("mix_mode", "pair"), ("erase_mode", "noise"),
    ("erase_count", 0), ("randaugment", "rand-q3"), ("interpolation", "lanczos"), ("pad_mode", "edge"),
    ("crop_padding", -1), ("fill", (300,)), ("erase_aspect", (2.0, 1.0)),
])
def test_bad_augment_values(field, value):
    with pytest.raises(ConfigError):
        dataclasses.replace(AugmentConfig(), **{field: value}).validate()


@pytest.mark.parametrize("field,value", [
    ("dataset", "imagenet21k"), ("batch_size", 0), ("workers", -1), ("image_size", 0), ("crop_pct", 1.5),
    ("interpolation", "area"), ("std", (0.0,)), ("synthetic_chans", 2), ("train_subset", 0),
])
def test_bad_data_values(field, value):
    with pytest.raises(ConfigError):
        dataclasses.replace(DataConfig(), **{field: value}).validate()
