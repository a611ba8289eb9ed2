import pytest
import torch
from torch import nn

from convmixer import ConvMixer, InputShapeError, create_model, get_model_entry, list_models
from convmixer.profile import convmixer_params

PAPER_PARAMS = {"convmixer_1536_20": 51_625_960, "convmixer_768_32": 21_110_248, "convmixer_1024_20_ks9_p14": 24_383_464}


def reference_convmixer(dim, depth, k, p, n, c=3, act=nn.GELU):
    """The paper's listing written as a flat nn.Sequential: the thing ConvMixer must equal."""
    class Res(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x) + x

    return nn.Sequential(
        nn.Conv2d(c, dim, p, stride=p), act(), nn.BatchNorm2d(dim),
        *[nn.Sequential(Res(nn.Sequential(nn.Conv2d(dim, dim, k, groups=dim, padding="same"), act(), nn.BatchNorm2d(dim))),
                        nn.Conv2d(dim, dim, 1), act(), nn.BatchNorm2d(dim)) for _ in range(depth)],
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(dim, n))


@pytest.mark.parametrize("name,count", sorted(PAPER_PARAMS.items()))
def test_paper_parameter_counts(name, count):
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == count
    e = get_model_entry(name).kwargs
    assert convmixer_params(e["dim"], e["depth"], e["kernel_size"], e["patch_size"], 1000) == count


# the segmentation ConvMixers (task "segmentation": per-pixel logits) are trained a step in test_segmentation.py
@pytest.mark.parametrize("name", list_models(family="convmixer", task="classification"))
def test_every_registered_convmixer_trains_a_step(name):
    torch.manual_seed(0)
    entry = get_model_entry(name)
    model = create_model(name)
    p = getattr(model, "patch_size", 4)
    x = torch.randn(2, entry.cfg.input_size[0], 2 * p, 2 * p)
    out = model(x)
    assert out.shape == (2, entry.cfg.num_classes)
    out.logsumexp(1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"parameters without a finite gradient: {no_grad[:5]}"
    # a non-trivial gradient reaches the first layer
    assert model.state_dict  # noqa
    first = next(model.parameters())
    assert first.grad.abs().sum() > 0


@pytest.mark.parametrize("dim,depth,k,p,act", [(16, 2, 9, 7, "gelu"), (8, 3, 8, 4, "gelu"), (12, 1, 3, 2, "relu"),
                                               (8, 2, 4, 1, "gelu"), (8, 1, 1, 3, "relu")])
def test_equals_the_papers_sequential_listing(dim, depth, k, p, act):
    """Same weights (official layout) in the paper's nn.Sequential give the same outputs, even k included."""
    from convmixer.checkpoint import timm_to_official

    torch.manual_seed(1)
    model = ConvMixer(dim, depth, kernel_size=k, patch_size=p, num_classes=5, act=act)
    ref = reference_convmixer(dim, depth, k, p, 5, act=nn.GELU if act == "gelu" else nn.ReLU)
    ref.load_state_dict(timm_to_official(model.state_dict()))
    x = torch.randn(3, 3, 29, 31)
    for mode in ("train", "eval"):
        model.train(mode == "train"), ref.train(mode == "train")
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)


def test_state_dict_keys_are_timms():
    keys = set(ConvMixer(8, 2, kernel_size=3, patch_size=2, num_classes=4).state_dict())
    for k in ["stem.0.weight", "stem.0.bias", "stem.2.running_var", "blocks.0.0.fn.0.weight", "blocks.1.0.fn.2.bias",
              "blocks.1.1.weight", "blocks.0.3.num_batches_tracked", "head.weight", "head.bias"]:
        assert k in keys
    assert not any(k.startswith(("pooling", "blocks.2")) for k in keys)


@pytest.mark.parametrize("k", [2, 3, 4, 8, 9])
def test_same_padding_keeps_the_grid(k):
    model = ConvMixer(4, 1, kernel_size=k, patch_size=3, num_classes=2)
    assert model.forward_features(torch.randn(1, 3, 30, 33)).shape == (1, 4, 10, 11)


def test_depthwise_conv_is_depthwise_with_bias():
    dw = ConvMixer(6, 1, kernel_size=5, patch_size=2).blocks[0][0].fn[0]
    assert dw.groups == 6 and dw.weight.shape == (6, 1, 5, 5) and dw.bias is not None


