"""RandAugment: the spec, per-image randomness, reproducibility, timm's magnitudes."""

import math

import pytest
import torch

from convmixer.data.randaugment import (
    RAND_INCREASING_OPS, RAND_OPS, RandAugment, RandAugmentSpec, op_argument, parse_randaugment,
)
from convmixer.errors import ConfigError


def test_parse_paper_spec():
    s = parse_randaugment("rand-m9-mstd0.5-inc1")
    assert s == RandAugmentSpec(magnitude=9, num_ops=2, magnitude_std=0.5, magnitude_max=10, increasing=True, prob=0.5)
    assert s.op_names == RAND_INCREASING_OPS
    assert parse_randaugment("rand-n3-m5-inc0-p1-mmax20-mstd101") == RandAugmentSpec(
        magnitude=5, num_ops=3, magnitude_std=math.inf, magnitude_max=20, increasing=False, prob=1.0)
    assert parse_randaugment("") is None and parse_randaugment(None) is None and parse_randaugment("none") is None


@pytest.mark.parametrize("spec", ["auto-m9", "rand-x3", "rand-m", "rand-mabc", "rand-w0", "rand-n0", "rand-p2"])
def test_bad_specs_are_config_errors(spec):
    with pytest.raises(ConfigError):
        parse_randaugment(spec)


def test_grayscale_skips_color():
    assert "ColorIncreasing" not in RandAugment("rand-m9-inc1", in_chans=1).op_names
    assert len(RandAugment("rand-m9-inc1", in_chans=1).op_names) == 14
    assert RandAugment("rand-m9", in_chans=3).op_names == RAND_OPS


def test_increasing_arguments_at_magnitude_9():
    level, plus, minus = torch.tensor([9.0]), torch.tensor([1.0]), torch.tensor([-1.0])
    assert op_argument("PosterizeIncreasing", level, plus, 28, 28).item() == 1  # 4 - int(3.6)
    assert op_argument("SolarizeIncreasing", level, plus, 28, 28).item() == 26  # 256 - int(230.4)
    assert op_argument("SolarizeAdd", level, plus, 28, 28).item() == 99  # int(99.0)
    assert op_argument("ContrastIncreasing", level, minus, 28, 28).item() == pytest.approx(0.19)
    assert op_argument("Rotate", level, minus, 28, 28).item() == pytest.approx(-27.0)
    assert op_argument("TranslateXRel", level, plus, 28, 40).item() == pytest.approx(0.405 * 40)
    assert op_argument("Posterize", level, plus, 28, 28).item() == 3  # the non-increasing variant
    assert op_argument("Color", level, plus, 28, 28).item() == pytest.approx(1.72)


def test_magnitude_noise_is_gaussian_and_clipped():
    ra = RandAugment("rand-m9-mstd0.5", in_chans=3)
    d = ra.draw(20000, torch.Generator().manual_seed(0), torch.device("cpu"))
    level = d["level"]
    assert level.max() <= 10 and level.min() >= 0
    assert abs(level[level < 10].mean().item() - 8.96) < 0.05  # N(9, 0.5) truncated at 10 has mean ~8.96
    assert abs((level == 10).float().mean().item() - 0.0228) < 0.005  # P(N(9, 0.5) > 10)
    assert abs(d["applied"].float().mean().item() - 0.5) < 0.02
    counts = torch.bincount(d["op"].flatten(), minlength=15).float() / d["op"].numel()
    assert (counts - 1 / 15).abs().max() < 0.01  # ops uniform, drawn with replacement


def test_identical_images_get_different_ops():
    """Randomness is per image: a batch of one image repeated comes out as many different images."""
    x = torch.randint(0, 256, (1, 3, 24, 24), generator=torch.Generator().manual_seed(3)).float().repeat(64, 1, 1, 1)
    out = RandAugment("rand-m9-mstd0.5-inc1", in_chans=3)(x.clone(), torch.Generator().manual_seed(0))
    distinct = torch.unique(out.flatten(1), dim=0)
    assert len(distinct) > 40  # 2 draws of 15 ops at p=0.5 with noisy magnitudes: nearly all differ
    assert (out == x).flatten(1).all(1).any()  # some images drew no op at all (p = 0.25)


def test_seed_reproduces_a_batch():
    x = torch.randint(0, 256, (32, 1, 28, 28), generator=torch.Generator().manual_seed(1)).float()
    ra = RandAugment("rand-m9-mstd0.5-inc1", in_chans=1, fill=(73,))
    a = ra(x.clone(), torch.Generator().manual_seed(7))
    b = ra(x.clone(), torch.Generator().manual_seed(7))
    c = ra(x.clone(), torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_prob_zero_is_identity():
    x = torch.randint(0, 256, (8, 3, 16, 16)).float()
    assert torch.equal(RandAugment("rand-m9-p0", in_chans=3)(x.clone(), torch.Generator().manual_seed(0)), x)


def test_bad_fill():
    with pytest.raises(ConfigError):
        RandAugment("rand-m9", in_chans=3, fill=(1, 2))
