"""The backbone API (convmixer.models.backbone and ConvMixer's side of it): forward_intermediates, features_only,
feature_info, prune_intermediate_layers, gradient checkpointing, global_pool, drop_rate, head_hidden_size."""

import copy

import pytest
import torch
from torch import nn

from convmixer import ConfigError, ConvMixer, create_model, get_model_entry, list_models
from convmixer.models.backbone import FeatureExtractor, FeatureInfo, take_indices
from convmixer.profile import peak_cpu_memory

# the classifiers; a segmentation ConvMixer holds one of these as its ``backbone`` (test_segmentation.py)
CONVMIXERS = list_models(family="convmixer", task="classification")


def registered(name, seed=0, **overrides):
    """The registered variant (its depth, kernel, patch, activation, channels and classes) at width 24.

    Nothing here depends on the width, and the paper's widths cost tens of seconds per model on two cores
    (test_convmixer.py builds and trains each at full width; convmixer_fmnist runs full width below).
    """
    torch.manual_seed(seed)
    return create_model(name, **{"dim": 24, **overrides})


def small_input(model, batch=2, seed=1):
    """A (B, C, 2p, 3p) batch: 2 x 3 maps (not square, so a swapped H and W would show)."""
    p = model.patch_size
    return torch.randn(batch, model.in_chans, 2 * p, 3 * p, generator=torch.Generator().manual_seed(seed))


def block_by_block(model, x):
    """Each block's output, computed without the API under test."""
    out, h = [], model.stem(x)
    for block in model.blocks:
        h = block(h)
        out.append(h)
    return out


@pytest.mark.parametrize("name", CONVMIXERS)
def test_forward_intermediates_on_every_registered_convmixer(name):
    model = registered(name).eval()
    x = small_input(model)
    d, h, p = model.depth, model.dim, model.patch_size
    assert model.head_hidden_size == model.num_features == h
    assert model.feature_info == [{"num_chs": h, "reduction": p, "module": f"blocks.{i}"} for i in range(d)]
    with torch.no_grad():
        want = block_by_block(model, x)
        final, maps = model.forward_intermediates(x)
        assert len(maps) == d and all(m.shape == (2, h, 2, 3) for m in maps)
        assert all(torch.equal(a, b) for a, b in zip(maps, want))
        assert torch.equal(final, model.forward_features(x)) and torch.equal(final, want[-1])

        _, last_two = model.forward_intermediates(x, indices=2)
        assert [torch.equal(a, b) for a, b in zip(last_two, want[-2:])] == [True, True]
        ends = model.forward_intermediates(x, indices=[-1, 0, d - 1], intermediates_only=True)  # once each, in order
        assert len(ends) == 2 and torch.equal(ends[0], want[0]) and torch.equal(ends[1], want[-1])
        early, first = model.forward_intermediates(x, indices=[0], stop_early=True)
        assert torch.equal(early, want[0]) and torch.equal(first[0], want[0])
        nhwc = model.forward_intermediates(x, indices=1, output_fmt="NHWC", intermediates_only=True)
        assert torch.equal(nhwc[0], want[-1].permute(0, 2, 3, 1))
        normed = model.forward_intermediates(x, indices=[0], norm=True, stop_early=True)[0]
        assert torch.equal(normed, want[0])  # no final norm: norm changes nothing


@pytest.mark.parametrize("name", CONVMIXERS)
def test_features_only_on_every_registered_convmixer(name):
    full = registered(name).eval()
    features = registered(name, features_only=True, out_indices=(0, -1)).eval()
    x = small_input(full)
    d, h, p = full.depth, full.dim, full.patch_size
    assert isinstance(features, FeatureExtractor) and features.out_indices == (0, d - 1)
    info = features.feature_info
    assert isinstance(info, FeatureInfo)
    assert info.channels() == [h, h] and info.reduction() == [p, p] and info.module_name() == ["blocks.0", f"blocks.{d - 1}"]
    assert info.channels(1) == h and info == [{"num_chs": h, "reduction": p, "module": f"blocks.{i}"} for i in (0, d - 1)]
    assert not any(k.startswith("model.head") for k in features.state_dict())  # the classifier is pruned
    with torch.no_grad():
        maps = features(x)
        want = block_by_block(full, x)
    assert isinstance(maps, list) and len(maps) == 2
    assert torch.equal(maps[0], want[0]) and torch.equal(maps[1], want[-1])


def test_features_only_prunes_the_blocks_after_the_last_chosen_one():
    features = create_model("convmixer_fmnist", features_only=True, out_indices=[1, 2])  # full width
    assert len(features.model.blocks) == 3 and features.model.depth == 3
    assert features.feature_info.module_name() == ["blocks.1", "blocks.2"]
    assert features.feature_info.channels() == [128, 128] and features.feature_info.reduction() == [2, 2]
    assert [m.shape for m in features(torch.randn(2, 1, 8, 8))] == [(2, 128, 4, 4)] * 2
    every = create_model("convmixer_fmnist", features_only=True)  # default: every block
    assert every.out_indices == tuple(range(8)) and len(every(torch.randn(2, 1, 4, 4))) == 8


