"""The inference model: a ConvMixer that takes raw pixels, with the exact folds applied.

Two affine maps in a ConvMixer can be folded into a neighbouring linear layer without changing a single output:

- **Input normalization into the patch-embedding conv.** The stem conv has stride = kernel = p and no padding,
  so every input value it reads is a real pixel; ``conv(W, (x / 255 - mean) / std)`` is then
  ``conv(W / (255 std), x) - sum(W * mean / std)``, which is again one conv with new weights and bias. (With zero
  padding the fold would be wrong at the border: a padded zero of the *normalized* input is ``mean/std`` away from
  a padded zero of the raw input.)
- **The final BatchNorm into the linear head.** In eval mode a BatchNorm is the per-channel affine map
  ``y = s * x + t``; global average pooling is linear and per-channel, so ``pool(BN(x)) = BN(pool(x))`` and
  ``head(BN(pool(x))) = (W diag(s)) pool(x) + (W t + b)``: one linear layer.

Every other BatchNorm follows a GELU; docs/deploy.md explains why they stay.

A segmentation model (:class:`~convmixer.models.ConvMixerSegmenter`) folds the same way, with a 1x1 conv in the
linear head's place: the input normalization goes into its backbone's stem; the "linear" decode head's own
BatchNorm goes into the head's 1x1 conv, and for the "pixelshuffle" head the backbone's last BatchNorm does (both
are per-position affine maps right before a 1x1 conv). The auxiliary heads are kept but never run: in eval mode the
model returns the main logits only.

The folded model's ``forward`` takes uint8 images (B, C, H, W) with values 0..255, or floating-point images with
values 0..1 (multiplied by 255 once). It does nothing else: resizing and cropping to the model's input size is
the caller's job, as in the data pipeline (:func:`convmixer.data.eval_transform`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError, InputShapeError

PIXEL_MAX = 255.0  # uint8 pixels are 0..255; float pixels 0..1 are scaled by this once


def _as_channels(values: Sequence[float] | float, in_chans: int, what: str) -> tuple[float, ...]:
    vals = (float(values),) if isinstance(values, (int, float)) else tuple(float(v) for v in values)
    if len(vals) == 1:
        vals = vals * in_chans
    if len(vals) != in_chans:
        raise ConfigError(f"{what} has {len(vals)} values; the model takes {in_chans} input channel(s)")
    return vals


def _convmixer_of(model: nn.Module):
    """The ConvMixer or ConvMixer segmentation model inside ``model``'s wrappers; ConfigError for anything else."""
    from ..fast.plan import unwrap
    from ..models import ConvMixer, ConvMixerSegmenter

    target = unwrap(model)
    if isinstance(target, FoldedConvMixer):
        raise ConfigError("the model is already folded; fold the original ConvMixer instead")
    if not isinstance(target, (ConvMixer, ConvMixerSegmenter)):
        name = getattr(target, "registry_name", None) or type(target).__name__
        raise ConfigError(f"inference folding and export need a ConvMixer; got {name} (ConvMixer classifiers and "
                          "segmentation models are supported, baselines are not)")
    return target


def stem_conv(model: nn.Module) -> nn.Module:
    """The patch-embedding conv of a ConvMixer or of a segmentation model's backbone."""
    return getattr(model, "backbone", model).stem[0]


def is_dense(model: nn.Module) -> bool:
    """Whether ``model`` (a ConvMixer, a segmentation model, or a folded one) predicts a class per pixel."""
    from ..models import ConvMixerSegmenter

    return isinstance(getattr(model, "model", model), ConvMixerSegmenter)


