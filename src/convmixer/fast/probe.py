"""A quick timing probe for the cases the rules are not sure about, cached on disk.

It times one ConvMixer layer at the real shape (batch capped so a run stays well under a second) with the fused
kernels and with PyTorch's channels-last built-ins, interleaved, and keeps the fused kernels unless the built-ins
are clearly (>10%) faster, so the outcome is stable from run to run. Results live in ``cache_dir("probe.json")``,
keyed by device name (and, on CPUs, feature flags), torch version, model config, input shape, mode and dtype.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time

import torch

from ..io import atomic_write, cache_dir
from .hardware import DeviceInfo, cpu_flags

MARGIN = 0.9  # the alternative must take less than 90% of the default's time to win
MAX_ELEMENTS = 1 << 22  # activation elements per probe batch (4M: a layer's step stays in the 10-100 ms range


def cache_path():
    return cache_dir("probe.json")


def _read() -> dict:
    try:
        with open(cache_path(), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(key: str, value: dict) -> None:
    data = _read()
    data[key] = value
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)


def probe_key(info: DeviceInfo, config_key: str, mode: str, input_shape: tuple, dtype: torch.dtype | None) -> str:
    """CPUs are told apart by their feature flags too: a name such as "AMD EPYC" covers generations from AVX2-only
    to AVX-512 with bf16, on which the winner differs."""
    dt = "float32" if dtype is None else str(dtype).replace("torch.", "")
    device = info.name
    if info.type == "cpu":
        flags = " ".join(sorted(cpu_flags()))
        device += f" [{hashlib.sha256(flags.encode()).hexdigest()[:12]}]"
    return f"{device}|torch {torch.__version__}|{config_key}|{'x'.join(map(str, input_shape))}|{mode}|{dt}"


def _layer_step(layer, x, mode: str, autocast):
    with autocast:
        if mode == "train":
            out = layer(x)
            out.float().sum().backward()
        else:
            with torch.no_grad():
                layer(x)


def measure(facts, mode: str, input_shape: tuple, dtype: torch.dtype | None, kernels: tuple[str, ...],
            repeats: int = 3) -> dict[str, float]:
    """Median seconds of one layer step per kernel (channels-last, autocast ``dtype``)."""
    import contextlib

    from ..models.convmixer import convmixer_layer
    from .modules import FastMixerLayer

    b, _, h, w = input_shape
    p = max(1, facts.patch_size)
    grid_h, grid_w = max(1, h // p), max(1, w // p)
    batch = max(2, min(b, MAX_ELEMENTS // max(1, facts.dim * grid_h * grid_w)))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, facts.dim, grid_h, grid_w, generator=gen).contiguous(memory_format=torch.channels_last)
    act = facts.config.get("act", "gelu")
    layers = {}
    for kernel in kernels:
        torch.manual_seed(0)
        layer = convmixer_layer(facts.dim, facts.kernel_size, act)
        if kernel != "native":
            layer = FastMixerLayer(*layer)
            layer.kernel = kernel
        layers[kernel] = layer.to(memory_format=torch.channels_last).train(mode == "train")
    autocast = (contextlib.nullcontext() if dtype is None else torch.autocast("cpu", dtype=dtype))
    times: dict[str, list[float]] = {k: [] for k in kernels}
    for k in kernels:  # warm-up (first calls allocate and load)
        _layer_step(layers[k], x, mode, autocast)
    for _ in range(repeats):
        for k in kernels:
            t0 = time.perf_counter()
            _layer_step(layers[k], x, mode, autocast)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def probe_kernel(info: DeviceInfo, facts, mode: str, input_shape: tuple, dtype: torch.dtype | None,
                 default: str) -> tuple[str, str]:
    """(kernel, note): ``default`` unless the built-in ops are clearly faster; cached."""
    key = probe_key(info, facts.key(), mode, input_shape, dtype)
    cached = _read().get(key)
    if isinstance(cached, dict) and cached.get("kernel") in (default, "native"):
        return cached["kernel"], f"probe (cached): {cached['kernel']}"
    times = measure(facts, mode, input_shape, dtype, (default, "native"))
    kernel = "native" if times["native"] < MARGIN * times[default] else default
    _write(key, {"kernel": kernel, "seconds": {k: round(v, 6) for k, v in times.items()}})
    ratio = times["native"] / times[default]
    return kernel, f"probe: {kernel} (built-in/own time ratio {ratio:.2f})"
