import pytest
import torch
import torch.nn.functional as F

from convmixer.errors import ConfigError
from convmixer.factory import build_model
from convmixer.training.engine import Trainer
from convmixer.training.init import apply_inits, parse_inits, patch_whitening_filters, zero_init_residual


def test_parse_inits():
    assert parse_inits("") == ()
    assert parse_inits(" whiten , zero_residual") == ("whiten", "zero_residual")
    with pytest.raises(ConfigError, match="unknown model.init 'pca'"):
        parse_inits("whiten,pca")


def test_the_whitening_filters_whiten_the_patches():
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(12, 12, generator=g)
    # correlated 2x2 patches of 3-channel images: (N, C, H, W) with H = W = 8
    patches = torch.randn(4000, 12, generator=g) @ mix
    images = F.fold(patches.view(250, 16, 12).transpose(1, 2), (8, 8), 2, stride=2)
    filters = patch_whitening_filters(images, 2, eps=0.0)
    assert filters.shape == (24, 3, 2, 2)
    assert torch.equal(filters[1::2], -filters[0::2])  # +v then -v
    out = F.conv2d(images.double(), filters[0::2].double(), stride=2)  # (N, 12, 4, 4): the + components
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    cov = flat.T @ flat / len(flat)
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=1e-4)


def test_zero_residual_makes_every_residual_branch_start_at_zero():
    model = build_model("convmixer_fmnist", in_chans=1, num_classes=10, image_size=28)
    assert zero_init_residual(model) == model.depth
    x = torch.randn(2, 128, 14, 14)
    branch = model.blocks[0][0]
    assert torch.equal(branch.eval()(x), x)


def test_whiten_sets_the_stem_and_refuses_other_models():
    model = build_model("convmixer_fmnist", in_chans=1, num_classes=10, image_size=28)
    before = model.stem[0].weight.detach().clone()
    images = torch.randn(64, 1, 28, 28)
    assert apply_inits(model, ["whiten"], images) == {"whiten": 8}  # 2 x (1 x 2 x 2) filters of 128
    assert torch.allclose(model.stem[0].weight[:8], patch_whitening_filters(images, 2))
    assert torch.equal(model.stem[0].weight[8:], before[8:]) and not model.stem[0].bias[:8].any()
    resnet = build_model("resnet20_10_20_40", in_chans=1, num_classes=10, image_size=28)
    with pytest.raises(ConfigError, match="patch convolution"):
        apply_inits(resnet, ["whiten"], images)


def test_the_engine_applies_model_init_to_a_new_run_only(tiny_cfg, monkeypatch):
    import convmixer.training.init as init

    calls = []
    original = init.apply_inits

    def spy(model, names, images):
        calls.append((names, None if images is None else tuple(images.shape)))
        return original(model, names, images)

    monkeypatch.setattr(init, "apply_inits", spy)
    trainer = Trainer(tiny_cfg("model.init=whiten,zero_residual", "run.max_steps=2"))
    trainer.fit()
    assert calls == [(("whiten", "zero_residual"), (256, 1, 16, 16))]  # the whole (synthetic) training set
    Trainer.resume(trainer.run_dir).fit()  # a resumed run keeps its weights
    assert len(calls) == 1
    with pytest.raises(ConfigError, match="unknown model.init"):
        Trainer(tiny_cfg("model.init=magic"))
