"""Drop-in replacements for ConvMixer's stem and layers that run on the fast kernels.

They subclass ``nn.Sequential`` and hold the *same* child modules as the plain ``nn.Sequential`` they replace, so
parameter objects and state_dict keys do not change (``stem.0``, ``blocks.{i}.0.fn.0``, ``blocks.{i}.3`` ...);
only ``forward`` differs. Whenever the kernels cannot take an input (a CUDA tensor, fp16, an unusual module) a
block runs the plain ``nn.Sequential`` forward, so results never depend on the swap.

BatchNorm keeps its exact semantics: batch statistics in training mode, running statistics updated with
``momentum`` (or the cumulative average when it is None) from the unbiased batch variance, ``num_batches_tracked``
incremented; running statistics in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ops

KERNELS = ("native", "dwconv", "fused")  # built-in ops | own depthwise conv | own conv + fused act/BN/residual


def _bn_ok(bn: nn.Module) -> bool:
    return (type(bn) is nn.BatchNorm2d and bn.affine and bn.track_running_stats
            and bn.running_mean is not None and bn.num_batches_tracked is not None)


def _autocast_dtype(x: Tensor) -> torch.dtype | None:
    """The dtype autocast would run a convolution on ``x`` in (None: autocast is off)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return None


def _check_batch(z: Tensor) -> None:
    if z.shape[0] * z.shape[2] * z.shape[3] == 1:  # what BatchNorm itself refuses in training mode
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(z.shape)}")


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _eval_affine(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as y * scale + shift (differentiable in weight and bias)."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def act_bn(z: Tensor, act: int, bn: nn.BatchNorm2d, residual: Tensor | None = None) -> Tensor:
    """``bn(act(z)) (+ residual)`` on the kernels, training or eval mode as ``bn`` is."""
    if bn.training:
        _check_batch(z)
        out, mean, var = ops.act_bn_train_autograd(z, bn.weight, bn.bias, residual, bn.eps, act)
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            n = z.numel() // z.shape[1]
            bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
            bn.running_var.mul_(1 - factor).add_((var * (n / (n - 1))).to(bn.running_var.dtype), alpha=factor)
        return out
    scale, shift = _eval_affine(bn)
    return ops.act_affine(z, scale, shift, residual, act)


class _FastBlock(nn.Sequential):
    kernel: str = "fused"

    def _usable(self, x: Tensor) -> bool:
        dtype = _autocast_dtype(x)
        return ops.supported(x) and (dtype is None or dtype in ops.DTYPES)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}"


def _patchify_wins(conv: nn.Module, x: Tensor) -> bool:
    """Whether to compute the patch embedding as one matrix product (:func:`patch_linear`).

    With one input channel PyTorch's convolution returns NCHW whatever the memory format asked for (a 1-channel
    input is both NCHW and NHWC), and the copy to NHWC costs 10x the convolution; with patches of 14 px or more
    the matrix product is faster (measured on the 28 px, 1-channel and the 224 px, p=14 models). An overlapping
    stem (kernel > stride, symmetric zero padding) is taken the same way on one channel."""
    k, s = conv.kernel_size[0], conv.stride[0]
    pad = conv.padding
    return (type(conv) is nn.Conv2d and conv.kernel_size == (k, k) and conv.stride == (s, s) and k >= s
            and isinstance(pad, tuple) and pad[0] == pad[1] and conv.padding_mode == "zeros"
            and conv.dilation == (1, 1) and conv.groups == 1
            and (x.shape[1] == 1 or (k == s and pad == (0, 0) and s >= 14)))


def patch_linear(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv(x)`` for a stride-s, k x k stem (k >= s, symmetric zero padding) as a (B*h*w, C*k*k) x (C*k*k, D)
    matrix product whose result is already channels-last; the same function as the convolution, differentiable.
    Non-overlapping patches (k = s, no padding) are a reshape; overlapping ones a strided view of the padded input."""
    B, C, H, W = x.shape
    k, s, pad = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    if k == s and pad == 0:
        h, w = H // k, W // k
        patches = x[:, :, :h * k, :w * k].reshape(B, C, h, k, w, k).permute(0, 2, 4, 1, 3, 5).reshape(B * h * w, -1)
    else:
        padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
        windows = padded.unfold(2, k, s).unfold(3, k, s)  # (B, C, h, w, k, k)
        h, w = windows.shape[2], windows.shape[3]
        patches = windows.permute(0, 2, 3, 1, 4, 5).reshape(B * h * w, -1)
    z = F.linear(patches, conv.weight.reshape(conv.out_channels, -1), conv.bias)
    return z.view(B, h, w, conv.out_channels).permute(0, 3, 1, 2)


class FastStem(_FastBlock):
    """Patch embedding ``conv -> act -> BN`` with act + BN fused."""

    def forward(self, x: Tensor) -> Tensor:
        conv, act_mod, bn = self[0], self[1], self[2]
        code = ops.act_code(act_mod)
        z = patch_linear(x, conv) if self.kernel == "fused" and _patchify_wins(conv, x) else conv(x)
        if self.kernel != "fused" or code is None or not _bn_ok(bn) or not self._usable(z):
            return bn(act_mod(z))
        return act_bn(z, code, bn)


class FastMixerLayer(_FastBlock):
    """One ConvMixer layer: ``Residual(dwconv -> act -> BN)``, ``conv1x1``, ``act``, ``BN``.

    kernel "dwconv": own depthwise convolution, PyTorch's activation/BN/add. kernel "fused": own depthwise
    convolution and fused act + BN (+ residual) passes; in inference (eval mode, no gradient) the whole residual
    branch is one pass over the input.
    """

    def forward(self, x: Tensor) -> Tensor:
        residual, pw, act2, bn2 = self[0], self[1], self[2], self[3]
        dw, act1, bn1 = residual.fn[0], residual.fn[1], residual.fn[2]
        if not self._usable(x) or not ops.dw_supported(dw):
            return super().forward(x)
        xin = x.to(_autocast_dtype(x) or x.dtype)
        code1, code2 = ops.act_code(act1), ops.act_code(act2)
        fused = self.kernel == "fused" and code1 is not None and _bn_ok(bn1)
        if not fused:
            x = x + bn1(act1(ops.dwconv2d_autograd(xin, dw.weight, dw.bias)))
        elif not bn1.training and not _needs_grad(x, dw.weight, dw.bias, bn1.weight, bn1.bias):
            scale, shift = _eval_affine(bn1)
            x = ops.dw_act_affine(xin, dw.weight, dw.bias, scale, shift, code1, True)
        else:
            x = act_bn(ops.dwconv2d_autograd(xin, dw.weight, dw.bias), code1, bn1, residual=xin)
        z = pw(x)
        if self.kernel == "fused" and code2 is not None and _bn_ok(bn2) and ops.supported(z):
            return act_bn(z, code2, bn2)
        return bn2(act2(z))
