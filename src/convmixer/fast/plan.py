"""Choosing how to run a model: memory format, autocast dtype, depthwise kernel, torch.compile.

Rules come first (:func:`rules`, a pure function of the device facts, the model and the mode, unit-tested with fake
devices); the timing probe of :mod:`convmixer.fast.probe` is consulted only where the rules are not sure.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError
from .hardware import DeviceInfo

MODES = ("train", "infer")
# the autocast dtype of each dtype option (None: autocast off; "auto" is decided by the rules)
DTYPES = {"auto": None, "float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
KERNEL_CHOICES = ("auto", "native", "dwconv", "fused")
# On CUDA (timm's published GPU benchmarks): channels_last and torch.compile help the k=7 model (1.9x, 2.7x)
# and hurt the k=9 ones (2-3x slower, 2x slower). Kernel sizes up to this one get both.
CUDA_FAST_MAX_KERNEL = 7


@dataclass(frozen=True)
class FastOptions:
    """User overrides; None / "auto" lets the rules (or the probe) decide."""

    plain: bool = False  # force the straightforward path: eager, NCHW, fp32, built-in kernels
    channels_last: bool | None = None
    dtype: str = "auto"  # "auto" | "float32" | "bfloat16" | "float16"  (autocast dtype)
    compile: bool | None = None
    kernel: str = "auto"  # "auto" | "native" | "dwconv" (own depthwise conv) | "fused" (+ fused act/BN/residual)
    probe: bool = True  # allow the quick, cached timing probe where the rules are not sure

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.kernel not in KERNEL_CHOICES:
            raise ConfigError(f"unknown kernel {self.kernel!r}; choose one of {', '.join(KERNEL_CHOICES)}")


@dataclass(frozen=True)
class ExecutionPlan:
    device: str
    mode: str  # "train" | "infer"
    channels_last: bool
    autocast_dtype: torch.dtype | None
    compile: bool
    kernel: str  # "native" | "dwconv" | "fused"
    reason: str
    cudnn_benchmark: bool = False

    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast(device_type, dtype)``, or a null context for fp32."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=self.autocast_dtype)

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """The memory format the plan wants (and nothing else: no normalization, no dtype change)."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def describe(self) -> str:
        dtype = str(self.autocast_dtype).replace("torch.", "") if self.autocast_dtype else "float32"
        fmt = "channels_last" if self.channels_last else "NCHW"
        return (f"{self.mode} on {self.device}: {fmt}, {dtype}, kernel={self.kernel}, "
                f"compile={'on' if self.compile else 'off'} ({self.reason})")

    @property
    def plain(self) -> bool:
        return (not self.channels_last and self.autocast_dtype is None and not self.compile
                and self.kernel == "native")


@dataclass(frozen=True)
class ModelFacts:
    """What the rules need to know about a model."""

    convmixer: bool
    kernel_size: int = 0
    dim: int = 0
    patch_size: int = 1
    convnet: bool = False  # has spatial convolutions (channels_last helps)
    config: dict = field(default_factory=dict, compare=False)

    def key(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.config.items()))


@dataclass
class Choice:
    channels_last: bool
    dtype: torch.dtype | None
    compile: bool
    kernel: str
    reasons: list[str]
    unsure: bool = False  # the probe may settle the kernel


def rules(info: DeviceInfo, facts: ModelFacts, mode: str, kernels_ok: bool = True) -> Choice:
    """The rule-based choice for a device, a model and a mode ("train" | "infer")."""
    if info.type == "cpu":
        dtype = torch.bfloat16 if info.bf16_native else None
        why = ["bf16: native on this CPU" if dtype else "fp32: no native bf16 on this CPU"]
        if not facts.convmixer:
            return Choice(facts.convnet, dtype, False, "native", why + ["not a ConvMixer: built-in kernels"])
        if not kernels_ok:
            return Choice(True, dtype, False, "native", why + ["no C compiler: built-in kernels, channels_last"])
        unsure = not info.simd512 or facts.kernel_size < 5
        why.append("fused CPU kernels" + (" (probe decides: small kernel or no AVX-512)" if unsure else ""))
        why.append("no compile (no gain over the fused kernels, ~1 min to compile)")
        return Choice(True, dtype, False, "fused", why, unsure)
    if info.type == "cuda":
        dtype = torch.bfloat16 if info.bf16_native else torch.float16
        why = [f"autocast {str(dtype).replace('torch.', '')}"]
        if not facts.convmixer:
            return Choice(facts.convnet, dtype, False, "native", why + ["not a ConvMixer"])
        small = facts.kernel_size <= CUDA_FAST_MAX_KERNEL
        why.append(f"k={facts.kernel_size}: " + ("channels_last + compile" if small else "NCHW, no compile"))
        return Choice(small, dtype, small, "native", why)
    return Choice(False, None, False, "native", [f"{info.type}: plain path"])


