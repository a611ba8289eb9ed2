"""The fastest correct way to run a ConvMixer: memory format, autocast dtype, own CPU kernels, torch.compile.

    plan = plan_execution(model, mode="train", device="cpu", input_shape=(128, 1, 28, 28))
    apply_plan(model, plan)                 # in place: same parameters, same state_dict keys
    model = maybe_compile(model, plan)      # after DDP wrapping, if any
    with plan.autocast():
        loss = criterion(model(plan.prepare_input(x)), y)

``FastOptions(plain=True)`` gives the straightforward path (eager, NCHW, fp32, built-in kernels). See docs/speed.md.
Importing this package does no work: kernels are compiled and the probe runs only when a plan asks for them.
"""

from __future__ import annotations

import torch
from torch import nn

from .plan import ExecutionPlan, FastOptions, convmixers_in, plan_execution

__all__ = ["FastOptions", "ExecutionPlan", "plan_execution", "apply_plan", "maybe_compile", "swap_convmixer"]


def swap_convmixer(model: nn.Module, kernel: str) -> nn.Module:
    """Give the stem and layers of every ConvMixer in ``model`` (the model itself, or one it holds: a segmentation
    model's ``backbone``, a feature extractor's ``model``) the forward of ``kernel`` ("native" restores plain
    ``nn.Sequential``).

    The child modules (and so the parameters, buffers and state_dict keys) are the same objects before and
    after. A model without a ConvMixer is returned untouched; without the kernels (no C compiler) the plain
    layers stay.
    """
    from .modules import KERNELS

    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    for target in convmixers_in(model):
        _swap_one(target, kernel)
    return model


def _swap_one(target: nn.Module, kernel: str) -> None:
    from ..models.convmixer import Residual
    from .modules import FastMixerLayer, FastStem

    if kernel != "native":
        from . import build

        if not (build.available(target.kernel_size) and build.available(0)):
            kernel = "native"  # no compiler: load_kernels has warned once; keep the built-in operators

    def rebuild(seq: nn.Sequential, cls: type[nn.Sequential]) -> nn.Sequential:
        new = nn.Sequential(*seq) if kernel == "native" else cls(*seq)
        if kernel != "native":
            new.kernel = kernel
        new.training = seq.training
        return new

    target.stem = rebuild(target.stem, FastStem)
    for i, block in enumerate(target.blocks):
        if isinstance(block, nn.Sequential) and len(block) == 4 and isinstance(block[0], Residual):
            target.blocks[i] = rebuild(block, FastMixerLayer)


def apply_plan(model: nn.Module, plan: ExecutionPlan) -> nn.Module:
    """Make ``model`` run as ``plan`` says, in place, and return it (not compiled: see :func:`maybe_compile`).

    ConvMixers (the model, or those it holds) get their stem and layers swapped for the plan's kernel; any model gets the plan's memory format.
    Parameter objects and state_dict keys do not change, so optimizers and checkpoints keep working.
    """
    swap_convmixer(model, plan.kernel)
    fmt = torch.channels_last if plan.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    if plan.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    return model


def maybe_compile(module: nn.Module, plan: ExecutionPlan) -> nn.Module:
    """``torch.compile(module)`` when the plan says so (call it after wrapping in DDP), else ``module``."""
    return torch.compile(module) if plan.compile else module
