"""The fast path in fp32 computes what the plain path computes: outputs, loss, every gradient, BN statistics."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convmixer import create_model, load_checkpoint, save_checkpoint
from convmixer.fast import ExecutionPlan, FastOptions, apply_plan, plan_execution, swap_convmixer
from convmixer.fast.modules import FastMixerLayer, FastStem
from convmixer.models import ConvMixer

pytestmark = pytest.mark.usefixtures("require_kernels")
RTOL, ATOL = 1e-4, 1e-5


def fp32_plan(kernel="fused", mode="train", channels_last=True):
    return ExecutionPlan("cpu", mode, channels_last, None, False, kernel, "test")


def randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BN parameters and statistics (from the global seed), in place."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


def make_pair(h, d, k, p, act="gelu", in_chans=3, num_classes=5, kernel="fused", channels_last=True, stem_kernel=None):
    torch.manual_seed(h * 100 + k)
    plain = randomize_bn(ConvMixer(h, d, k, p, num_classes=num_classes, in_chans=in_chans, act=act,
                                   stem_kernel=stem_kernel))
    fast = apply_plan(copy.deepcopy(plain), fp32_plan(kernel, channels_last=channels_last))
    return plain, fast


def assert_close(a, b, what, scale=1.0):
    a, b = a.float(), b.float()
    tol = ATOL * max(1.0, b.abs().max().item()) * scale
    assert torch.allclose(a, b, rtol=RTOL * scale, atol=tol), f"{what}: max diff {(a - b).abs().max().item():.3g}"


def train_step(model, x, y, prepare=lambda t: t):
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(prepare(x))
    loss = F.cross_entropy(out, y)
    loss.backward()
    return out, loss


CASES = [  # (h, d, k, p, image size, act)
    (16, 2, 9, 2, 15, "gelu"),
    (20, 2, 8, 3, 13, "gelu"),  # even kernel: "same" pads 3 before, 4 after
    (12, 1, 3, 1, 7, "relu"),
    (32, 2, 3, 2, 28, "silu"),
    (7, 2, 4, 1, 5, "gelu"),  # even kernel, odd size, channels not a multiple of 16
]


@pytest.mark.parametrize("kernel", ["fused", "dwconv"])
@pytest.mark.parametrize("h,d,k,p,size,act", CASES)
def test_train_step_matches_plain(h, d, k, p, size, act, kernel):
    plain, fast = make_pair(h, d, k, p, act, kernel=kernel)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, size, size, generator=gen)
    y = torch.randint(0, 5, (3,), generator=gen)
    out_p, loss_p = train_step(plain, x, y)
    out_f, loss_f = train_step(fast, x, y, lambda t: t.contiguous(memory_format=torch.channels_last))
    assert_close(out_f, out_p, "logits")
    assert_close(loss_f, loss_p, "loss")
    for (name, p_plain), p_fast in zip(plain.named_parameters(), fast.parameters()):
        # BatchNorm's batch statistics make some gradients small differences of large terms: scale by 10
        assert_close(p_fast.grad, p_plain.grad, f"grad {name}", scale=10)
    for (name, b_plain), b_fast in zip(plain.named_buffers(), fast.buffers()):
        assert_close(b_fast, b_plain, f"buffer {name}")
        if name.endswith("num_batches_tracked"):
            assert b_fast.item() == b_plain.item() == 1


@pytest.mark.parametrize("h,d,k,p,size,act", CASES)
@pytest.mark.parametrize("batch", [1, 4])
def test_eval_matches_plain_with_and_without_grad(h, d, k, p, size, act, batch):
    plain, fast = make_pair(h, d, k, p, act)
    plain.eval()
    fast.eval()
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_close(fast(x), plain(x), "eval logits (no grad)")
    with torch.inference_mode():
        assert_close(fast(x), plain(x), "eval logits (inference mode)")
    xp, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    plain(xp).square().sum().backward()
    fast(xf).square().sum().backward()
    assert_close(xf.grad, xp.grad, "input gradient in eval mode", scale=10)
    for (name, p_plain), p_fast in zip(plain.named_parameters(), fast.parameters()):
        assert_close(p_fast.grad, p_plain.grad, f"eval-mode grad {name}", scale=10)


@pytest.mark.parametrize("in_chans,p,size,stem_kernel", [(1, 2, 15, None), (3, 14, 30, None), (1, 2, 28, 4),
                                                         (1, 2, 15, 3), (1, 1, 12, 3)])
def test_patch_embedding_as_a_matrix_product(in_chans, p, size, stem_kernel):
    """One input channel or large patches: the stem runs as one matrix product (remainder pixels dropped); an
    overlapping stem on one channel too, over the zero-padded input's windows."""
    from convmixer.fast.modules import _patchify_wins

    plain, fast = make_pair(16, 1, 3, p, in_chans=in_chans, stem_kernel=stem_kernel)
    x = torch.randn(4, in_chans, size, size, generator=torch.Generator().manual_seed(3))
    assert _patchify_wins(fast.stem[0], x)
    y = torch.randint(0, 5, (4,))
    out_p, _ = train_step(plain, x, y)
    out_f, _ = train_step(fast, x, y, lambda t: t.contiguous(memory_format=torch.channels_last))
    assert_close(out_f, out_p, "logits")
    for (name, p_plain), p_fast in zip(plain.named_parameters(), fast.parameters()):
        assert_close(p_fast.grad, p_plain.grad, f"grad {name}", scale=10)
    with torch.no_grad():
        assert_close(fast.eval()(x), plain.eval()(x), "eval logits")


