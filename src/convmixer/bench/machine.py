"""The machine a measurement comes from, and a yardstick of how fast it was at the time."""

from __future__ import annotations

import platform
import time
from typing import Any

import torch


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "amx_bf16")  # what decides the CPU kernels


def gemm_gflops(size: int = 1024, repeats: int = 10) -> float:
    """fp32 matrix-product speed (GFLOP/s, median of ``repeats``) on this process's threads and ISA: a yardstick
    for how fast the machine was while a recipe ran."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * size**3 / sorted(times)[len(times) // 2] / 1e9


def machine() -> dict[str, Any]:
    """The CPU and software a measurement comes from."""
    from ..fast import build
    from ..fast.hardware import cpu_family, cpu_flags, cpu_name, isa_cap

    flags = cpu_flags()
    wide = [f for f in ISA_FLAGS if f in flags]
    return {"cpu": cpu_name(), "cpu_family": cpu_family(), "flags": wide, "isa_cap": isa_cap(),
            "aten_capability": torch.backends.cpu.get_cpu_capability(), "kernel_lanes": build.lanes(0),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}