def test_features_only_and_out_indices_errors():
    with pytest.raises(ConfigError, match="offers no feature maps"):
        create_model("resnet20", features_only=True)
    with pytest.raises(ConfigError, match="features_only=True"):
        create_model("convmixer_fmnist", out_indices=(1,))
    with pytest.raises(ConfigError, match="block indices"):
        create_model("convmixer_fmnist", features_only=True, out_indices=(8,))


@pytest.mark.parametrize("indices,want", [(None, [0, 1, 2, 3]), (1, [3]), (4, [0, 1, 2, 3]), ([2, 0], [0, 2]),
                                          ((-1, -4), [0, 3]), ([1, 1, -3], [1])])
def test_take_indices(indices, want):
    assert take_indices(4, indices) == (want, want[-1])


@pytest.mark.parametrize("bad", [0, 5, -1, True, [4], [-5], [], [1.0], "1", 2.0])
def test_take_indices_refuses(bad):
    with pytest.raises(ConfigError):
        take_indices(4, bad)


def test_forward_intermediates_refuses_an_unknown_output_format():
    with pytest.raises(ConfigError, match="output_fmt"):
        ConvMixer(8, 2, kernel_size=3, patch_size=2).forward_intermediates(torch.randn(1, 3, 4, 4), output_fmt="NLC")


def test_prune_intermediate_layers():
    torch.manual_seed(0)
    model = ConvMixer(8, 5, kernel_size=3, patch_size=2, num_classes=4).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = block_by_block(model, x)
        assert model.prune_intermediate_layers([1, -3]) == [1, 2]
        assert model.depth == 3 and len(model.blocks) == 3 and len(model.feature_info) == 3
        assert model.num_classes == 0 and model.global_pool == ""
        assert torch.equal(model(x), want[2])  # no head: forward gives the last kept block's map
        rebuilt = ConvMixer(**model.config())
        assert set(rebuilt.state_dict()) == set(model.state_dict())
        kept = ConvMixer(8, 5, kernel_size=3, patch_size=2, num_classes=4)
        assert kept.prune_intermediate_layers(prune_head=False) == [4] and kept.num_classes == 4 and kept.depth == 5


# ---------------------------------------------------------------------------------------------------------------
# Gradient checkpointing
# ---------------------------------------------------------------------------------------------------------------
def _train_step(model, x, through_intermediates=False):
    if through_intermediates:
        final, maps = model.forward_intermediates(x, indices=2)
        loss = model.forward_head(final).logsumexp(1).sum() + sum(m.square().mean() for m in maps)
    else:
        loss = model(x).logsumexp(1).sum()
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("name", CONVMIXERS)
def test_grad_checkpointing_gives_the_same_gradients_on_every_registered_convmixer(name):
    plain = registered(name).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing(True)
    x = small_input(plain)
    for through in (False, True):
        plain.zero_grad(), ckpt.zero_grad()
        torch.testing.assert_close(_train_step(ckpt, x, through), _train_step(plain, x, through), rtol=0, atol=0)
        grads = dict(plain.named_parameters())
        for key, param in ckpt.named_parameters():
            torch.testing.assert_close(param.grad, grads[key].grad, rtol=1e-6, atol=1e-7, msg=key)
    # BatchNorm running statistics: updated once per forward, as without checkpointing (not again in backward)
    buffers = dict(plain.named_buffers())
    for key, buf in ckpt.named_buffers():
        torch.testing.assert_close(buf, buffers[key], rtol=0, atol=0, msg=key)
    assert int(ckpt.blocks[0][3].num_batches_tracked) == 2


def test_grad_checkpointing_recomputes_only_when_gradients_are_recorded(monkeypatch):
    import convmixer.models.convmixer as cm

    calls = []
    real = cm.checkpointed
    monkeypatch.setattr(cm, "checkpointed", lambda block, x: calls.append(1) or real(block, x))
    model = ConvMixer(8, 3, kernel_size=3, patch_size=2, num_classes=4).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = model(x)
        model.set_grad_checkpointing(True)
        assert torch.equal(model(x), want) and not calls
    assert torch.equal(model(x), want) and len(calls) == 3
    model.forward_intermediates(x, indices=[0], stop_early=True)
    assert len(calls) == 4


def test_grad_checkpointing_lowers_the_measured_peak_memory():
    """The CPU allocator's measured peak over a training step (forward and backward), not an estimate."""
    torch.manual_seed(0)
    model = ConvMixer(32, 8, kernel_size=5, patch_size=2, num_classes=10).train()
    x = torch.randn(4, 3, 32, 32)

    def step():
        model.zero_grad(set_to_none=True)
        model(x).logsumexp(1).sum().backward()

    step()  # gradients allocated once, so both measurements start alike
    plain = peak_cpu_memory(step)
    model.set_grad_checkpointing(True)
    ckpt = peak_cpu_memory(step)
    one_map = 4 * 32 * 16 * 16 * 4  # bytes of one (4, 32, 16, 16) float map
    assert plain > 8 * 4 * one_map  # several maps per block kept: at least 4 per block over 8 blocks
    assert ckpt < 0.5 * plain, (ckpt, plain)


