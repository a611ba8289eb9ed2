"""The reference network is the paper's ConvMixer: same function, official key layout."""

import torch
from torch import nn

from convmixer.bench import build_reference, reference_from
from convmixer.checkpoint import detect_layout, official_to_timm
from convmixer.models import ConvMixer
from convmixer.profile import convmixer_params


def test_reference_computes_what_convmixer_computes():
    torch.manual_seed(0)
    model = ConvMixer(24, 3, 8, 3, num_classes=7, in_chans=2, act="relu")
    ref = reference_from(model)
    assert isinstance(ref, nn.Sequential) and detect_layout(ref.state_dict()) == "official"
    assert list(official_to_timm(ref.state_dict())) == list(model.state_dict())
    x = torch.randn(3, 2, 17, 17)
    assert torch.equal(ref.eval()(x), model.eval()(x))
    model.train()
    ref.train()
    assert torch.allclose(ref(x), model(x), atol=1e-6)
    for a, b in zip(ref.buffers(), model.buffers()):
        assert torch.allclose(a.float(), b.float())


def test_build_reference_size_and_layers():
    ref = build_reference(32, 4, kernel_size=9, patch_size=7, num_classes=10, in_chans=3)
    assert sum(p.numel() for p in ref.parameters()) == convmixer_params(32, 4, 9, 7, 10, 3)
    assert len(ref) == 4 + 6 and isinstance(ref[-1], nn.Linear)
    assert ref[3][0].fn[0].groups == 32 and ref[3][0].fn[0].padding == "same"