def test_momentum_none_and_several_steps_track_running_stats():
    plain, fast = make_pair(16, 2, 3, 2)
    for m in list(plain.modules()) + list(fast.modules()):
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative moving average
    opt_p = torch.optim.SGD(plain.parameters(), lr=0.1)
    opt_f = torch.optim.SGD(fast.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        x, y = torch.randn(4, 3, 12, 12, generator=gen), torch.randint(0, 5, (4,), generator=gen)
        train_step(plain, x, y)
        train_step(fast, x, y)
        opt_p.step()
        opt_f.step()
    for (name, b_plain), b_fast in zip(plain.named_buffers(), fast.buffers()):
        assert_close(b_fast, b_plain, f"buffer {name}", scale=10)
    for (name, p_plain), p_fast in zip(plain.named_parameters(), fast.parameters()):
        assert_close(p_fast, p_plain, f"param {name} after 3 SGD steps", scale=10)


def test_training_batch_of_one_value_per_channel_is_refused_like_batchnorm():
    plain, fast = make_pair(8, 1, 3, 4)
    x = torch.randn(1, 3, 4, 4)  # a 1x1 feature map, batch 1
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        plain.train()(x)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fast.train()(x)


def test_swap_keeps_parameters_keys_and_modes():
    model = ConvMixer(16, 3, 9, 2, num_classes=4)
    params = list(model.parameters())
    keys = list(model.state_dict())
    plan = plan_execution(model, mode="train", device="cpu", input_shape=(2, 3, 16, 16))
    apply_plan(model, plan)
    assert all(a is b for a, b in zip(model.parameters(), params))
    assert list(model.state_dict()) == keys
    if plan.kernel != "native":
        assert isinstance(model.stem, FastStem) and all(isinstance(b, FastMixerLayer) for b in model.blocks)
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    apply_plan(model, plan_execution(model, mode="train", device="cpu", input_shape=(2, 3, 16, 16),
                                     options=FastOptions(plain=True)))
    assert type(model.stem) is nn.Sequential and all(type(b) is nn.Sequential for b in model.blocks)
    assert all(a is b for a, b in zip(model.parameters(), params))
    assert model.stem[0].weight.is_contiguous()


def test_checkpoint_round_trip_of_a_swapped_model(tmp_path):
    plain, fast = make_pair(16, 2, 9, 2)
    fast.eval()
    path = tmp_path / "fast.safetensors"
    save_checkpoint(fast, path)
    fresh = ConvMixer(16, 2, 9, 2, num_classes=5)
    load_checkpoint(fresh, path)
    x = torch.randn(2, 3, 14, 14)
    with torch.no_grad():
        assert_close(fast(x), fresh.eval()(x), "reloaded plain model")
    other = apply_plan(ConvMixer(16, 2, 9, 2, num_classes=5), fp32_plan())
    load_checkpoint(other, path)
    with torch.no_grad():
        assert_close(other.eval()(x), fresh(x), "reloaded fast model")


def test_fast_modules_fall_back_where_kernels_cannot_run():
    plain, fast = make_pair(16, 2, 3, 2)
    plain.eval()
    fast.eval()
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64)
    with torch.no_grad():  # float64: the kernels do fp32/bf16 only, so the plain forward runs
        assert torch.allclose(fast.double()(x), plain.double()(x))


def test_bf16_autocast_path_is_close_to_fp32():
    plain, fast = make_pair(32, 2, 9, 2)
    x = torch.randn(4, 3, 16, 16)
    y = torch.randint(0, 5, (4,))
    out_p, _ = train_step(plain, x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_f, _ = train_step(fast, x, y, lambda t: t.contiguous(memory_format=torch.channels_last))
    assert out_f.dtype == torch.bfloat16
    assert (out_f.float() - out_p).abs().max() < 0.1 * out_p.abs().max() + 0.05
    for p_plain, p_fast in zip(plain.parameters(), fast.parameters()):
        assert p_fast.grad.dtype == p_fast.dtype and torch.isfinite(p_fast.grad).all()


def test_apply_plan_on_a_baseline_is_memory_format_only():
    model = create_model("resnet20", num_classes=3)
    keys = list(model.state_dict())
    plan = plan_execution(model, mode="train", device="cpu", input_shape=(2, 3, 32, 32))
    assert plan.kernel == "native"
    apply_plan(model, plan)
    assert list(model.state_dict()) == keys
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == plan.channels_last
