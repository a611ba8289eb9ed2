import json

import pytest
import torch
from torch import nn

from convmixer import (ConfigError, InputShapeError, build_from_checkpoint, create_model, get_model_entry, list_models,
                       save_checkpoint)
from convmixer.cli import main
from convmixer.models.baselines import MlpMixer, ResMLP, ResNet, VisionTransformer

FAMILIES = {
    "resnet": ["resnet18_cifar", "resnet20", "resnet20_10_20_40", "resnet20_w2", "resnet32", "resnet44", "resnet56"],
    "vit": ["vit_128_6_p4", "vit_48_4_p4", "vit_64_6_p4", "vit_96_6_p2", "vit_96_6_p4", "vit_tiny_p4"],
    "mlp_mixer": ["mixer_128_8_p4", "mixer_48_5_p4", "mixer_64_8_p4", "mixer_80_8_p2", "mixer_96_8_p4"],
    "resmlp": ["resmlp_28_12_p4", "resmlp_48_12_p2", "resmlp_48_12_p4", "resmlp_80_12_p4", "resmlp_96_12_p4"],
}
BASELINES = sorted(n for names in FAMILIES.values() for n in names)
FIXED_SIZE = ("mlp_mixer", "resmlp")  # token mixing is a learned N x N map

# Parameter counts at each variant's registered input and 10 classes. Hand checks (1 x 28 x 28 input):
#   resnet20: stem 9*16 + 2*16 = 176; stage 1: 6 convs 9*16*16 + 6 BN 2*16 = 14,016; stage 2: 9*16*32 + 5*9*32*32
#     + 6*2*32 = 51,072; stage 3: 9*32*64 + 5*9*64*64 + 6*2*64 = 203,520; head 64*10 + 10 = 650 -> 269,434
#     (3 channels: +288 = 269,722, the paper's "0.27M").
#   vit_64_6_p4: patches 16*64 + 64 = 1,088; cls 64; pos 50*64 = 3,200; 6 blocks of 12*64^2 + 13*64 = 49,984;
#     final LN 128; head 650 -> 305,034.
#   mixer_64_8_p4: patches 1,088; 8 blocks of LN 4*64 + token MLP (49*32 + 32 + 32*49 + 49) + channel MLP
#     (2*64*256 + 256 + 64) = 36,561; final LN 128; head 650 -> 294,354.
#   resmlp_48_12_p4: patches 16*48 + 48 = 816; 12 blocks of Aff 4*48 + 49^2 + 49 + LayerScale 2*48 + MLP
#     (2*48*192 + 192 + 48) = 21,410; final Aff 96; head 490 -> 258,322.
#   resnet18_cifar: 11,173,962 at 3 x 32 x 32, the usual CIFAR ResNet-18 figure; vit_tiny_p4 (3 x 32 x 32):
#     the 1 x 28 x 28 formula above with D=192, 12 blocks, 49 patches = 5,353,738, plus 2*16*192 patch weights
#     and 15*192 position embeddings for 64 patches = 5,362,762.
PARAMS = {
    "resnet20": 269_434, "resnet32": 463_866, "resnet44": 658_298, "resnet56": 852_730, "resnet20_w2": 1_073_386,
    "resnet18_cifar": 11_173_962, "resnet20_10_20_40": 105_760,
    "vit_64_6_p4": 305_034, "vit_96_6_p4": 678_730, "vit_128_6_p4": 1_199_882, "vit_96_6_p2": 691_690,
    "vit_tiny_p4": 5_362_762, "vit_48_4_p4": 116_938,
    "mixer_64_8_p4": 294_354, "mixer_96_8_p4": 637_938, "mixer_128_8_p4": 1_112_594, "mixer_80_8_p2": 544_058,
    "mixer_48_5_p4": 107_847,
    "resmlp_48_12_p4": 258_322, "resmlp_80_12_p4": 656_690, "resmlp_96_12_p4": 929_602, "resmlp_48_12_p2": 691_690,
    "resmlp_28_12_p4": 109_182,
}


