"""ConvMixerSegmenter (models/segmentation.py), its registry entries and pretrained backbones (factory.py)."""

import pytest
import torch
from torch import nn

from convmixer import (
    CheckpointError,
    ConfigError,
    InputShapeError,
    build_from_checkpoint,
    create_model,
    get_model_entry,
    list_models,
    save_checkpoint,
)
from convmixer.checkpoint import timm_to_official
from convmixer.cli import main
from convmixer.factory import build_model, load_pretrained_backbone
from convmixer.models import ConvMixer, ConvMixerSegmenter

SEGMENTERS = list_models(family="convmixer", task="segmentation")
# parameter counts of the registered models, full size (hand check of convmixer_seg_fmnist, 1 channel, 11 classes:
# stem 4*128 + 128 + 2*128 = 896; 8 blocks of 25*128 + 128 + 256 + 128*128 + 128 + 256 = 20,352; pixel-shuffle
# head 128*44 + 44 = 5,676 -> 169,388; the linear head instead: BN 256 + 128*11 + 11 = 1,675 -> 165,387)
PARAMS = {"convmixer_seg_fmnist": 169_388, "convmixer_seg_fmnist_linear": 165_387, "convmixer_seg_768_32": 20_458_134}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def small(name, seed=0, **overrides):
    """The registered variant (its kernel, patch, head, activation, channels and classes) at width 16, 2 blocks
    (test_output_is_the_input_size runs every variant at its registered depth)."""
    torch.manual_seed(seed)
    return create_model(name, **{"dim": 16, "depth": 2, **overrides})


def test_registered_segmentation_models():
    assert SEGMENTERS == ["convmixer_seg_768_32", "convmixer_seg_fmnist", "convmixer_seg_fmnist_linear"]
    assert list_models(task="segmentation") == SEGMENTERS + ["unet3_fmnist", "unet_fmnist"]
    assert not set(SEGMENTERS) & set(list_models(task="classification"))
    for name in SEGMENTERS:
        entry = get_model_entry(name)
        assert entry.task == "segmentation" and entry.family == "convmixer" and entry.builder is ConvMixerSegmenter
    assert get_model_entry("convmixer_fmnist").task == "classification"
    e = get_model_entry("convmixer_seg_fmnist").kwargs
    assert (e["dim"], e["depth"], e["kernel_size"], e["patch_size"], e["head"], e["in_chans"], e["num_classes"]) == \
        (128, 8, 5, 2, "pixelshuffle", 1, 11)
    assert get_model_entry("convmixer_seg_fmnist").cfg.input_size == (1, 64, 64)


@pytest.mark.parametrize("name,count", sorted(PARAMS.items()))
def test_parameter_counts(name, count):
    assert n_params(create_model(name)) == count


def test_list_shows_the_task(capsys):
    assert main(["list", "--task", "segmentation"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all(line.endswith("segmentation") for line in lines)
    assert main(["list", "convmixer_fmnist"]) == 0
    assert "segmentation" not in capsys.readouterr().out
    assert main(["list", "--task", "detection"]) == 2


@pytest.mark.parametrize("name", SEGMENTERS)
@pytest.mark.parametrize("size", [(0, 0), (1, 3)])  # 2p x 3p, then sides that are not multiples of p
def test_output_is_the_input_size(name, size):
    model = small(name, depth=get_model_entry(name).kwargs["depth"]).eval()
    p, c, k = model.patch_size, model.in_chans, model.num_classes
    h, w = 2 * p + size[0], 3 * p + size[1]
    with torch.no_grad():
        out = model(torch.randn(2, c, h, w))
    assert out.shape == (2, k, h, w) and torch.isfinite(out).all()


def test_inputs_smaller_than_a_patch_and_odd_sizes():
    model = small("convmixer_seg_fmnist", patch_size=4).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 1, 1)).shape == (1, 11, 1, 1)
        assert model(torch.randn(3, 1, 7, 13)).shape == (3, 11, 7, 13)


def test_padding_repeats_the_edge():
    """A side that is not a multiple of p gives the logits of the input extended by its last row/column, cropped."""
    model = small("convmixer_seg_fmnist", patch_size=4).eval()
    x = torch.randn(2, 1, 9, 10)
    padded = torch.cat([x, x[:, :, -1:].expand(-1, -1, 3, -1)], dim=2)
    padded = torch.cat([padded, padded[..., -1:].expand(-1, -1, -1, 2)], dim=3)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[..., :9, :10])


