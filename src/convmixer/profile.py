"""Static cost of a model: parameters, multiply-accumulates, FLOPs and activation memory per image; and
:func:`peak_cpu_memory`, the measured peak of the CPU allocator while a function runs.

FLOPs are counted by ``torch.utils.flop_counter`` on a real forward pass, so depthwise convolutions are
included (timm's and mmpretrain's published GMACs leave them out). For ConvMixer the count equals the
closed form ``N*(C_in*p^2*h + d*(k^2*h + h^2)) + h*n`` MACs with N = (H/p)*(W/p), which
:func:`convmixer_macs` computes and the tests compare against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class ModelProfile:
    params: int  # trainable parameters
    macs: int  # multiply-accumulates per image (forward, convs and linear layers)
    flops: int  # floating-point operations per image (forward) = 2 * macs
    activation_bytes: int  # tensors saved for backward per image (training memory beyond weights), fp32
    input_size: tuple[int, int, int]  # (C, H, W)

    def as_dict(self) -> dict:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def convmixer_macs(dim: int, depth: int, kernel_size: int, patch_size: int, num_classes: int, in_chans: int,
                   image_size: int | tuple[int, int]) -> int:
    """Closed-form multiply-accumulates of one ConvMixer forward pass."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    n = (h // patch_size) * (w // patch_size)
    return n * (in_chans * patch_size**2 * dim + depth * (kernel_size**2 * dim + dim**2)) + dim * num_classes


def convmixer_params(dim: int, depth: int, kernel_size: int, patch_size: int, num_classes: int, in_chans: int = 3) -> int:
    """Closed-form parameter count (convs with bias, BN weight and bias, linear head)."""
    stem = in_chans * patch_size**2 * dim + dim + 2 * dim
    layer = dim * kernel_size**2 + dim + 2 * dim + dim * dim + dim + 2 * dim
    return stem + depth * layer + dim * num_classes + num_classes


def _saved_activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of distinct tensors autograd keeps for backward, parameters excluded."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in param_ptrs:
            seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outputs = model(x)  # a segmenter with auxiliary heads returns (main, *aux) in training mode
        sum(o.sum() for o in (outputs if isinstance(outputs, tuple) else (outputs,)))
    return sum(seen.values())


def _flop_formulas() -> dict:
    """torch's formulas plus the CPU attention kernel, which its registry misses (ViT baselines)."""
    from torch.utils.flop_counter import flop_registry, sdpa_flop_count

    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is None or cpu_sdpa in flop_registry:
        return {}

    def attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    return {cpu_sdpa: attention_flops}


def profile_model(model: nn.Module, input_size: tuple[int, int, int]) -> ModelProfile:
    """Measure ``model`` on one (1, C, H, W) image; the model's train/eval mode is restored afterwards."""
    was_training = model.training
    buffers = {name: b.clone() for name, b in model.named_buffers()}  # training-mode BN updates running stats
    try:
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_flop_formulas()) as counter:
            model(torch.zeros(1, *input_size))
        flops = int(counter.get_total_flops())
        model.train()
        batch = 2  # BatchNorm needs more than one value per channel in training mode
        act = _saved_activation_bytes(model, torch.zeros(batch, *input_size, requires_grad=False)) // batch
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
    return ModelProfile(count_params(model), flops // 2, flops, act, tuple(input_size))


def peak_cpu_memory(fn: Callable[[], object]) -> int:
    """Bytes the CPU allocator held at its peak while ``fn()`` ran, above what it held when ``fn`` started.

    Measured, not estimated: ``torch.profiler`` with ``profile_memory=True`` records every allocation and free of
    torch's CPU allocator; the running sum of those, in time order, peaks at the answer. It counts tensors only
    (not Python objects), and only on the CPU.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
                    and e.device_type() == torch.autograd.DeviceType.CPU)
    held = peak = 0
    for _, nbytes in events:
        held += nbytes
        peak = max(peak, held)
    return peak