def _eval_bn_affine(bn: nn.Module, where: str) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm2d as (scale, shift) in float64."""
    if not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None or bn.running_var is None:
        raise ConfigError(f"{where} is not a BatchNorm2d with running statistics; it cannot be folded")
    var = bn.running_var.detach().double()
    scale = torch.rsqrt(var + bn.eps)
    shift = -bn.running_mean.detach().double() * scale
    if bn.affine:
        scale = scale * bn.weight.detach().double()
        shift = shift * bn.weight.detach().double() + bn.bias.detach().double()
    return scale, shift


class FoldedConvMixer(nn.Module):
    """A ConvMixer with normalization and the final BatchNorm folded in; raw pixels in, logits out.

    Built by :func:`fold_for_inference`. ``self.model`` is the folded :class:`~convmixer.models.ConvMixer`
    (its stem conv expects pixels 0..255; its last BatchNorm is an ``nn.Identity``; its head absorbed it) or the
    folded :class:`~convmixer.models.ConvMixerSegmenter` (logits (B, K, H, W)); ``folds`` says what was folded.
    """

    def __init__(self, model: nn.Module, *, mean: tuple[float, ...], std: tuple[float, ...],
                 folds: str = "input mean/std -> patch-embedding conv; final BatchNorm -> linear head") -> None:
        super().__init__()
        self.model = model
        self.mean, self.std, self.folds = mean, std, folds  # what was folded in, for the record (metadata)
        self.in_chans, self.num_classes, self.patch_size = model.in_chans, model.num_classes, model.patch_size

    def config(self) -> dict[str, Any]:
        return self.model.config()

    def pixels(self, x: Tensor) -> Tensor:
        """uint8 0..255 -> float 0..255; float 0..1 -> float 0..255 (the scale the folded stem expects)."""
        dtype = stem_conv(self.model).weight.dtype
        if x.dtype == torch.uint8:
            return x.to(dtype)
        if x.is_floating_point():
            return x.to(dtype) * PIXEL_MAX
        raise InputShapeError(f"the inference model takes uint8 images (0..255) or float images (0..1), got {x.dtype}")

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.pixels(x))

    def extra_repr(self) -> str:
        return f"folded: {self.folds} (input 0..255); mean={self.mean}, std={self.std}"


def _absorb_affine(layer: nn.Module, scale: Tensor, shift: Tensor) -> None:
    """Make ``layer`` (an ``nn.Linear`` or a 1x1 ``nn.Conv2d``) compute ``layer(scale * x + shift)`` (per input
    channel): ``W diag(scale)`` and ``b + W shift``, in float64."""
    w = layer.weight.double().reshape(layer.weight.shape[0], -1)  # (out, in)
    b = layer.bias.double() if layer.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    layer.weight.copy_((w * scale.view(1, -1)).view(layer.weight.shape))
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros_like(layer.weight[:, 0].reshape(-1)), requires_grad=False)
    layer.bias.copy_(b + w @ shift)


def _fold_classifier_head(folded: nn.Module) -> str:
    """The last block's BatchNorm into the linear head, where the pooling commutes with it; what was folded."""
    # Only a linear pooling commutes with the BatchNorm's affine map: average or none (global_pool "" applies the
    # head at every position); max and avgmax pooling keep the BatchNorm.
    if isinstance(folded.head, nn.Linear) and folded.global_pool in ("avg", ""):
        last = folded.blocks[-1]
        _absorb_affine(folded.head, *_eval_bn_affine(last[3], f"blocks.{len(folded.blocks) - 1}.3"))
        last[3] = nn.Identity()
        return "final BatchNorm -> linear head"
    # num_classes == 0 (a feature extractor): no head to absorb the last BatchNorm; it stays (so with max pooling).
    return "final BatchNorm kept"


def _fold_segmentation_head(folded: nn.Module) -> str:
    """The BatchNorm right before the decode head's 1x1 conv into that conv; what was folded."""
    head = folded.decode_head
    if hasattr(head, "norm"):  # "linear": BN -> 1x1 conv -> upsampling
        _absorb_affine(head.proj, *_eval_bn_affine(head.norm, "decode_head.norm"))
        head.norm = nn.Identity()
        return "decode head's BatchNorm -> its 1x1 conv"
    last = folded.backbone.blocks[-1]  # "pixelshuffle": the 1x1 conv reads the last block's BatchNorm
    _absorb_affine(head.proj, *_eval_bn_affine(last[3], f"backbone.blocks.{len(folded.backbone.blocks) - 1}.3"))
    last[3] = nn.Identity()
    return "final BatchNorm -> decode head's 1x1 conv"