def convmixers_in(model: nn.Module) -> list[nn.Module]:
    """The ConvMixers in ``model`` (inside DDP/compile wrappers): the model itself, or those it holds as submodules
    (a segmentation model's ``backbone``, a feature extractor's ``model``), outermost first."""
    from ..models.convmixer import ConvMixer

    model = unwrap(model)
    if isinstance(model, ConvMixer):
        return [model]
    return [m for m in model.modules() if isinstance(m, ConvMixer)]


def model_facts(model: nn.Module) -> ModelFacts:
    """A ConvMixer, or a model built around one (its first ConvMixer decides: a segmentation model's backbone), is
    planned as a ConvMixer; anything else by its convolutions."""
    model = unwrap(model)
    found = convmixers_in(model)
    if found:
        m = found[0]
        return ModelFacts(True, m.kernel_size, m.dim, m.patch_size, True, m.config())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    name = getattr(model, "registry_name", type(model).__name__)
    return ModelFacts(False, convnet=len(convs) > 1, config={"model": name})


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _dtype_name(dtype: torch.dtype | None) -> str:
    return "float32" if dtype is None else str(dtype).replace("torch.", "")


def plan_execution(model: nn.Module, *, mode: str, device: torch.device | str,
                   input_shape: tuple[int, int, int, int], options: FastOptions = FastOptions()) -> ExecutionPlan:
    """The fastest correct way to run ``model`` for ``mode`` on ``device`` with batches of ``input_shape``."""
    from . import build
    from .hardware import device_info
    from .modules import KERNELS

    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if len(input_shape) != 4:
        raise ConfigError(f"input_shape must be (B, C, H, W), got {tuple(input_shape)}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"bad device {device!r}: {e}") from None
    name = str(dev)
    if options.plain:
        return ExecutionPlan(name, mode, False, None, False, "native", "plain path forced")

    info = device_info(dev)
    facts = model_facts(model)
    on_cpu = info.type == "cpu"
    wants_kernels = on_cpu and facts.convmixer and options.kernel not in ("native",)
    kernels_ok = wants_kernels and build.available(facts.kernel_size) and build.available(0)
    choice = rules(info, facts, mode, kernels_ok or not wants_kernels)

    reasons = list(choice.reasons)
    kernel = choice.kernel
    if options.kernel != "auto":
        kernel = options.kernel
        reasons.append(f"kernel={kernel} forced")
        if kernel != "native" and not (on_cpu and facts.convmixer):
            kernel = "native"
            reasons.append("own kernels are for ConvMixer on the CPU: native")
        elif kernel != "native" and not kernels_ok:
            kernel = "native"
            reasons.append(f"own kernels unavailable ({build.build_error(facts.kernel_size) or build.build_error(0)})")
    elif choice.unsure and options.probe and kernel in KERNELS[1:]:
        from .probe import probe_kernel

        dtype = choice.dtype if options.dtype == "auto" else DTYPES[options.dtype]
        kernel, note = probe_kernel(info, facts, mode, tuple(input_shape), dtype, default=kernel)
        reasons.append(note)

    channels_last = choice.channels_last if options.channels_last is None else options.channels_last
    if options.channels_last is not None:
        reasons.append(f"channels_last={'on' if channels_last else 'off'} forced")
    dtype = choice.dtype if options.dtype == "auto" else DTYPES[options.dtype]
    if options.dtype != "auto":
        reasons.append(f"dtype {_dtype_name(dtype)} forced")
    compile_ = choice.compile if options.compile is None else options.compile
    if options.compile is not None:
        reasons.append(f"compile {'on' if compile_ else 'off'} forced")
    return ExecutionPlan(name, mode, channels_last, dtype, compile_, kernel, "; ".join(reasons),
                         cudnn_benchmark=info.type == "cuda")