@pytest.mark.parametrize("name", SEGMENTERS)
def test_aux_tuple_in_training_only_and_every_parameter_gets_a_gradient(name):
    model = small(name, aux_indices=[0, -1])
    p, c, k = model.patch_size, model.in_chans, model.num_classes
    assert model.aux_indices == (0, model.depth - 1) and len(model.aux_heads) == 2
    x = torch.randn(2, c, 2 * p + 1, 3 * p)
    out = model.train()(x)
    assert isinstance(out, tuple) and len(out) == 3 and all(o.shape == (2, k, 2 * p + 1, 3 * p) for o in out)
    sum(o.logsumexp(1).mean() for o in out).backward()
    bad = [n for n, q in model.named_parameters() if q.grad is None or not torch.isfinite(q.grad).all()]
    assert not bad, f"parameters without a finite gradient: {bad[:5]}"
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert isinstance(model.eval()(x), torch.Tensor)


def test_aux_heads_see_their_blocks():
    model = small("convmixer_seg_fmnist", depth=3, aux_indices=[1]).train()
    x = torch.randn(2, 1, 8, 8)
    torch.manual_seed(0)
    _, aux = model(x)
    block_map = model.backbone.forward_intermediates(x, indices=[1], intermediates_only=True)[0]
    torch.testing.assert_close(aux, model.aux_heads[0](block_map))
    assert isinstance(model(x), tuple)
    assert isinstance(small("convmixer_seg_fmnist").train()(x), torch.Tensor)  # no aux heads: a tensor in training too


def test_named_parts_and_state_dict_keys():
    model = small("convmixer_seg_fmnist_linear", depth=8, aux_indices=[2])
    assert isinstance(model.backbone, ConvMixer) and isinstance(model.aux_heads, nn.ModuleList)
    keys = set(model.state_dict())
    assert {"backbone.stem.0.weight", "backbone.blocks.7.3.running_var", "decode_head.norm.weight",
            "decode_head.proj.weight", "aux_heads.0.proj.bias"} <= keys
    assert not any(k.startswith("backbone.head") for k in keys)  # no classifier in the backbone


def test_pixelshuffle_head_starts_as_nearest_neighbour_upsampling():
    model = small("convmixer_seg_fmnist").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 8, 12))
    blocks = out.reshape(2, 11, 4, 2, 6, 2)  # (B, K, grid h, p, grid w, p)
    assert torch.equal(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks))


def test_config_round_trip_and_overrides():
    model = small("convmixer_seg_fmnist", depth=3, kernel_size=3, patch_size=4, act="relu", head="linear",
                  aux_indices=(-1, 0))
    assert model.config() == {"dim": 16, "depth": 3, "kernel_size": 3, "patch_size": 4, "num_classes": 11,
                              "in_chans": 1, "act": "relu", "head": "linear", "aux_indices": [0, 2]}
    again = ConvMixerSegmenter(**model.config())
    assert [(k, v.shape) for k, v in again.state_dict().items()] == \
        [(k, v.shape) for k, v in model.state_dict().items()]
    assert build_model("convmixer_seg_fmnist", in_chans=3, num_classes=5, image_size=96, dim=16).config()["in_chans"] == 3