# ------------------------------------------------------------------------------------------------------------
# Closed-form parameter counts, written from the papers' descriptions (not from the model code).
# ------------------------------------------------------------------------------------------------------------
def resnet_params(depths, widths, in_chans, num_classes, shortcut="A", stem="small", stem_width=None):
    c = stem_width or widths[0]
    total = (9 if stem == "small" else 49) * in_chans * c + 2 * c
    for i, (n, w) in enumerate(zip(depths, widths)):
        for j in range(n):
            c_in = c if j == 0 else w
            total += 9 * c_in * w + 9 * w * w + 4 * w  # two 3x3 convs without bias, two BNs
            if (c_in != w or (i > 0 and j == 0)) and shortcut == "B":
                total += c_in * w + 2 * w  # 1x1 projection + BN
        c = w
    return total + widths[-1] * num_classes + num_classes


def vit_params(img_size, patch_size, in_chans, num_classes, dim, depth, mlp_ratio=4.0, global_pool="token", **_):
    n = (img_size // patch_size) ** 2 + (global_pool == "token")
    hidden = int(dim * mlp_ratio)
    block = 4 * dim * dim + 4 * dim + 2 * dim * hidden + hidden + dim + 4 * dim  # qkv+proj, MLP, two LNs
    return (in_chans * patch_size**2 * dim + dim + (dim if global_pool == "token" else 0) + n * dim
            + depth * block + 2 * dim + dim * num_classes + num_classes)


def mixer_params(img_size, patch_size, in_chans, num_classes, dim, depth, token_mlp_dim, channel_mlp_dim):
    s = (img_size // patch_size) ** 2
    block = 4 * dim + 2 * s * token_mlp_dim + token_mlp_dim + s + 2 * dim * channel_mlp_dim + channel_mlp_dim + dim
    return in_chans * patch_size**2 * dim + dim + depth * block + 2 * dim + dim * num_classes + num_classes


def resmlp_params(img_size, patch_size, in_chans, num_classes, dim, depth, mlp_ratio, layerscale_init):
    n = (img_size // patch_size) ** 2
    hidden = int(dim * mlp_ratio)
    block = 4 * dim + n * n + n + 2 * dim + 2 * dim * hidden + hidden + dim  # Aff x2, cross-patch, LS x2, MLP
    return in_chans * patch_size**2 * dim + dim + depth * block + 2 * dim + dim * num_classes + num_classes


CLOSED_FORM = {ResNet: lambda c: resnet_params(c["depths"], c["widths"], c["in_chans"], c["num_classes"], c["shortcut"],
                                               c["stem"], c["stem_width"]),
               VisionTransformer: lambda c: vit_params(**c), MlpMixer: lambda c: mixer_params(**c),
               ResMLP: lambda c: resmlp_params(**c)}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def native_batch(name, batch=2, seed=0):
    return torch.randn(batch, *get_model_entry(name).cfg.input_size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------------------
def test_registered_families_and_names():
    for family, names in FAMILIES.items():
        assert list_models(family=family) == sorted(names)
        for name in names:
            entry = get_model_entry(name)
            assert entry.description and entry.cfg.num_classes == 10 and entry.cfg.crop_pct == 1.0
            assert entry.cfg.input_size in ((1, 28, 28), (3, 32, 32))
    assert sorted(PARAMS) == BASELINES
    assert not set(BASELINES) & set(list_models(family="convmixer"))


@pytest.mark.parametrize("name", BASELINES)
def test_shapes_and_every_parameter_gets_a_finite_gradient(name):
    torch.manual_seed(0)
    model = create_model(name)
    assert model.registry_name == name
    x = native_batch(name)
    feats = model.forward_features(x)
    pooled = model.forward_head(feats, pre_logits=True)
    logits = model.forward_head(feats)
    assert pooled.shape == (2, model.num_features) and logits.shape == (2, 10)
    logits.logsumexp(1).sum().backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad, f"parameters without a finite gradient: {bad[:5]}"
    first = next(model.parameters())
    assert first.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x)))


@pytest.mark.parametrize("name", BASELINES)
def test_parameter_count(name):
    model = create_model(name)
    assert n_params(model) == PARAMS[name]
    assert CLOSED_FORM[type(model)](model.config()) == PARAMS[name]


@pytest.mark.parametrize("name", BASELINES)
def test_config_rebuilds_the_same_architecture(name):
    model = create_model(name)
    config = json.loads(json.dumps(model.config()))  # checkpoints store it as JSON
    again = type(model)(**config)
    assert again.config() == model.config()
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert str(again) == str(model)
    assert create_model(name, **config).config() == model.config()


@pytest.mark.parametrize("name", BASELINES)
def test_reset_classifier(name):
    model = create_model(name).eval()
    x = native_batch(name)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3 and model.get_classifier().out_features == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    assert type(model)(**model.config()).num_classes == 0
    with pytest.raises(ConfigError, match="num_classes"):
        model.reset_classifier(-1)


@pytest.mark.parametrize("name", BASELINES)
def test_bad_input_says_what_is_wrong(name):
    model = create_model(name)
    family = get_model_entry(name).family
    c, h, w = get_model_entry(name).cfg.input_size
    with pytest.raises(InputShapeError, match=f"{c} input channel.*got {c + 1}"):
        model(torch.randn(1, c + 1, h, w))
    with pytest.raises(InputShapeError, match="4-D"):
        model(torch.randn(c, h, w))
    if family in FIXED_SIZE:
        with pytest.raises(InputShapeError, match=f"built for {h}x{w} input .*got 32x32.*img_size=32"):
            model(torch.randn(1, c, 32, 32))
    if family != "resnet":
        p = model.patch_size
        with pytest.raises(InputShapeError, match=f"input {p - 1}x8 is smaller than .*patch size {p}"):
            model(torch.randn(1, c, p - 1, 8))


def test_resnet_and_vit_take_other_input_sizes():
    torch.manual_seed(0)
    vit = create_model("vit_64_6_p4").eval()
    assert vit(torch.randn(2, 1, 20, 36)).shape == (2, 10)  # 5 x 9 grid: interpolated position embeddings
    torch.testing.assert_close(vit.position_embedding(7, 7), vit.pos_embed)
    pos = vit.position_embedding(14, 14)
    assert pos.shape == (1, 1 + 196, 64)
    torch.testing.assert_close(pos[:, 0], vit.pos_embed[:, 0])  # the class token's embedding is kept
    assert create_model("resnet20")(torch.randn(2, 1, 9, 13)).shape == (2, 10)


def test_cifar_and_imagenet_scale():
    """Every family builds and runs at 3 x 32 x 32 and 3 x 224 x 224 (ImageNet geometry, kept tiny)."""
    torch.manual_seed(0)
    cifar = torch.randn(2, 3, 32, 32)
    assert create_model("resnet20", in_chans=3)(cifar).shape == (2, 10)
    for name in ("vit_64_6_p4", "mixer_64_8_p4", "resmlp_48_12_p4"):
        assert create_model(name, in_chans=3, img_size=32, depth=1)(cifar).shape == (2, 10)
    imagenet = torch.randn(1, 3, 224, 224)
    models = [ResNet((1, 1, 1, 1), (8, 8, 16, 16), stem="imagenet", shortcut="B", num_classes=1000),
              VisionTransformer(224, 16, dim=16, depth=1, num_heads=2), MlpMixer(224, 16, dim=16, depth=1),
              ResMLP(224, 16, dim=16, depth=1, layerscale_init=1e-5)]
    for model in models:
        assert model.eval()(imagenet).shape == (1, 1000)
    assert models[0].forward_features(imagenet).shape == (1, 16, 7, 7)  # /4 stem, then /2 per later stage


def test_architecture_details_follow_the_papers():
    r20 = create_model("resnet20")
    assert sum(1 for m in r20.modules() if isinstance(m, nn.Conv2d)) == 19  # + the head = 20 layers
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in r20.modules())  # option A
    r18 = create_model("resnet18_cifar")
    assert r18.stem[0].kernel_size == (3, 3) and r18.stem[0].stride == (1, 1) and len(r18.stem) == 3  # no max-pool
    assert sum(1 for m in r18.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)) == 3  # option B
    assert r18.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 512, 4, 4)

    vit = create_model("vit_tiny_p4")  # ViT-Ti: D=192, 12 blocks, 3 heads, MLP 768
    assert (vit.dim, vit.depth, vit.num_heads) == (192, 12, 3) and vit.blocks[0].mlp.fc1.out_features == 768
    assert vit.pos_embed.shape == (1, 1 + 64, 192) and vit.cls_token.shape == (1, 1, 192)
    gap = VisionTransformer(28, 4, 1, 10, dim=32, depth=1, num_heads=2, global_pool="avg")
    assert gap.cls_token is None and gap.pos_embed.shape == (1, 49, 32)

    mixer = create_model("mixer_96_8_p4")  # D_S = C/2 over the 49 patches, D_C = 4C
    assert mixer.blocks[0].token_mlp.fc1.weight.shape == (48, 49)
    assert mixer.blocks[0].channel_mlp.fc1.weight.shape == (384, 96)

    resmlp = create_model("resmlp_48_12_p4")
    block = resmlp.blocks[0]
    assert block.token_mix.weight.shape == (49, 49)
    assert torch.equal(block.ls1.gamma, torch.full((48,), 0.1)) and torch.equal(block.norm1.alpha, torch.ones(48))
    assert not any(isinstance(m, nn.LayerNorm) for m in resmlp.modules())  # Affine, no statistics


