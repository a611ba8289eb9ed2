"""The U-Net baseline (models/baselines/unet.py): its size against convmixer_seg_fmnist, shapes, the input rule."""

import pytest
import torch

from convmixer import (
    ConfigError,
    InputShapeError,
    build_from_checkpoint,
    create_model,
    get_model_entry,
    save_checkpoint,
)
from convmixer.models.baselines import UNet


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def unet_params(width, levels, in_chans, num_classes):
    """Closed form: double convs of 9 c_in c + 9 c c weights and two BNs (4c); transposed convs 4 c c/2 + c/2."""
    def double(c_in, c):
        return 9 * c_in * c + 9 * c * c + 4 * c

    chans = [width * 2**i for i in range(levels + 1)]
    down = double(in_chans, chans[0]) + sum(double(chans[i - 1], chans[i]) for i in range(1, levels + 1))
    up = sum(4 * chans[i] * chans[i - 1] + chans[i - 1] + double(chans[i], chans[i - 1]) for i in range(1, levels + 1))
    return down + up + chans[0] * num_classes + num_classes


def test_parameter_count_matches_the_convmixer_segmenter():
    unet, convmixer = n_params(create_model("unet_fmnist")), n_params(create_model("convmixer_seg_fmnist"))
    assert (unet, convmixer) == (165_102, 169_388)
    assert unet == unet_params(19, 2, 1, 11)
    assert abs(unet / convmixer - 1) < 0.05
    assert n_params(create_model("unet3_fmnist")) == unet_params(10, 3, 1, 11) == 188_961  # the 3-level check
    entry = get_model_entry("unet_fmnist")
    assert (entry.family, entry.task) == ("unet", "segmentation")
    assert entry.cfg.input_size == get_model_entry("convmixer_seg_fmnist").cfg.input_size


@pytest.mark.parametrize("width,levels,in_chans,k", [(4, 1, 1, 2), (3, 3, 3, 5)])
def test_shapes_gradients_and_closed_form(width, levels, in_chans, k):
    torch.manual_seed(0)
    model = UNet(width, levels, num_classes=k, in_chans=in_chans)
    assert n_params(model) == unet_params(width, levels, in_chans, k)
    step = 2**levels
    x = torch.randn(2, in_chans, 2 * step, 3 * step)
    out = model(x)
    assert out.shape == (2, k, 2 * step, 3 * step)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.down[0][0].weight.grad.abs().sum() > 0


def test_the_input_rule():
    model = UNet(2, 2, num_classes=3, in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 4, 12)).shape == (1, 3, 4, 12)
    with pytest.raises(ConfigError, match="multiples of 4 .* got 10x12: resize or pad to 8 or 12"):
        model(torch.randn(1, 1, 10, 12))
    with pytest.raises(ConfigError, match="multiples of 4"):
        model(torch.randn(1, 1, 2, 4))
    with pytest.raises(InputShapeError, match=r"expects a batch \(B, 1, H, W\)"):
        model(torch.randn(1, 3, 8, 8))
    with pytest.raises(ConfigError, match="width must be an integer"):
        UNet(0)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = create_model("unet_fmnist", width=4, num_classes=5)
    model.train()(torch.randn(2, 1, 8, 8))
    again = build_from_checkpoint(save_checkpoint(model, tmp_path / "unet.safetensors")).eval()
    assert again.config() == {"width": 4, "levels": 2, "num_classes": 5, "in_chans": 1}
    x = torch.randn(1, 1, 12, 8)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model.eval()(x), rtol=0, atol=0)
