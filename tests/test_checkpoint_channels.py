"""Weights for another input-channel count: the stem's filters adapted (convmixer.checkpoint.adapt_input_channels),
through load_checkpoint, create_model(pretrained=...) and build_from_checkpoint."""

import pytest
import torch

from convmixer import (
    CheckpointError,
    ConvMixer,
    build_from_checkpoint,
    create_model,
    load_checkpoint,
    save_checkpoint,
)
from convmixer.checkpoint import adapt_input_channels, timm_to_official


def rgb_model(seed=0, **kw):
    torch.manual_seed(seed)
    model = ConvMixer(8, 2, kernel_size=3, patch_size=2, num_classes=5, **kw)
    with torch.no_grad():  # non-trivial BN statistics
        model(torch.randn(4, 3, 8, 8))
    return model.eval()


def test_adapt_input_channels_sums_for_one_and_repeats_and_rescales_for_more():
    w = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(adapt_input_channels(w, 1), w.sum(dim=1, keepdim=True))
    four = adapt_input_channels(w, 4)
    torch.testing.assert_close(four, torch.cat([w, w[:, :1]], dim=1) * 3 / 4)
    torch.testing.assert_close(adapt_input_channels(w, 6), torch.cat([w, w], dim=1) / 2)
    torch.testing.assert_close(adapt_input_channels(w, 2), w[:, :2] * 3 / 2)
    assert torch.equal(adapt_input_channels(w, 3), w)
    assert four.dtype == torch.float64
    # a 1-channel file into a 3-channel model: the filter spread over the three
    torch.testing.assert_close(adapt_input_channels(w[:, :1], 3), w[:, :1].repeat(1, 3, 1, 1) / 3)
    with pytest.raises(CheckpointError, match="conv weight"):
        adapt_input_channels(torch.zeros(4, 3), 1)
    with pytest.raises(CheckpointError, match="in_chans"):
        adapt_input_channels(w, 0)


def test_the_adapted_stem_keeps_the_output_on_inputs_whose_channels_are_alike():
    """Why the convention: a gray image through the 1-channel model gives what the RGB model gives on R = G = B,
    and channels repeated k times give what the RGB model gives on one copy."""
    src = rgb_model()
    gray = torch.randn(2, 1, 8, 8)
    rgb = torch.randn(2, 3, 8, 8)
    for in_chans, x, same_as in ((1, gray, gray.expand(-1, 3, -1, -1)), (6, torch.cat([rgb, rgb], 1), rgb)):
        model = ConvMixer(8, 2, kernel_size=3, patch_size=2, num_classes=5, in_chans=in_chans).eval()
        sd = src.state_dict()
        model.load_state_dict({**sd, "stem.0.weight": adapt_input_channels(sd["stem.0.weight"], in_chans)})
        with torch.no_grad():
            torch.testing.assert_close(model(x), src(same_as), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("in_chans", [1, 4])
@pytest.mark.parametrize("layout", ["own.safetensors", "official.pth.tar"])
def test_load_checkpoint_into_another_channel_count(tmp_path, in_chans, layout):
    src = rgb_model()
    path = tmp_path / f"w.{layout}"
    if layout == "own.safetensors":
        save_checkpoint(src, path)
    else:
        torch.save({"state_dict": timm_to_official(src.state_dict())}, path)
    model = rgb_model(seed=1, in_chans=in_chans) if in_chans == 3 else ConvMixer(
        8, 2, kernel_size=3, patch_size=2, num_classes=5, in_chans=in_chans)
    report = load_checkpoint(model, path)  # strict: everything fits once the stem is adapted
    assert report.ok and report.adapted == [("stem.0.weight", 3, in_chans)]
    assert "adapted from 3 to" in report.describe()
    torch.testing.assert_close(model.stem[0].weight, adapt_input_channels(src.stem[0].weight.detach(), in_chans))
    for key, value in src.state_dict().items():
        if key != "stem.0.weight":
            assert torch.equal(model.state_dict()[key], value), key
    fresh = ConvMixer(8, 2, kernel_size=3, patch_size=2, num_classes=5, in_chans=in_chans)
    with pytest.raises(CheckpointError, match=r"shape mismatch: stem.0.weight \[8, 3, 2, 2\] in file"):
        load_checkpoint(fresh, path, adapt_in_chans=False)


def test_only_the_stem_is_adapted(tmp_path):
    path = save_checkpoint(rgb_model(), tmp_path / "w.safetensors")
    wider = ConvMixer(12, 2, kernel_size=3, patch_size=2, num_classes=5, in_chans=1)  # another width: not adaptable
    with pytest.raises(CheckpointError, match=r"stem.0.weight \[8, 3, 2, 2\] in file vs \[12, 1, 2, 2\] in model"):
        load_checkpoint(wider, path)
    other_patch = ConvMixer(8, 2, kernel_size=3, patch_size=4, num_classes=5, in_chans=1)
    with pytest.raises(CheckpointError, match=r"stem.0.weight"):
        load_checkpoint(other_patch, path)


def test_create_model_pretrained_into_one_and_four_channels(tmp_path):
    torch.manual_seed(0)
    src = create_model("convmixer_256_8_ks5_p2", dim=8, depth=2)
    path = save_checkpoint(src, tmp_path / "w.safetensors")
    for in_chans in (1, 4):
        model = create_model("convmixer_256_8_ks5_p2", dim=8, depth=2, in_chans=in_chans, pretrained=path)
        torch.testing.assert_close(model.stem[0].weight, adapt_input_channels(src.stem[0].weight.detach(), in_chans))
        torch.testing.assert_close(model.head.weight, src.head.weight)
        assert model(torch.randn(2, in_chans, 8, 8)).shape == (2, 10)
    # fine-tuning head and another channel count together
    tuned = create_model("convmixer_256_8_ks5_p2", dim=8, depth=2, in_chans=1, num_classes=3, pretrained=path)
    assert tuned.head.weight.shape == (3, 8)
    # anything else that does not fit is still refused, naming the keys
    with pytest.raises(CheckpointError, match="blocks.2"):
        create_model("convmixer_256_8_ks5_p2", dim=8, depth=3, in_chans=1, pretrained=path)


def test_build_from_checkpoint_adapts_only_when_asked(tmp_path):
    arch = {"dim": 8, "depth": 2, "kernel_size": 3, "num_classes": 5}
    path = tmp_path / "official.pth.tar"
    torch.save({"state_dict": timm_to_official(rgb_model().state_dict())}, path)
    model = build_from_checkpoint(path, "convmixer_256_8_ks5_p2", in_chans=1, **arch)  # asked for: adapted
    assert model.in_chans == 1 and model.stem[0].weight.shape == (8, 1, 2, 2)
    gray = tmp_path / "gray.pth"
    torch.save(model.state_dict(), gray)
    with pytest.raises(CheckpointError, match=r"stem.0.weight \[8, 1, 2, 2\] in file vs \[8, 3, 2, 2\]"):
        build_from_checkpoint(gray, "convmixer_256_8_ks5_p2", **arch)  # the registry's 3 channels: refused