# ---------------------------------------------------------------------------------------------------------------
# The head: global_pool, drop_rate, reset_classifier
# ---------------------------------------------------------------------------------------------------------------
def _pair(**kw):
    torch.manual_seed(0)
    base = ConvMixer(8, 2, kernel_size=3, patch_size=2, num_classes=5).eval()
    other = ConvMixer(8, 2, kernel_size=3, patch_size=2, num_classes=5, **kw).eval()
    other.load_state_dict(base.state_dict())  # the same keys, whatever the head's options
    return base, other


@pytest.mark.parametrize("pool", ["max", "avgmax"])
def test_global_pool_max_and_avgmax(pool):
    base, model = _pair(global_pool=pool)
    x = torch.randn(2, 3, 10, 6)
    with torch.no_grad():
        fmap = base.forward_features(x)
        mx, avg = fmap.amax(dim=(2, 3)), fmap.mean(dim=(2, 3))
        pooled = mx if pool == "max" else (mx + avg) / 2
        torch.testing.assert_close(model.forward_head(fmap, pre_logits=True), pooled)
        torch.testing.assert_close(model(x), base.head(pooled))


def test_global_pool_none_applies_the_head_at_every_position():
    base, model = _pair(global_pool="")
    x = torch.randn(2, 3, 10, 6)
    with torch.no_grad():
        fmap = base.forward_features(x)
        assert torch.equal(model.forward_head(fmap, pre_logits=True), fmap)
        dense = model(x)
        assert dense.shape == (2, 5, 5, 3)
        torch.testing.assert_close(dense, torch.einsum("bchw,kc->bkhw", fmap, base.head.weight)
                                   + base.head.bias.view(1, -1, 1, 1))
        torch.testing.assert_close(dense.mean(dim=(2, 3)), base(x))  # the head is linear: pooling commutes with it
        model.reset_classifier(0)
        assert torch.equal(model(x), fmap)


def test_head_options_keep_keys_and_default_logits():
    base, same = _pair(global_pool="avg", drop_rate=0.0)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(same(x), base(x))
    keys = set(base.state_dict())
    for kw in ({"global_pool": "max"}, {"global_pool": ""}, {"drop_rate": 0.3}):
        assert set(ConvMixer(8, 2, kernel_size=3, patch_size=2, num_classes=5, **kw).state_dict()) == keys


def test_drop_rate_is_dropout_before_the_head():
    base, model = _pair(drop_rate=0.5)
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(model(x), base(x))  # eval: no dropout
    model.train(), base.train()
    torch.manual_seed(3)
    pre = model.forward_head(base.forward_features(x).detach(), pre_logits=True)
    kept = pre != 0
    assert 0 < kept.float().mean() < 1
    ref = base.forward_head(base.forward_features(x).detach(), pre_logits=True)
    torch.testing.assert_close(pre[kept], 2 * ref[kept])  # inverted dropout: survivors scaled by 1 / (1 - p)


@pytest.mark.parametrize("kw,match", [({"global_pool": "mean"}, "global_pool"), ({"drop_rate": 1.0}, "drop_rate"),
                                      ({"drop_rate": -0.1}, "drop_rate"), ({"drop_rate": True}, "drop_rate")])
def test_bad_head_options(kw, match):
    with pytest.raises(ConfigError, match=match):
        ConvMixer(8, 1, **kw)


def test_config_records_head_options_only_when_set():
    plain = ConvMixer(8, 1, kernel_size=3, patch_size=2)
    assert "global_pool" not in plain.config() and "drop_rate" not in plain.config()
    model = ConvMixer(8, 1, kernel_size=3, patch_size=2, global_pool="avgmax", drop_rate=0.25)
    again = ConvMixer(**model.config())
    assert (again.global_pool, again.drop_rate) == ("avgmax", 0.25)
    assert create_model("convmixer_fmnist", global_pool="max").global_pool == "max"


def test_reset_classifier_with_global_pool():
    model = ConvMixer(8, 1, kernel_size=3, patch_size=2, num_classes=4).eval()
    x = torch.randn(2, 3, 8, 8)
    model.reset_classifier(3, global_pool="max")
    assert model.global_pool == "max" and model(x).shape == (2, 3)
    torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True),
                               model.forward_features(x).amax(dim=(2, 3)))
    head = model.get_classifier()
    for args in ((2, "median"), (-1, "avg")):  # refused before anything changes
        with pytest.raises(ConfigError):
            model.reset_classifier(*args)
        assert model.get_classifier() is head and model.global_pool == "max"
    model.reset_classifier(2)  # global_pool=None keeps the pooling
    assert model.global_pool == "max" and isinstance(model.head, nn.Linear)


@pytest.mark.parametrize("name", CONVMIXERS)
def test_registered_head_defaults(name):
    kwargs = get_model_entry(name).kwargs
    assert "global_pool" not in kwargs and "drop_rate" not in kwargs  # every variant keeps the paper's head