def test_token_mixing_mixes_tokens_and_channel_mixing_does_not():
    """Changing one patch moves every output token in Mixer/ResMLP/ViT, through their token-mixing sublayer."""
    torch.manual_seed(0)
    for model in (MlpMixer(8, 4, 1, 0, dim=8, depth=1), ResMLP(8, 4, 1, 0, dim=8, depth=1, layerscale_init=1.0),
                  VisionTransformer(8, 4, 1, 0, dim=8, depth=1, num_heads=2, global_pool="avg")):
        x = torch.randn(1, 1, 8, 8)
        y = x.clone()
        y[..., :4, :4] += 1  # the first of four patches
        delta = (model.forward_features(x) - model.forward_features(y)).abs().sum(-1)
        assert (delta > 0).all(), type(model).__name__


@pytest.mark.parametrize("cls,kwargs,match", [
    (ResNet, {"depths": (1, 1), "widths": (8,)}, "equal length"),
    (ResNet, {"shortcut": "C"}, "shortcut"),
    (ResNet, {"depths": (1, 1), "widths": (16, 8)}, "option A shortcuts can only widen"),
    (VisionTransformer, {"dim": 10, "num_heads": 3}, "divisible"),
    (VisionTransformer, {"global_pool": "max"}, "global_pool"),
    (VisionTransformer, {"img_size": 8, "patch_size": 16}, "smaller than patch_size"),
    (MlpMixer, {"depth": 0}, "depth"),
    (MlpMixer, {"token_mlp_dim": 2.5}, "token_mlp_dim"),
    (ResMLP, {"layerscale_init": 0}, "layerscale_init"),
    (ResMLP, {"patch_size": True}, "patch_size"),
])
def test_bad_constructor_arguments(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)