@torch.no_grad()
def fold_for_inference(model: nn.Module, mean: Sequence[float] | float,
                       std: Sequence[float] | float) -> FoldedConvMixer:
    """A new eval-mode :class:`FoldedConvMixer` computing ``model((x / 255 - mean) / std)`` on uint8 ``x``.

    ``mean``/``std`` are per-channel statistics of 0..1 pixels (as in :class:`~convmixer.inference.LoadedModel`).
    The caller's model is not changed (it may be wrapped in DDP/``torch.compile`` or run on the fast path: the copy
    gets plain layers, NCHW, fp32, eval mode, no gradients). Only ConvMixers, classifiers or segmentation models,
    can be folded (ConfigError otherwise).
    """
    from ..fast import swap_convmixer

    source = _convmixer_of(model)
    folded = copy.deepcopy(source)
    swap_convmixer(folded, "native")
    folded = folded.float().to(memory_format=torch.contiguous_format).eval().requires_grad_(False)
    mean_t = _as_channels(mean, folded.in_chans, "mean")
    std_t = _as_channels(std, folded.in_chans, "std")
    if any(not s > 0 for s in std_t):
        raise ConfigError(f"std must be positive, got {std_t}")

    conv = stem_conv(folded)
    if not isinstance(conv, nn.Conv2d) or conv.padding not in ((0, 0), "valid") or conv.groups != 1:
        raise ConfigError("the patch-embedding conv has padding or groups; the input normalization cannot be folded")
    w = conv.weight.double()
    m = torch.tensor(mean_t, dtype=torch.float64).view(1, -1, 1, 1)
    s = torch.tensor(std_t, dtype=torch.float64).view(1, -1, 1, 1)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    new_bias = bias - (w * (m / s)).sum(dim=(1, 2, 3))
    conv.weight.copy_(w / (s * PIXEL_MAX))
    if conv.bias is None:
        conv.bias = nn.Parameter(torch.zeros_like(conv.weight[:, 0, 0, 0]), requires_grad=False)
    conv.bias.copy_(new_bias)

    head = _fold_segmentation_head(folded) if is_dense(folded) else _fold_classifier_head(folded)
    out = FoldedConvMixer(folded, mean=mean_t, std=std_t, folds=f"input mean/std -> patch-embedding conv; {head}")
    out.eval()
    name = getattr(source, "registry_name", None)
    if name:
        out.registry_name = name
    return out


class InferenceModel(nn.Module):
    """A :class:`FoldedConvMixer` running on a :mod:`convmixer.fast` plan (see :func:`optimize_for_inference`).

    Takes what the folded model takes (uint8 0..255 or float 0..1) and returns float32 logits.
    """

    def __init__(self, folded: FoldedConvMixer, plan) -> None:
        super().__init__()
        self.folded = folded
        self.plan = plan

    def forward(self, x: Tensor) -> Tensor:
        x = self.plan.prepare_input(x.to(stem_conv(self.folded.model).weight.device))
        with self.plan.autocast():
            return self.folded(x).float()

    def extra_repr(self) -> str:
        return self.plan.describe()


def optimize_for_inference(model: nn.Module, mean: Sequence[float] | float, std: Sequence[float] | float, *,
                           device: str | torch.device = "cpu", batch_size: int = 256, image_size: int | None = None,
                           dtype: str = "float32", kernel: str = "auto", probe: bool = True) -> InferenceModel:
    """The fastest PyTorch inference of ``model``: :func:`fold_for_inference`, then the :mod:`convmixer.fast` plan
    for ``mode="infer"`` (own CPU kernels, channels_last, ...) for batches of ``batch_size`` at ``image_size``.

    ``dtype`` is the autocast dtype: float32 by default, because bf16 moves logits by far more than 1e-4; pass
    "bfloat16" (or "auto", the plan's choice) only if that is acceptable. ``kernel``/``probe`` go to
    :class:`~convmixer.fast.FastOptions`. The caller's model is not changed.
    """
    from ..fast import FastOptions, apply_plan, plan_execution

    folded = fold_for_inference(model, mean, std)
    size = image_size or 224
    if size < folded.patch_size:
        raise ConfigError(f"image size {size} is smaller than the patch size {folded.patch_size}")
    folded.to(device)
    options = FastOptions(dtype=dtype, kernel=kernel, probe=probe, compile=False)
    plan = plan_execution(folded.model, mode="infer", device=device,
                          input_shape=(batch_size, folded.in_chans, size, size), options=options)
    apply_plan(folded.model, plan)
    return InferenceModel(folded, plan).eval()
