"""What the device can do: its name, native bf16, vector width. Pure queries, cached, no timing."""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class DeviceInfo:
    """The facts the planning rules look at. Tests build fake ones (e.g. ``DeviceInfo("cuda", ...)``)."""

    type: str  # "cpu" | "cuda" | anything torch.device accepts
    name: str  # CPU model or GPU name, for logs and the probe cache key
    bf16_native: bool  # bf16 arithmetic in hardware (CPU: avx512_bf16 or AMX; CUDA: sm80+)
    fp16_native: bool = False  # fp16 tensor cores (CUDA) / AMX-FP16 (CPU)
    simd512: bool = False  # CPU: AVX-512 (the depthwise kernels then run on 16 fp32 lanes natively)
    available: bool = True  # False for a CUDA device string on a machine without a GPU


def _cpuinfo(*keys: str) -> str | None:
    """The value of the first /proc/cpuinfo line whose key is one of ``keys`` (None where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in keys:
                    return value.strip()
    except OSError:
        pass
    return None


# Set to "avx2" to run as on a CPU without AVX-512, AMX or native bf16: the planner then sees no such flags and
# the own kernels are built for 8 fp32 lanes. With oneDNN's and ATen's own caps (ONEDNN_MAX_CPU_ISA=AVX2,
# ATEN_CPU_CAPABILITY=avx2, set before torch is imported) this emulates an AVX2 machine on an AVX-512 one.
ISA_ENV = "CONVMIXER_CPU_ISA"
_ABOVE_AVX2 = ("avx512", "amx", "avx_vnni", "avx10")  # flag prefixes an AVX2 cap hides


def isa_cap() -> str | None:
    """The ISA cap from ``$CONVMIXER_CPU_ISA`` ("avx2"), or None (the CPU as it is)."""
    value = os.environ.get(ISA_ENV, "").strip().lower()
    if value in ("", "native"):
        return None
    if value != "avx2":
        raise ConfigError(f"{ISA_ENV} must be avx2 or native, got {value!r}")
    return value


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where there is no such file), less those above the
    :func:`isa_cap`."""
    flags = frozenset((_cpuinfo("flags", "Features") or "").split())
    if isa_cap() == "avx2":
        flags = frozenset(f for f in flags if not f.startswith(_ABOVE_AVX2))
    return flags


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "cpu"


def cpu_family() -> str | None:
    """``family/model`` (x86): tells CPU generations apart where the name does not ("AMD EPYC")."""
    family, model = _cpuinfo("cpu family"), _cpuinfo("model")
    return f"{family}/{model}" if family is not None else None


def cpu_info() -> DeviceInfo:
    flags = cpu_flags()
    return DeviceInfo(
        type="cpu",
        name=cpu_name(),
        bf16_native=bool(flags & {"avx512_bf16", "amx_bf16"}),
        fp16_native="amx_fp16" in flags,
        simd512="avx512f" in flags,
    )


def cuda_info(index: int | None) -> DeviceInfo:
    if not torch.cuda.is_available():
        # Planning still works (rules are testable without a GPU); running on it is what fails.
        return DeviceInfo(type="cuda", name="cuda (not available)", bf16_native=True, fp16_native=True,
                          available=False)
    index = torch.cuda.current_device() if index is None else index
    major, _ = torch.cuda.get_device_capability(index)
    return DeviceInfo(type="cuda", name=torch.cuda.get_device_name(index), bf16_native=major >= 8,
                      fp16_native=major >= 7)


def device_info(device: torch.device | str) -> DeviceInfo:
    device = torch.device(device)
    if device.type == "cpu":
        return cpu_info()
    if device.type == "cuda":
        return cuda_info(device.index)
    return DeviceInfo(type=device.type, name=device.type, bf16_native=False)