@pytest.mark.parametrize("name,overrides", [("resnet20", {"widths": [8, 16, 16]}), ("vit_64_6_p4", {"depth": 1}),
                                            ("mixer_64_8_p4", {"img_size": 32, "in_chans": 3, "depth": 2}),
                                            ("resmlp_48_12_p4", {"depth": 2, "num_classes": 4})])
def test_checkpoint_round_trip(tmp_path, name, overrides):
    torch.manual_seed(0)
    model = create_model(name, **overrides)
    if isinstance(model, ResNet):
        model.train()(torch.randn(4, *get_model_entry(name).cfg.input_size))  # non-trivial BN statistics
    path = save_checkpoint(model, tmp_path / f"{name}.safetensors")
    again = build_from_checkpoint(path)
    assert type(again) is type(model) and again.config() == model.config() and again.registry_name == name
    x = torch.randn(2, model.in_chans, *(2 * [getattr(model, "img_size", 28)]))
    torch.testing.assert_close(again.eval()(x), model.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["resnet20", "vit_64_6_p4", "mixer_64_8_p4", "resmlp_48_12_p4"])
def test_cli_info(name, capsys):
    assert main(["info", name, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == PARAMS[name] and info["input_size"] == [1, 28, 28] and info["macs"] > 0


def test_cli_info_refuses_a_size_a_mixer_cannot_take(capsys):
    assert main(["info", "mixer_64_8_p4", "--image-size", "32"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "img_size=32" in err
