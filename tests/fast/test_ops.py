"""The kernel operators against PyTorch's built-ins (fp32: within rounding; bf16: within bf16 precision)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convmixer.fast import ops

pytestmark = pytest.mark.usefixtures("require_kernels")
CL = torch.channels_last


def rel_err(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-6)).item()


@pytest.mark.parametrize("k", [3, 4, 8, 9])
@pytest.mark.parametrize("shape", [(2, 20, 7, 11), (1, 16, 5, 5), (3, 37, 9, 3)])
def test_dwconv2d_matches_conv2d_forward_and_backward(k, shape):
    B, C, H, W = shape
    gen = torch.Generator().manual_seed(k)
    x = torch.randn(shape, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(C, 1, k, k, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(C, dtype=torch.float64, generator=gen, requires_grad=True)
    ref = F.conv2d(x, w, b, padding="same", groups=C)
    g = torch.randn_like(ref)
    ref.backward(g)
    xf, wf, bf = (t.detach().float().requires_grad_() for t in (x, w, b))
    out = ops.dwconv2d(xf.contiguous(memory_format=CL), wf, bf)
    out.backward(g.float())
    assert out.is_contiguous(memory_format=CL) and out.dtype == torch.float32
    assert rel_err(out, ref) < 1e-6
    assert rel_err(xf.grad, x.grad) < 1e-6
    assert rel_err(wf.grad, w.grad) < 1e-6
    assert rel_err(bf.grad, b.grad) < 1e-6


def test_dwconv2d_bf16_and_without_bias():
    x = torch.randn(2, 32, 14, 14)
    w = torch.randn(32, 1, 9, 9) / 9
    ref = F.conv2d(x, w, None, padding="same", groups=32)
    out = ops.dwconv2d(x.bfloat16(), w, None)
    assert out.dtype == torch.bfloat16
    assert rel_err(out, ref) < 2e-2
    assert torch.equal(ops.dwconv2d(x, w, None), ops.dwconv2d(x.contiguous(memory_format=CL), w, None))


@pytest.mark.parametrize("act_cls", [nn.GELU, nn.ReLU, nn.SiLU, nn.Identity])
@pytest.mark.parametrize("residual", [False, True])
def test_act_bn_train_matches_module(act_cls, residual):
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(3, 21, 5, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    res = torch.randn(3, 21, 5, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    gamma = (torch.rand(21, generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
    beta = torch.randn(21, generator=gen, dtype=torch.float64, requires_grad=True)
    y = act_cls()(z)
    ref = F.batch_norm(y, None, None, gamma, beta, training=True, eps=1e-5)
    if residual:
        ref = ref + res
    g = torch.randn_like(ref)
    ref.backward(g)
    zf, rf, gf, bf = (t.detach().float().requires_grad_() for t in (z, res, gamma, beta))
    out, mean, var = ops.act_bn_train(zf.contiguous(memory_format=CL), gf, bf, rf if residual else None, 1e-5,
                                      ops.act_code(act_cls()))
    out.backward(g.float())
    assert rel_err(out, ref) < 1e-5
    assert rel_err(mean, y.mean((0, 2, 3))) < 1e-5
    assert rel_err(var, y.var((0, 2, 3), unbiased=False)) < 1e-5
    for mine, theirs in ((zf, z), (gf, gamma), (bf, beta)) + (((rf, res),) if residual else ()):
        assert rel_err(mine.grad, theirs.grad) < 1e-4


@pytest.mark.parametrize("act_cls", [nn.GELU, nn.ReLU, nn.SiLU])
def test_act_affine_and_its_gradients(act_cls):
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(2, 18, 6, 6, generator=gen, requires_grad=True)
    res = torch.randn(2, 18, 6, 6, generator=gen, requires_grad=True)
    scale = torch.randn(18, generator=gen, requires_grad=True)
    shift = torch.randn(18, generator=gen, requires_grad=True)
    ref = act_cls()(z) * scale[:, None, None] + shift[:, None, None] + res
    g = torch.randn_like(ref)
    grads_ref = torch.autograd.grad(ref, (z, res, scale, shift), g)
    out = ops.act_affine(z, scale, shift, res, ops.act_code(act_cls()))
    grads = torch.autograd.grad(out, (z, res, scale, shift), g)
    assert rel_err(out, ref) < 1e-5
    for mine, theirs in zip(grads, grads_ref):
        assert rel_err(mine, theirs) < 1e-5


def test_dw_act_affine_is_the_whole_inference_branch():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 24, 9, 9, generator=gen)
    w, b = torch.randn(24, 1, 8, 8, generator=gen) / 8, torch.randn(24, generator=gen)
    scale, shift = torch.rand(24, generator=gen) + 0.5, torch.randn(24, generator=gen)
    z = F.conv2d(x, w, b, padding="same", groups=24)
    ref = x + F.gelu(z) * scale[:, None, None] + shift[:, None, None]
    out = ops.dw_act_affine(x, w, b, scale, shift, 1, True)
    assert rel_err(out, ref) < 1e-5
    out16 = ops.dw_act_affine(x.bfloat16(), w, b, scale, shift, 1, True)
    assert out16.dtype == torch.bfloat16 and rel_err(out16, ref) < 3e-2


def test_act_code_and_dw_supported():
    assert ops.act_code(nn.GELU()) == 1 and ops.act_code(nn.GELU(approximate="tanh")) is None
    assert ops.act_code(nn.Tanh()) is None
    assert ops.dw_supported(nn.Conv2d(8, 8, 9, groups=8, padding="same"))
    assert ops.dw_supported(nn.Conv2d(8, 8, 5, groups=8, padding=2))
    assert not ops.dw_supported(nn.Conv2d(8, 8, 4, groups=8, padding=2))  # not "same" for an even kernel
    assert not ops.dw_supported(nn.Conv2d(8, 16, 3, groups=8, padding=1))
    assert not ops.dw_supported(nn.Conv2d(8, 8, 3, groups=8, padding=1, stride=2))
    assert not ops.dw_supported(nn.Conv2d(8, 8, 3, groups=8, padding="same", padding_mode="reflect"))


def test_portable_build_without_native_flags(monkeypatch, tmp_path):
    """The generic vector code (no -march=native: no AVX-512 paths) computes the same."""
    from convmixer.fast import build

    base = build._flag_sets()[-1]
    monkeypatch.setattr(build, "_flag_sets", lambda: [base + ["-fopenmp"], base])
    monkeypatch.setenv("CONVMIXER_CACHE", str(tmp_path))
    build.reset()
    try:
        x = torch.randn(2, 20, 6, 7)
        w, b = torch.randn(20, 1, 3, 3), torch.randn(20)
        ref = F.conv2d(x, w, b, padding="same", groups=20)
        assert rel_err(ops.dwconv2d(x, w, b), ref) < 1e-6
        assert rel_err(ops.dwconv2d(x.bfloat16(), w, b), ref) < 2e-2
        z = torch.randn(2, 20, 6, 7)
        out, _, _ = ops.act_bn_train(z, torch.ones(20), torch.zeros(20), None, 1e-5, 1)
        assert rel_err(out, F.batch_norm(F.gelu(z), None, None, training=True)) < 1e-5
        assert list(tmp_path.glob("kernels/*.so"))
    finally:
        build.reset()


def test_results_do_not_depend_on_thread_scheduling():
    """Per-channel sums are added in a fixed order, so repeated runs agree to the bit."""
    z = torch.randn(8, 40, 16, 16)
    g = torch.randn_like(z)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        runs = []
        for _ in range(4):
            out, mean, var = ops.act_bn_train(z, torch.ones(40), torch.zeros(40), None, 1e-5, 1)
            grads = ops.act_bn_train_backward(g, z, torch.ones(40), mean, var, 1e-5, 1)
            runs.append((out, mean, var, *grads))
        for run in runs[1:]:
            assert all(torch.equal(a, b) for a, b in zip(run, runs[0]))
    finally:
        torch.set_num_threads(threads)


def test_batchnorm_coefficients_are_the_float64_formulas_to_the_bit():
    """cmx_bn_coeffs / cmx_bn_bwd_coeffs compute in C what used to be a dozen float64 PyTorch operators per
    BatchNorm; the results are those of the same formulas in torch, to the bit (so recorded runs reproduce)."""
    torch.manual_seed(0)
    C, M, eps = 300, 6272, 1e-5
    # sums as the kernels produce them: sum and sum of squares (some variances ~0 or negative by cancellation)
    x = torch.randn(M, C, dtype=torch.float64) * torch.rand(C, dtype=torch.float64) * 3 + torch.randn(C) * 2
    x[:, :5] = 1.25  # constant channels: var = 0 up to rounding, clamped
    stats = torch.cat([x.sum(0), (x * x).sum(0)])
    weight, bias = torch.randn(C), torch.randn(C)
    f32 = torch.float32
    affine, mean, var = torch.empty(2, C, dtype=f32), torch.empty(C, dtype=f32), torch.empty(C, dtype=f32)
    ops._ew("cmx_bn_coeffs", stats.data_ptr(), weight.data_ptr(), bias.data_ptr(), eps, M, C, affine[0].data_ptr(),
            affine[1].data_ptr(), mean.data_ptr(), var.data_ptr())
    mean_ref = stats[:C] / M
    var_ref = (stats[C:] / M - mean_ref * mean_ref).clamp_min(0)
    scale_ref = weight.double() * (var_ref + eps).rsqrt()
    shift_ref = bias.double() - mean_ref * scale_ref
    assert torch.equal(mean, mean_ref.float()) and torch.equal(var, var_ref.float())
    assert torch.equal(affine[0], scale_ref.float()) and torch.equal(affine[1], shift_ref.float())
    assert (var[:5] >= 0).all()

    sums = torch.cat([torch.randn(C, dtype=torch.float64) * 50, torch.randn(C, dtype=torch.float64) * 80])
    coeffs, d_weight, d_bias = torch.empty(3, C, dtype=f32), torch.empty(C, dtype=f32), torch.empty(C, dtype=f32)
    ops._ew("cmx_bn_bwd_coeffs", sums.data_ptr(), weight.data_ptr(), mean.data_ptr(), var.data_ptr(), eps, M, C,
            coeffs[0].data_ptr(), coeffs[1].data_ptr(), coeffs[2].data_ptr(), d_weight.data_ptr(), d_bias.data_ptr())
    sum_g, sum_gy = sums[:C], sums[C:]
    m, invstd = mean.double(), (var.double() + eps).rsqrt()
    dw_ref = invstd * (sum_gy - m * sum_g)
    k = weight.double() * invstd
    m2 = dw_ref / M
    assert torch.equal(coeffs[0], k.float())
    assert torch.equal(coeffs[1], (-k * invstd * m2).float())
    assert torch.equal(coeffs[2], (-k * sum_g / M + k * invstd * m * m2).float())
    assert torch.equal(d_weight, dw_ref.float()) and torch.equal(d_bias, sum_g.float())


def test_the_eager_autograd_path_is_the_custom_op_to_the_bit():
    """The layers call dwconv2d / act_bn_train through plain autograd.Functions in eager mode (no custom-op
    dispatch); outputs and every gradient equal the custom ops' exactly."""
    torch.manual_seed(0)
    z = torch.randn(4, 16, 7, 7).contiguous(memory_format=CL).requires_grad_()
    res = torch.randn(4, 16, 7, 7).contiguous(memory_format=CL).requires_grad_()
    gamma, beta = torch.randn(16, requires_grad=True), torch.randn(16, requires_grad=True)
    w, b = torch.randn(16, 1, 5, 5, requires_grad=True), torch.randn(16, requires_grad=True)
    runs = []
    for dw, act_bn in ((ops.dwconv2d, ops.act_bn_train), (ops.dwconv2d_autograd, ops.act_bn_train_autograd)):
        out, mean, var = act_bn(dw(z, w, b), gamma, beta, res, 1e-5, 1)
        grads = torch.autograd.grad((out * out.detach().roll(1, 0)).sum(), (z, res, gamma, beta, w, b))
        runs.append((out, mean, var, *grads))
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    assert not runs[1][1].requires_grad  # the batch statistics are not differentiable on either path
