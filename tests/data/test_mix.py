"""Mixup / CutMix / label smoothing: timm's soft targets and the CutMix lambda correction."""

import pytest
import torch

from convmixer.data.mix import Mix, cutmix_box, mix_targets, sample_beta, smooth_one_hot


def _constant_batch(n: int, h: int = 10, w: int = 12) -> torch.Tensor:
    """Image i is filled with the value i, so every output pixel says which image it came from."""
    return torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 2, h, w).clone()


def test_smoothing_formula():
    y = smooth_one_hot(torch.tensor([2, 0]), 5, 0.1)
    assert y[0, 2].item() == pytest.approx(1 - 0.1 + 0.1 / 5) and y[0, 0].item() == pytest.approx(0.1 / 5)
    assert torch.allclose(y.sum(1), torch.ones(2))
    assert torch.equal(smooth_one_hot(torch.tensor([1]), 3), torch.tensor([[0.0, 1.0, 0.0]]))


@pytest.mark.parametrize("mode", ["batch", "elem"])
@pytest.mark.parametrize("alphas", [(0.5, 0.5), (1.0, 0.0), (0.0, 1.0)])
def test_mixed_targets_sum_to_one(mode, alphas):
    mix = Mix(num_classes=7, mixup_alpha=alphas[0], cutmix_alpha=alphas[1], mode=mode, label_smoothing=0.1)
    labels = torch.randint(7, (16,), generator=torch.Generator().manual_seed(0))
    for seed in range(10):
        _, t = mix(torch.rand(16, 3, 8, 8), labels, torch.Generator().manual_seed(seed))
        assert t.shape == (16, 7) and t.dtype == torch.float32
        assert torch.allclose(t.sum(1), torch.ones(16)) and (t >= 0).all()


def test_lambda_one_leaves_the_batch_unchanged():
    x = torch.rand(6, 3, 8, 8)
    labels = torch.arange(6)
    out, t = Mix(num_classes=6, mixup_alpha=0.5, cutmix_alpha=0.5, mix_prob=0.0, label_smoothing=0.1)(
        x.clone(), labels, torch.Generator().manual_seed(0))
    assert torch.equal(out, x) and torch.allclose(t, smooth_one_hot(labels, 6, 0.1))
    assert torch.equal(mix_targets(labels, 6, 1.0), smooth_one_hot(labels, 6))
    top, bottom, left, right, lam = cutmix_box(torch.tensor([1.0]), 8, 8, torch.tensor([0.5]), torch.tensor([0.5]))
    assert (bottom - top).item() == 0 and lam.item() == 1.0  # a zero-area box


@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_cutmix_lambda_is_the_pasted_area(mode):
    """Targets weigh the partner by exactly the fraction of its pixels in the image (corrected lambda)."""
    n, h, w = 8, 10, 12
    mix = Mix(num_classes=n, cutmix_alpha=1.0, mode=mode)
    for seed in range(20):
        out, t = mix(_constant_batch(n, h, w), torch.arange(n), torch.Generator().manual_seed(seed))
        for i in range(n):
            partner = n - 1 - i
            from_partner = (out[i] == partner).float().mean().item() if partner != i else 0.0
            assert t[i, partner].item() == pytest.approx(from_partner, abs=1e-6) or partner == i
            assert set(out[i].unique().tolist()) <= {float(i), float(partner)}  # pasted, never blended


def test_cutmix_box_clipped_at_the_border():
    # lam 0.36 -> side sqrt(0.64) * 10 = 8; centre at pixel (0, 0): the box keeps only its inner 4 x 4 quarter
    top, bottom, left, right, lam = cutmix_box(torch.tensor([0.36]), 10, 10, torch.tensor([0.0]), torch.tensor([0.0]))
    assert (top.item(), bottom.item(), left.item(), right.item()) == (0, 4, 0, 4)
    assert lam.item() == pytest.approx(1 - 16 / 100)


@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_mixup_blends_with_the_flipped_batch(mode):
    n = 6
    mix = Mix(num_classes=n, mixup_alpha=0.5, mode=mode)
    out, t = mix(_constant_batch(n), torch.arange(n), torch.Generator().manual_seed(1))
    for i in range(n):
        lam = t[i, i].item() if i != n - 1 - i else 1.0
        expected = lam * i + (1 - lam) * (n - 1 - i)
        assert torch.allclose(out[i], torch.full_like(out[i], expected), atol=1e-4)


def test_switch_prob_chooses_cutmix_or_mixup():
    x = _constant_batch(8)
    both = dict(num_classes=8, mixup_alpha=0.5, cutmix_alpha=0.5)
    for seed in range(5):
        cut, _ = Mix(**both, switch_prob=1.0)(x.clone(), torch.arange(8), torch.Generator().manual_seed(seed))
        assert torch.equal(cut, cut.round())  # pasted pixels only
    blended = [Mix(**both, switch_prob=0.0)(x.clone(), torch.arange(8), torch.Generator().manual_seed(s))[0]
               for s in range(5)]
    assert any(not torch.equal(b, b.round()) for b in blended)


def test_switch_frequency_per_batch():
    mix = Mix(num_classes=4, mixup_alpha=0.5, cutmix_alpha=0.5, switch_prob=0.5)
    cuts = [mix.draw(1, torch.Generator().manual_seed(s), torch.device("cpu"))["cut"].item() for s in range(400)]
    assert 0.4 < sum(cuts) / len(cuts) < 0.6


def test_beta_sampler():
    lam = sample_beta(0.5, (20000,), torch.Generator().manual_seed(0), torch.device("cpu"))
    assert 0 <= lam.min() and lam.max() <= 1
    assert abs(lam.mean().item() - 0.5) < 0.02
    assert abs((lam < 0.1).float().mean().item() - 0.2048) < 0.015  # Beta(0.5, 0.5): arcsine law
