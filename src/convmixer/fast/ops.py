"""PyTorch operators over the C kernels: depthwise convolution and fused activation + BatchNorm (+ residual).

All are ``torch.library.custom_op``\\ s (namespace ``convmixer``) with fake implementations, so autograd and
``torch.compile`` treat them as single opaque operators. Activations are channels-last (NHWC) fp32 or bf16;
parameters are used in fp32 whatever their storage dtype. Each op calls :func:`~convmixer.fast.build.load_kernels`,
so callers check :func:`supported` first.

    dwconv2d(x, w, b)                              z = depthwise k x k conv, "same" padding, stride 1
    act_bn_train(z, gamma, beta, res, eps, act)    out = BN_batch(act(z)) (+ res) -> (out, mean, biased var)
    act_affine(z, scale, shift, res, act)          out = act(z) * scale + shift (+ res)   (eval-mode BN)
    dw_act_affine(x, w, b, scale, shift, act, res) out = act(dwconv(x)) * scale + shift (+ x), inference only

Backward passes recompute the activation from its input instead of saving its output.

The layers call ``dwconv2d`` and ``act_bn_train`` through :func:`dwconv2d_autograd` and
:func:`act_bn_train_autograd`: the custom ops where torch.compile traces, and in eager mode plain
``torch.autograd.Function``\\ s over the same functions, without the custom ops' Python dispatch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .build import MAX_KERNEL_SIZE, load_kernels

ACT_CODES: dict[type[nn.Module], int] = {nn.Identity: 0, nn.GELU: 1, nn.ReLU: 2, nn.SiLU: 3}
ACT_NONE = 0
CL = torch.channels_last
DTYPES = (torch.float32, torch.bfloat16)


def act_code(module: nn.Module) -> int | None:
    """The kernel's code for an activation module, or None when the kernels cannot compute it."""
    if isinstance(module, nn.GELU) and module.approximate != "none":
        return None
    return ACT_CODES.get(type(module))


def supported(x: Tensor) -> bool:
    """Whether the kernels can take ``x`` (a CPU fp32/bf16 4-D tensor)."""
    return x.device.type == "cpu" and x.dtype in DTYPES and x.dim() == 4


def _cl(t: Tensor) -> Tensor:
    """``t`` as an NHWC-contiguous (channels_last) tensor. Copying through an NHWC view is 20x faster than
    ``contiguous(memory_format=...)`` for the expanded gradient that global average pooling sends back."""
    if t.is_contiguous(memory_format=CL):
        return t
    return t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)


