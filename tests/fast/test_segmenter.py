"""The fast path puts a segmentation model's ConvMixer backbone on the fused kernels, with the plain model's results."""

import copy

import pytest
import torch

from convmixer import create_model
from convmixer.fast import FastOptions, apply_plan, plan_execution
from convmixer.fast.modules import FastMixerLayer, FastStem
from convmixer.fast.plan import model_facts

from .test_equivalence import assert_close, fp32_plan, randomize_bn

pytestmark = pytest.mark.usefixtures("require_kernels")


def segmenter(head, seed=0):
    torch.manual_seed(seed)
    return randomize_bn(create_model("convmixer_seg_fmnist", dim=24, depth=2, kernel_size=5, patch_size=2, head=head,
                                     aux_indices=[0]))


def test_the_plan_sees_the_backbone():
    model = segmenter("pixelshuffle")
    facts = model_facts(model)
    assert facts.convmixer and (facts.dim, facts.kernel_size, facts.patch_size) == (24, 5, 2)
    plan = plan_execution(model, mode="train", device="cpu", input_shape=(8, 1, 64, 64),
                          options=FastOptions(probe=False))
    assert plan.kernel == "fused" and plan.channels_last
    apply_plan(model, plan)
    assert isinstance(model.backbone.blocks[1], FastMixerLayer)


@pytest.mark.parametrize("head", ["linear", "pixelshuffle"])
def test_fused_segmenter_equals_the_plain_one(head):
    plain = segmenter(head)
    fast = apply_plan(copy.deepcopy(plain), fp32_plan("fused"))
    assert isinstance(fast.backbone.stem, FastStem)
    assert all(isinstance(b, FastMixerLayer) for b in fast.backbone.blocks)
    assert list(fast.state_dict()) == list(plain.state_dict())
    x = torch.randn(4, 1, 13, 16)
    outs = []
    for model in (plain, fast):  # a training step: main and auxiliary logits, every gradient, BN statistics
        model.train().zero_grad(set_to_none=True)
        out = model(x.contiguous(memory_format=torch.channels_last) if model is fast else x)
        sum(o.logsumexp(1).mean() for o in out).backward()
        outs.append(out)
    for a, b, what in zip(outs[1], outs[0], ("main", "aux")):
        assert_close(a, b, what)
    grads = dict(plain.named_parameters())
    for name, p in fast.named_parameters():
        assert_close(p.grad, grads[name].grad, f"grad {name}", scale=10)
    for (name, a), b in zip(fast.named_buffers(), plain.buffers()):
        assert_close(a, b, name)
    with torch.no_grad():
        assert_close(fast.eval()(x), plain.eval()(x), "eval")