def test_feature_and_head_api():
    torch.manual_seed(0)
    model = ConvMixer(16, 2, kernel_size=3, patch_size=4, num_classes=7, in_chans=1).eval()
    x = torch.randn(2, 1, 28, 28)
    feats = model.forward_features(x)
    assert feats.shape == (2, 16, 7, 7)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 16)
    torch.testing.assert_close(model.forward_head(feats), model(x))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, 16)
    assert ConvMixer(**{**model.config()}).num_classes == 0


def test_input_errors_say_what_is_wrong():
    model = ConvMixer(8, 1, kernel_size=3, patch_size=7, in_chans=3)
    with pytest.raises(ValueError, match="smaller than the patch size 7"):
        model(torch.randn(1, 3, 6, 28))
    with pytest.raises(InputShapeError, match="3 input channel.*got 1"):
        model(torch.randn(1, 1, 28, 28))
    with pytest.raises(ValueError, match="4-D"):
        model(torch.randn(3, 28, 28))


@pytest.mark.parametrize("kwargs,match", [({"dim": 0}, "dim"), ({"depth": -1}, "depth"), ({"act": "tanh"}, "activation"),
                                          ({"patch_size": 2.5}, "patch_size")])
def test_bad_constructor_arguments(kwargs, match):
    args = {"dim": 8, "depth": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        ConvMixer(**args)


@pytest.mark.parametrize("stem_kernel,p", [(4, 2), (3, 2), (5, 2), (3, 1), (9, 7)])
def test_an_overlapping_stem_keeps_the_grid(stem_kernel, p):
    """stem_kernel > p: each patch's embedding sees a wider window, the grid and everything after it are the paper's."""
    model = ConvMixer(8, 1, kernel_size=3, patch_size=p, num_classes=3, in_chans=1, stem_kernel=stem_kernel)
    conv = model.stem[0]
    assert conv.kernel_size == (stem_kernel, stem_kernel) and conv.stride == (p, p)
    assert model.forward_features(torch.randn(2, 1, 28, 28)).shape == (2, 8, 28 // p, 28 // p)
    assert model.config()["stem_kernel"] == stem_kernel and ConvMixer(**model.config()).stem[0].padding == conv.padding
    plain = ConvMixer(8, 1, kernel_size=3, patch_size=p, num_classes=3, in_chans=1)
    assert "stem_kernel" not in plain.config()  # the paper's stem: configs stored before the option are unchanged
    assert ConvMixer(8, 1, patch_size=p, stem_kernel=p).state_dict().keys() == plain.state_dict().keys()


@pytest.mark.parametrize("stem_kernel", [1, 2.0, True])
def test_a_stem_kernel_below_the_patch_size_is_refused(stem_kernel):
    with pytest.raises(ValueError, match="stem_kernel must be an integer >= the patch size 3"):
        ConvMixer(8, 1, patch_size=3, stem_kernel=stem_kernel)


def test_relu_variant_uses_relu():
    model = ConvMixer(4, 1, act="relu")
    assert isinstance(model.stem[1], nn.ReLU) and isinstance(model.blocks[0][0].fn[1], nn.ReLU)
    assert get_model_entry("convmixer_768_32").kwargs["act"] == "relu"


# Golden output of a seeded tiny model. If this fails, the architecture (or its init) changed: that breaks
# every released checkpoint and every recorded result, so change these numbers only on purpose.
GOLDEN = [[0.2375339, 0.0657218, 0.149218], [0.236204, 0.0660311, 0.1533385]]


def test_golden_output_of_seeded_tiny_model():
    torch.manual_seed(1234)
    model = ConvMixer(16, 2, kernel_size=5, patch_size=2, num_classes=3, in_chans=1)
    g = torch.Generator().manual_seed(99)
    x = torch.rand(2, 1, 12, 12, generator=g)
    with torch.no_grad():
        for _ in range(3):  # give BatchNorm non-trivial running statistics
            model(torch.randn(4, 1, 12, 12, generator=g))
        out = model.eval()(x)
    torch.testing.assert_close(out, torch.tensor(GOLDEN), rtol=0, atol=2e-5)