def test_state_dict_round_trip(tmp_path):
    model = small("convmixer_seg_fmnist", aux_indices=[1])
    model.train()(torch.randn(4, 1, 8, 8))  # running statistics move away from their init
    path = save_checkpoint(model, tmp_path / "seg.safetensors")
    again = build_from_checkpoint(path).eval()
    assert isinstance(again, ConvMixerSegmenter) and again.config() == model.config()
    x = torch.randn(2, 1, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("bad,match", [({"head": "fpn"}, "head must be one of"), ({"aux_indices": [8]}, "block indices"),
                                       ({"aux_indices": 3}, "list of block indices"), ({"num_classes": 0}, "num_classes"),
                                       ({"act": "tanh"}, "unknown activation")])
def test_bad_settings(bad, match):
    with pytest.raises(ConfigError, match=match):
        create_model("convmixer_seg_fmnist", dim=16, **bad)


def test_bad_input():
    model = small("convmixer_seg_fmnist")
    for x in (torch.randn(2, 3, 8, 8), torch.randn(1, 8, 8), torch.randn(2, 1, 0, 8)):
        with pytest.raises(InputShapeError, match="expects a batch"):
            model(x)


# ------------------------------------------------------------------------------------------------------------
# A pretrained backbone
# ------------------------------------------------------------------------------------------------------------
def classifier(seed=1, **kw):
    torch.manual_seed(seed)
    model = ConvMixer(**{"dim": 16, "depth": 2, "kernel_size": 5, "patch_size": 2, "num_classes": 10, "in_chans": 1,
                         **kw})
    model.train()(torch.randn(4, model.in_chans, 8, 8))  # non-trivial BatchNorm statistics
    return model.eval()


def assert_backbone_is(seg, cls):
    own = seg.backbone.state_dict()
    for key, value in cls.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(own[key], value), key


@pytest.mark.parametrize("kind", ["safetensors", "last.pt", "official.pth"])
def test_backbone_from_a_classifier_file(tmp_path, kind):
    cls = classifier()
    if kind == "safetensors":
        path = save_checkpoint(cls, tmp_path / "cls.safetensors")
    elif kind == "last.pt":  # a training run's checkpoint: the state dict under "model", beside other records
        path = tmp_path / "last.pt"
        torch.save({"model": cls.state_dict(), "model_name": "convmixer_fmnist", "model_config": cls.config(),
                    "version": 2}, path)
    else:  # the released weights' official nn.Sequential layout
        path = tmp_path / "official.pth"
        torch.save({"state_dict": timm_to_official(cls.state_dict())}, path)
    seg = create_model("convmixer_seg_fmnist", dim=16, depth=2, aux_indices=[0], pretrained=path)
    assert_backbone_is(seg, cls)
    report = seg.pretrained_report
    assert len(report.loaded) == len(seg.backbone.state_dict()) and all(k.startswith("backbone.") for k in report.loaded)
    assert sorted(report.skipped) == ["head.bias", "head.weight"] and not report.adapted
    assert "heads freshly initialized" in report.describe()


def test_backbone_from_a_segmentation_file_and_heads_reinitialized(tmp_path):
    seg = small("convmixer_seg_fmnist", aux_indices=[0])
    seg.train()(torch.randn(4, 1, 8, 8))
    path = save_checkpoint(seg, tmp_path / "seg.safetensors")
    other = create_model("convmixer_seg_fmnist_linear", dim=16, depth=2, num_classes=4, pretrained=path)
    assert all(torch.equal(a, b) for a, b in zip(other.backbone.state_dict().values(), seg.backbone.state_dict().values()))
    assert set(other.pretrained_report.skipped) == {k for k in seg.state_dict() if not k.startswith("backbone.")}
    assert torch.equal(other.decode_head.norm.running_mean, torch.zeros(16))


def test_in_chans_adaptation(tmp_path):
    rgb = classifier(in_chans=3)
    path = save_checkpoint(rgb, tmp_path / "rgb.safetensors")
    seg = create_model("convmixer_seg_fmnist", dim=16, depth=2, pretrained=path)  # 1 channel
    assert seg.pretrained_report.adapted == [("backbone.stem.0.weight", 3, 1)]
    torch.testing.assert_close(seg.backbone.stem[0].weight, rgb.stem[0].weight.sum(dim=1, keepdim=True))
    gray = torch.rand(2, 1, 8, 8)  # a gray image is an RGB image with R = G = B: the same backbone features
    with torch.no_grad():
        torch.testing.assert_close(seg.eval().backbone.forward_features(gray), rgb.forward_features(gray.expand(-1, 3, -1, -1)))


@pytest.mark.parametrize("override,names", [({"dim": 24}, "backbone.stem.0.weight [16, 1, 2, 2] in file vs [24, 1, 2, 2]"),
                                            ({"kernel_size": 3}, "backbone.blocks.0.0.fn.0.weight"),
                                            ({"depth": 1}, "not in model: backbone.blocks.1."),
                                            ({"depth": 3}, "missing from file: backbone.blocks.2.")])
def test_a_backbone_that_does_not_fit_is_refused(tmp_path, override, names):
    path = save_checkpoint(classifier(), tmp_path / "cls.safetensors")
    with pytest.raises(CheckpointError, match="does not fit the backbone of convmixer_seg_fmnist") as info:
        create_model("convmixer_seg_fmnist", **{"dim": 16, "depth": 2, **override}, pretrained=path)
    assert names in str(info.value) and "\n" not in str(info.value)


def test_load_pretrained_backbone_directly_and_its_refusals(tmp_path):
    cls = classifier()
    path = save_checkpoint(cls, tmp_path / "cls.safetensors")
    seg = ConvMixerSegmenter(16, 2, 5, 2, num_classes=3, in_chans=1, aux_indices=[0])
    with torch.no_grad():  # trained heads, which loading a backbone re-initializes
        for head in (seg.decode_head, seg.aux_heads[0]):
            head.proj.weight.fill_(1.0)
        seg.aux_heads[0].norm.running_mean.fill_(3.0)
    report = load_pretrained_backbone(seg, path)
    assert_backbone_is(seg, cls) and report.source == str(path)
    w = seg.decode_head.proj.weight.reshape(3, 4, 16)  # fresh: random, the 4 sub-pixel filters of a class equal
    assert torch.equal(w, w[:, :1].expand_as(w)) and w.std() > 0
    assert (seg.aux_heads[0].proj.weight != 1).all() and torch.equal(seg.aux_heads[0].norm.running_mean, torch.zeros(16))
    with pytest.raises(ConfigError, match="no ConvMixer backbone"):
        load_pretrained_backbone(cls, path)
    with pytest.raises(CheckpointError, match="has no released weights"):
        create_model("convmixer_seg_fmnist", pretrained=True)
    assert get_model_entry("convmixer_seg_768_32").cfg.url.endswith("convmixer_768_32_ks7_p7_relu.pth.tar")
