import numpy as np
import pytest

from convmixer.training.config import ScheduleConfig
from convmixer.training.schedule import image_size_at, lr_at, onecycle_lr, relative_costs


def test_onecycle_knots():
    total, lr = 1000, 0.01
    assert onecycle_lr(0, total, lr) == 0.0
    assert onecycle_lr(400, total, lr) == pytest.approx(lr)
    assert onecycle_lr(800, total, lr) == pytest.approx(lr / 20)
    assert onecycle_lr(1000, total, lr) == 0.0
    assert onecycle_lr(200, total, lr) == pytest.approx(lr / 2)  # linear warm-up
    assert onecycle_lr(600, total, lr) == pytest.approx((lr + lr / 20) / 2)  # linear anneal
    assert onecycle_lr(900, total, lr) == pytest.approx(lr / 40)  # linear fall to 0


def test_onecycle_is_the_piecewise_linear_curve_through_its_knots_and_bounded():
    total = 777
    values = [onecycle_lr(s, total, 0.05) for s in range(total + 1)]
    # an independent reference: linear interpolation between the paper's knots, step by step
    expected = np.interp(np.arange(total + 1) / total, [0.0, 0.4, 0.8, 1.0], [0.0, 0.05, 0.05 / 20, 0.0])
    np.testing.assert_allclose(values, expected, rtol=1e-12, atol=1e-15)
    assert onecycle_lr(-5, total, 0.05) == 0.0 and onecycle_lr(total + 50, total, 0.05) == 0.0  # clamped to [0, 1]
    assert max(values) <= 0.05 and min(values) >= 0
    peak = values.index(max(values))
    assert all(a <= b for a, b in zip(values[:peak], values[1:peak + 1]))  # rises to the peak
    assert all(a >= b for a, b in zip(values[peak:], values[peak + 1:]))  # then never rises again


def test_custom_knots_and_constant():
    cfg = ScheduleConfig(peak_at=0.2, anneal_at=0.5, final_div=10)
    assert lr_at(20, 100, 1.0, cfg) == pytest.approx(1.0)
    assert lr_at(50, 100, 1.0, cfg) == pytest.approx(0.1)
    assert lr_at(37, 100, 0.3, ScheduleConfig(kind="constant")) == 0.3
    with pytest.raises(ValueError):
        onecycle_lr(0, 0, 1.0)


def test_progressive_resizing_is_off_by_default():
    cfg = ScheduleConfig()
    assert {image_size_at(s, 100, 28, cfg, 2) for s in range(100)} == {28}
    assert relative_costs(10, 28, cfg) == [1.0] * 10


def test_progressive_resizing_grows_in_whole_patches_to_full_size_at_resize_until():
    cfg = ScheduleConfig(resize_from=16, resize_until=0.5)
    sizes = [image_size_at(s, 100, 28, cfg, 4) for s in range(100)]
    assert sizes[0] == 16 and sizes[49] == 24 and set(sizes[50:]) == {28}
    assert sizes == sorted(sizes)  # never shrinks
    assert all(s % 4 == 0 for s in sizes[:50])
    assert set(sizes[:50]) == {16, 20, 24}
    costs = relative_costs(100, 28, cfg, 4)
    assert costs[0] == pytest.approx((16 / 28) ** 2) and costs[-1] == 1.0


def test_progressive_resizing_never_goes_below_the_patch():
    cfg = ScheduleConfig(resize_from=5, resize_until=1.0)
    assert image_size_at(0, 10, 28, cfg, 7) == 7
