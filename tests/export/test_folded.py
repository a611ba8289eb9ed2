import copy

import pytest
import torch
from torch import nn

from convmixer import create_model
from convmixer.errors import ConfigError, InputShapeError
from convmixer.export import FoldedConvMixer, fold_for_inference, optimize_for_inference

from .helpers import FMNIST_MEAN, FMNIST_STD, fmnist_model, random_uint8, reference, tiny_convmixer

TOL = 1e-5  # fp32; the folds are exact in real arithmetic, only rounding differs


def test_fold_is_exact_on_uint8_and_unit_float_input(fmnist_batch):
    model = tiny_convmixer()
    folded = fold_for_inference(model, FMNIST_MEAN, FMNIST_STD)
    for images in (random_uint8(16), fmnist_batch):
        want = reference(model, images)
        assert want.abs().max() > 1  # the logits are not trivially small
        with torch.no_grad():
            got_u8 = folded(images)
            got_f = folded(images.float() / 255)
            got_f64 = folded(images.double() / 255)  # any float dtype is scaled once and cast
        assert (got_u8 - want).abs().max() <= TOL
        assert (got_f - want).abs().max() <= TOL
        assert (got_f64 - want).abs().max() <= TOL
        assert torch.equal(got_u8.argmax(1), want.argmax(1))


def test_fold_of_the_registered_fmnist_model_rgb_and_even_sizes():
    model = fmnist_model(seed=3)
    folded = fold_for_inference(model, FMNIST_MEAN, FMNIST_STD)
    images = random_uint8(8, size=30)  # 30 is not a multiple of p=4: the stem conv drops the last 2 px either way
    assert (folded(images) - reference(model, images)).abs().max() <= TOL

    rgb = tiny_convmixer(seed=1, in_chans=3, kernel_size=4, patch_size=3)  # even kernel: "same" padding
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    images = random_uint8(4, chans=3, size=21)
    assert (fold_for_inference(rgb, mean, std)(images) - reference(rgb, images, mean, std)).abs().max() <= TOL


def test_folded_structure_and_the_callers_model_is_untouched():
    model = tiny_convmixer().train()
    before = copy.deepcopy(model.state_dict())
    folded = fold_for_inference(model, FMNIST_MEAN, FMNIST_STD)
    assert isinstance(folded, FoldedConvMixer) and not folded.training
    assert all(not p.requires_grad for p in folded.parameters())
    assert isinstance(folded.model.blocks[-1][3], nn.Identity)  # the last BN went into the head
    assert isinstance(folded.model.blocks[0][3], nn.BatchNorm2d)  # the others stay (they follow a GELU)
    assert model.training and isinstance(model.blocks[-1][3], nn.BatchNorm2d)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert folded.mean == FMNIST_MEAN and folded.std == FMNIST_STD and folded.config() == model.config()


def test_fold_of_a_model_on_the_fast_path_gives_plain_layers(require_kernels):
    from convmixer.fast import swap_convmixer

    model = tiny_convmixer(kernel_size=3)
    images = random_uint8(4)
    want = reference(model, images)
    swap_convmixer(model, "fused").to(memory_format=torch.channels_last)
    folded = fold_for_inference(model, FMNIST_MEAN, FMNIST_STD)
    assert type(folded.model.stem) is nn.Sequential and type(folded.model.blocks[0]) is nn.Sequential
    assert (folded(images) - want).abs().max() <= TOL


def test_feature_extractor_keeps_its_last_batchnorm():
    model = tiny_convmixer(num_classes=0)
    folded = fold_for_inference(model, 0.5, 0.25)
    images = random_uint8(4)
    assert isinstance(folded.model.blocks[-1][3], nn.BatchNorm2d)
    assert (folded(images) - reference(model, images, (0.5,), (0.25,))).abs().max() <= TOL


@pytest.mark.parametrize("mean,std,match", [
    ((0.1, 0.2), (0.3,), "mean has 2 values"),
    ((0.1,), (0.0,), "std must be positive"),
])
def test_bad_statistics_are_config_errors(mean, std, match):
    with pytest.raises(ConfigError, match=match):
        fold_for_inference(tiny_convmixer(), mean, std)


def test_only_convmixers_fold():
    with pytest.raises(ConfigError, match="need a ConvMixer; got resnet20"):
        fold_for_inference(create_model("resnet20"), 0.5, 0.25)
    folded = fold_for_inference(tiny_convmixer(), 0.5, 0.25)
    with pytest.raises(ConfigError, match="already folded"):
        fold_for_inference(folded, 0.5, 0.25)


def test_integer_input_other_than_uint8_is_refused():
    folded = fold_for_inference(tiny_convmixer(), 0.5, 0.25)
    with pytest.raises(InputShapeError, match="uint8 images"):
        folded(random_uint8(2).long())
    with pytest.raises(InputShapeError, match="smaller than the patch size"):
        folded(random_uint8(2, size=3))


def test_optimize_for_inference_matches_the_original_in_fp32(require_kernels, fmnist_batch):
    model = fmnist_model(seed=2)
    fast = optimize_for_inference(model, FMNIST_MEAN, FMNIST_STD, batch_size=64, image_size=28, kernel="fused")
    assert fast.plan.kernel == "fused" and fast.plan.channels_last and fast.plan.autocast_dtype is None
    assert type(fast.folded.model.blocks[0]).__name__ == "FastMixerLayer"
    with torch.inference_mode():
        for images in (random_uint8(16), fmnist_batch):
            want = reference(model, images)
            got = fast(images)
            assert got.dtype == torch.float32
            assert (got - want).abs().max() <= 1e-4
            assert torch.equal(got.argmax(1), want.argmax(1))
            assert (fast(images.float() / 255) - want).abs().max() <= 1e-4


def test_optimize_for_inference_uses_bf16_only_when_asked(require_kernels):
    model = tiny_convmixer(kernel_size=3)
    default = optimize_for_inference(model, 0.5, 0.25, batch_size=4, image_size=28, kernel="fused")
    assert default.plan.autocast_dtype is None
    asked = optimize_for_inference(model, 0.5, 0.25, batch_size=4, image_size=28, kernel="fused", dtype="bfloat16")
    assert asked.plan.autocast_dtype == torch.bfloat16
    with torch.inference_mode():
        out = asked(random_uint8(4))
    assert out.dtype == torch.float32 and out.shape == (4, 10)
    with pytest.raises(ConfigError, match="smaller than the patch size"):
        optimize_for_inference(model, 0.5, 0.25, image_size=2)