def _f32(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().to(torch.float32).contiguous()


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _lib(kernel_size: int = 0):
    lib = load_kernels(kernel_size)
    if lib is None:
        raise RuntimeError("convmixer fast kernels are not available (see convmixer.fast.build.build_error)")
    return lib


def same_padding(kernel_size: int) -> tuple[int, int]:
    """PyTorch's padding="same" for stride 1: (k-1)//2 before, k//2 after."""
    return (kernel_size - 1) // 2, kernel_size // 2


def _empty_like(t: Tensor) -> Tensor:
    return torch.empty_like(t, memory_format=CL)


def _nthreads() -> int:
    return torch.get_num_threads()


# ------------------------------------------------------------------------------------------------------------
# depthwise convolution
# ------------------------------------------------------------------------------------------------------------
def _dw_call(x: Tensor, weight: Tensor, bias: Tensor | None, *, flip: bool, act: int = ACT_NONE,
             scale: Tensor | None = None, shift: Tensor | None = None, residual: bool = False) -> Tensor:
    k = weight.shape[-1]
    B, C, H, W = x.shape
    x = _cl(x)
    out = _empty_like(x)
    w = weight.detach().reshape(C, k * k).to(torch.float32).contiguous()
    bias, scale, shift = _f32(bias), _f32(scale), _f32(shift)
    before, after = same_padding(k)
    pt = after if flip else before  # the input gradient correlates with the rotated kernel: swap the pads
    _lib(k).cmx_dw_fwd(x.data_ptr(), w.data_ptr(), _ptr(bias), int(flip), act, _ptr(scale), _ptr(shift),
                       int(residual), out.data_ptr(), int(x.dtype == torch.bfloat16), B, H, W, C, pt, pt,
                       _nthreads())
    return out


def _dwconv2d(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Depthwise conv, weight (C, 1, k, k), "same" padding, stride 1; channels-last output in x's dtype."""
    return _dw_call(x, weight, bias, flip=False)


dwconv2d = torch.library.custom_op("convmixer::dwconv2d", _dwconv2d, mutates_args=())


@dwconv2d.register_fake
def _(x, weight, bias):
    return _empty_like(x)


def _dw_input_grad(grad: Tensor, weight: Tensor) -> Tensor:
    return _dw_call(grad, weight, None, flip=True)


dwconv2d_input_grad = torch.library.custom_op("convmixer::dwconv2d_input_grad", _dw_input_grad, mutates_args=())


@dwconv2d_input_grad.register_fake
def _(grad, weight):
    return _empty_like(grad)


def _dw_weight_grad(grad: Tensor, x: Tensor, kernel_size: int) -> tuple[Tensor, Tensor]:
    """(d weight as (C, 1, k, k) fp32, d bias as (C,) fp32)."""
    B, C, H, W = x.shape
    x = _cl(x)
    grad = _cl(grad.to(x.dtype))
    gw = torch.empty(C, 1, kernel_size, kernel_size, dtype=torch.float32)
    gb = torch.empty(C, dtype=torch.float32)
    pt, _ = same_padding(kernel_size)
    _lib(kernel_size).cmx_dw_wgrad(x.data_ptr(), grad.data_ptr(), gw.data_ptr(), gb.data_ptr(),
                                   int(x.dtype == torch.bfloat16), B, H, W, C, pt, pt, _nthreads())
    return gw, gb


dwconv2d_weight_grad = torch.library.custom_op("convmixer::dwconv2d_weight_grad", _dw_weight_grad, mutates_args=())


@dwconv2d_weight_grad.register_fake
def _(grad, x, kernel_size):
    C = x.shape[1]
    return (x.new_empty(C, 1, kernel_size, kernel_size, dtype=torch.float32), x.new_empty(C, dtype=torch.float32))


def _dw_setup(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _dw_backward(ctx, grad, input_grad=dwconv2d_input_grad, weight_grad=dwconv2d_weight_grad):
    x, weight = ctx.saved_tensors
    gx = gw = gb = None
    if ctx.needs_input_grad[0]:
        gx = input_grad(grad.to(x.dtype), weight)
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        gw, gb = weight_grad(grad, x, weight.shape[-1])
        gw = gw.to(weight.dtype) if ctx.needs_input_grad[1] else None
        gb = gb.to(ctx.bias_dtype) if ctx.needs_input_grad[2] else None
    return gx, gw, gb


dwconv2d.register_autograd(_dw_backward, setup_context=_dw_setup)


class _DwConv2d(torch.autograd.Function):
    """:func:`dwconv2d` for eager autograd: the same forward, setup and backward, called directly
    (see :func:`dwconv2d_autograd`)."""

    forward = staticmethod(_dwconv2d)
    setup_context = staticmethod(_dw_setup)

    @staticmethod
    def backward(ctx, grad):
        return _dw_backward(ctx, grad, _dw_input_grad, _dw_weight_grad)


def dwconv2d_autograd(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """:func:`dwconv2d` with autograd, for the layers: the custom op where torch.compile traces (it sees one opaque
    operator), a plain ``autograd.Function`` over the same functions in eager mode, which skips the custom op's
    dispatch (about 40 us a call forward and as much backward, some 2 ms of a training step); same results."""
    if torch.compiler.is_compiling():
        return dwconv2d(x, weight, bias)
    return _DwConv2d.apply(x, weight, bias)


# ------------------------------------------------------------------------------------------------------------
# activation + BatchNorm (+ residual)
# ------------------------------------------------------------------------------------------------------------
def _ew(fn: str, *args) -> None:
    getattr(_lib(0), fn)(*args)


def _rows(z: Tensor) -> tuple[int, int]:
    B, C, H, W = z.shape
    return B * H * W, C


def _act_bn_train(z: Tensor, weight: Tensor, bias: Tensor, residual: Tensor | None, eps: float,
                  act: int) -> tuple[Tensor, Tensor, Tensor]:
    """Training-mode BatchNorm of act(z) with batch statistics: (out, batch mean, biased batch variance)."""
    z = _cl(z)
    M, C = _rows(z)
    bf = int(z.dtype == torch.bfloat16)
    out = _empty_like(z)
    stats = torch.empty(2 * C, dtype=torch.float64)
    _ew("cmx_act_affine", z.data_ptr(), act, None, None, None, out.data_ptr(), stats.data_ptr(), bf, M, C, _nthreads())
    # mean = sum / M, var = sum of squares / M - mean^2 (>= 0), scale = weight / sqrt(var + eps),
    # shift = bias - mean * scale, in float64 (cmx_bn_coeffs)
    f32 = torch.float32
    affine, mean, var = torch.empty(2, C, dtype=f32), torch.empty(C, dtype=f32), torch.empty(C, dtype=f32)
    _ew("cmx_bn_coeffs", stats.data_ptr(), _f32(weight).data_ptr(), _f32(bias).data_ptr(), eps, M, C,
        affine[0].data_ptr(), affine[1].data_ptr(), mean.data_ptr(), var.data_ptr())
    residual = None if residual is None else _cl(residual.to(z.dtype))
    _ew("cmx_act_affine", out.data_ptr(), ACT_NONE, affine[0].data_ptr(), affine[1].data_ptr(), _ptr(residual),
        out.data_ptr(), None, bf, M, C, _nthreads())
    return out, mean, var


act_bn_train = torch.library.custom_op("convmixer::act_bn_train", _act_bn_train, mutates_args=())


@act_bn_train.register_fake
def _(z, weight, bias, residual, eps, act):
    C = z.shape[1]
    return _empty_like(z), z.new_empty(C, dtype=torch.float32), z.new_empty(C, dtype=torch.float32)


def _grad_sums(z: Tensor, grad: Tensor, act: int) -> Tensor:
    """(sum grad, sum grad * act(z)) per channel, float64, shape (2, C)."""
    M, C = _rows(z)
    sums = torch.empty(2 * C, dtype=torch.float64)
    _ew("cmx_act_bn_bwd_reduce", z.data_ptr(), grad.data_ptr(), act, sums.data_ptr(), int(z.dtype == torch.bfloat16),
        M, C, _nthreads())
    return sums.view(2, C)


def _grad_apply(z: Tensor, grad: Tensor, act: int, ca: Tensor, cb: Tensor, cc: Tensor) -> Tensor:
    """dz = (ca * grad + cb * act(z) + cc) * act'(z)."""
    M, C = _rows(z)
    dz = _empty_like(z)
    ca, cb, cc = (_f32(t) for t in (ca, cb, cc))
    _ew("cmx_act_bn_bwd_apply", z.data_ptr(), grad.data_ptr(), act, ca.data_ptr(), cb.data_ptr(), cc.data_ptr(),
        dz.data_ptr(), int(z.dtype == torch.bfloat16), M, C, _nthreads())
    return dz


def _act_bn_train_backward(grad: Tensor, z: Tensor, weight: Tensor, mean: Tensor, var: Tensor, eps: float,
                           act: int) -> tuple[Tensor, Tensor, Tensor]:
    """(d z, d weight, d bias) of :func:`act_bn_train`; the weight and bias gradients are fp32."""
    z = _cl(z)
    grad = _cl(grad.to(z.dtype))
    M, C = _rows(z)
    sums = _grad_sums(z, grad, act)
    # d y = k * (grad - mean(grad) - y_hat * mean(grad * y_hat)), y_hat = (y - mean) * invstd, k = weight * invstd,
    # as dz = (ca * grad + cb * y + cc) * act'(z); d weight = sum grad * y_hat, d bias = sum grad (cmx_bn_bwd_coeffs)
    f32 = torch.float32
    coeffs, d_weight, d_bias = torch.empty(3, C, dtype=f32), torch.empty(C, dtype=f32), torch.empty(C, dtype=f32)
    _ew("cmx_bn_bwd_coeffs", sums.data_ptr(), _f32(weight).data_ptr(), _f32(mean).data_ptr(), _f32(var).data_ptr(),
        eps, M, C, coeffs[0].data_ptr(), coeffs[1].data_ptr(), coeffs[2].data_ptr(), d_weight.data_ptr(),
        d_bias.data_ptr())
    return _grad_apply(z, grad, act, coeffs[0], coeffs[1], coeffs[2]), d_weight, d_bias


act_bn_train_backward = torch.library.custom_op("convmixer::act_bn_train_backward", _act_bn_train_backward,
                                                mutates_args=())


@act_bn_train_backward.register_fake
def _(grad, z, weight, mean, var, eps, act):
    C = z.shape[1]
    return _empty_like(z), z.new_empty(C, dtype=torch.float32), z.new_empty(C, dtype=torch.float32)


def _act_bn_setup(ctx, inputs, output):
    z, weight, bias, residual, eps, act = inputs
    _, mean, var = output
    ctx.save_for_backward(z, weight, mean, var)
    ctx.eps, ctx.act = eps, act
    ctx.has_residual = residual is not None
    ctx.mark_non_differentiable(mean, var)


def _act_bn_backward(ctx, grad, _grad_mean, _grad_var, backward=act_bn_train_backward):
    z, weight, mean, var = ctx.saved_tensors
    dz, dw, db = backward(grad, z, weight, mean, var, ctx.eps, ctx.act)
    return dz, dw.to(weight.dtype), db.to(weight.dtype), grad if ctx.has_residual else None, None, None


act_bn_train.register_autograd(_act_bn_backward, setup_context=_act_bn_setup)


class _ActBnTrain(torch.autograd.Function):
    """:func:`act_bn_train` for eager autograd (see :func:`act_bn_train_autograd`)."""

    forward = staticmethod(_act_bn_train)
    setup_context = staticmethod(_act_bn_setup)

    @staticmethod
    def backward(ctx, grad, grad_mean, grad_var):
        return _act_bn_backward(ctx, grad, grad_mean, grad_var, _act_bn_train_backward)


def act_bn_train_autograd(z: Tensor, weight: Tensor, bias: Tensor, residual: Tensor | None, eps: float,
           act: int) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`act_bn_train` with autograd, for the layers: the custom op under torch.compile, the plain
    ``autograd.Function`` in eager mode (as :func:`dwconv2d_autograd`)."""
    if torch.compiler.is_compiling():
        return act_bn_train(z, weight, bias, residual, eps, act)
    return _ActBnTrain.apply(z, weight, bias, residual, eps, act)


@torch.library.custom_op("convmixer::act_affine", mutates_args=())
def act_affine(z: Tensor, scale: Tensor, shift: Tensor, residual: Tensor | None, act: int) -> Tensor:
    """act(z) * scale + shift (+ residual), per-channel scale and shift: eval-mode BatchNorm after an activation."""
    z = _cl(z)
    M, C = _rows(z)
    out = _empty_like(z)
    scale, shift = _f32(scale), _f32(shift)
    residual = None if residual is None else _cl(residual.to(z.dtype))
    _ew("cmx_act_affine", z.data_ptr(), act, scale.data_ptr(), shift.data_ptr(), _ptr(residual), out.data_ptr(), None,
        int(z.dtype == torch.bfloat16), M, C, _nthreads())
    return out


@act_affine.register_fake
def _(z, scale, shift, residual, act):
    return _empty_like(z)


def _affine_setup(ctx, inputs, output):
    z, scale, shift, residual, act = inputs
    ctx.save_for_backward(z, scale)
    ctx.act, ctx.has_residual = act, residual is not None
    ctx.param_dtype = scale.dtype


def _affine_backward(ctx, grad):
    z, scale = ctx.saved_tensors
    dz = d_scale = d_shift = None
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        sums = act_affine_param_grad(grad, z, ctx.act)
        d_shift, d_scale = sums[0].to(ctx.param_dtype), sums[1].to(ctx.param_dtype)
    if ctx.needs_input_grad[0]:
        zeros = torch.zeros_like(scale, dtype=torch.float32)
        dz = act_affine_input_grad(grad, z, scale, zeros, zeros, ctx.act)
    return dz, d_scale, d_shift, grad if ctx.has_residual else None, None


@torch.library.custom_op("convmixer::act_affine_param_grad", mutates_args=())
def act_affine_param_grad(grad: Tensor, z: Tensor, act: int) -> Tensor:
    """(2, C) fp32: sum grad and sum grad * act(z) per channel."""
    z = _cl(z)
    return _grad_sums(z, _cl(grad.to(z.dtype)), act).float()


@act_affine_param_grad.register_fake
def _(grad, z, act):
    return z.new_empty(2, z.shape[1], dtype=torch.float32)


@torch.library.custom_op("convmixer::act_affine_input_grad", mutates_args=())
def act_affine_input_grad(grad: Tensor, z: Tensor, ca: Tensor, cb: Tensor, cc: Tensor, act: int) -> Tensor:
    z = _cl(z)
    return _grad_apply(z, _cl(grad.to(z.dtype)), act, ca, cb, cc)


@act_affine_input_grad.register_fake
def _(grad, z, ca, cb, cc, act):
    return _empty_like(z)


act_affine.register_autograd(_affine_backward, setup_context=_affine_setup)


@torch.library.custom_op("convmixer::dw_act_affine", mutates_args=())
def dw_act_affine(x: Tensor, weight: Tensor, bias: Tensor | None, scale: Tensor, shift: Tensor, act: int,
                  residual: bool) -> Tensor:
    """Inference only (no autograd): act(dwconv2d(x)) * scale + shift (+ x) in one pass over x."""
    return _dw_call(x, weight, bias, flip=False, act=act, scale=scale, shift=shift, residual=residual)


@dw_act_affine.register_fake
def _(x, weight, bias, scale, shift, act, residual):
    return _empty_like(x)


def dw_supported(conv: nn.Module) -> bool:
    """Whether ``conv`` is a depthwise, stride-1, "same"-padded, square-kernel Conv2d the kernels compute."""
    if type(conv) is not nn.Conv2d:
        return False
    k = conv.kernel_size[0]
    same = conv.padding == "same" or (k % 2 == 1 and conv.padding == (k // 2, k // 2))
    return (conv.kernel_size == (k, k) and 1 <= k <= MAX_KERNEL_SIZE and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == conv.in_channels == conv.out_channels
            and conv.padding_mode == "zeros" and same)
