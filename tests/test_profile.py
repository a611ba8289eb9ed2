import pytest
import torch

from convmixer import ConvMixer, create_model
from convmixer.profile import convmixer_macs, convmixer_params, profile_model


@pytest.mark.parametrize("dim,depth,k,p,n,c,size", [(16, 2, 9, 7, 1000, 3, 56), (32, 3, 8, 4, 10, 1, 28),
                                                    (24, 1, 5, 2, 10, 3, 32), (8, 4, 3, 1, 7, 1, 9)])
def test_flop_counter_matches_closed_form(dim, depth, k, p, n, c, size):
    model = ConvMixer(dim, depth, kernel_size=k, patch_size=p, num_classes=n, in_chans=c)
    prof = profile_model(model, (c, size, size))
    assert prof.macs == convmixer_macs(dim, depth, k, p, n, c, size)
    assert prof.flops == 2 * prof.macs
    assert prof.params == convmixer_params(dim, depth, k, p, n, c) == sum(t.numel() for t in model.parameters())


def test_depthwise_term_is_counted():
    with_dw = profile_model(ConvMixer(16, 2, kernel_size=9, patch_size=2, num_classes=10), (3, 16, 16)).macs
    small_dw = profile_model(ConvMixer(16, 2, kernel_size=1, patch_size=2, num_classes=10), (3, 16, 16)).macs
    assert with_dw - small_dw == 64 * 2 * (81 - 1) * 16


def test_activation_memory_scales_with_resolution_and_leaves_model_untouched():
    model = create_model("convmixer_256_8_ks5_p2", dim=16, depth=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = profile_model(model, (3, 16, 16)).activation_bytes
    large = profile_model(model, (3, 32, 32)).activation_bytes
    assert small > 16 * 8 * 8 * 4 * 2  # at least a couple of feature maps
    assert 3.5 < large / small < 4.5
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
