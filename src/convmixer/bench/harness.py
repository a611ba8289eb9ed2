"""The measurement harness behind ``convmixer bench``: warm-up, interleaved repeats, medians, latency, memory.

Every figure is taken against the reference in the same process: the runs are timed in alternating order, one
step each per round, and the speed ratio is the median of the per-round ratios, so load from other processes
falls on both sides alike. What is measured:

- throughput: images per second = batch size / median step time (train: forward, loss, backward, optimizer step;
  infer: forward under ``torch.inference_mode``);
- latency: the same step at batch 1, p50 and p95 over ``latency_repeats`` calls;
- peak memory of a step: the most memory a step holds beyond what was held before it (activations, gradients,
  temporaries). CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation before the step. CPU: in a fresh
  subprocess per run (glibc told to return every freed block above 64 KiB to the system, so the resident set
  follows live memory), after warm-up steps, the process's peak resident set (VmHWM, reset through
  ``/proc/self/clear_refs``) during one step minus its resident set just before it; where that reset is not
  possible, the peak resident set over the first step of the fresh process minus its resident set before it.

The settings (:class:`~convmixer.bench.settings.BenchConfig` and its checks) live in :mod:`convmixer.bench.settings`
and the runners come from :mod:`convmixer.bench.backends`; this module uses both and neither imports it back.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ..fast.allocator import trim_heap
from .backends import get_backend
from .settings import BenchConfig, check_config


@dataclass
class RunResult:
    name: str  # "fast" | "reference"
    description: str
    batch_size: int
    step_seconds: list[float]
    latency_seconds: list[float] = field(default_factory=list)
    peak_memory_bytes: int | None = None
    memory_method: str | None = None

    @property
    def images_per_s(self) -> float:
        return self.batch_size / statistics.median(self.step_seconds)

    def latency_ms(self, q: float) -> float | None:
        if not self.latency_seconds:
            return None
        return 1000 * percentile(self.latency_seconds, q)

    def as_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "images_per_s": round(self.images_per_s, 3),
            "step_ms_median": round(1000 * statistics.median(self.step_seconds), 3),
            "step_ms": [round(1000 * t, 3) for t in self.step_seconds],
            "latency_ms_p50": _round(self.latency_ms(50)),
            "latency_ms_p95": _round(self.latency_ms(95)),
            "peak_memory_bytes": self.peak_memory_bytes,
            "memory_method": self.memory_method,
        }


@dataclass
class BenchResult:
    config: BenchConfig
    resolved: dict[str, Any]  # model, input shape, batch size, device name, torch version, threads
    plan: str
    runs: dict[str, RunResult]

    def ratio(self) -> tuple[float, float, float] | None:
        """(median, min, max) of per-round (reference time / fast time); None without a reference."""
        if "reference" not in self.runs:
            return None
        r = [a / b for a, b in zip(self.runs["reference"].step_seconds, self.runs["fast"].step_seconds)]
        return statistics.median(r), min(r), max(r)

    def memory_ratio(self) -> float | None:
        fast, ref = self.runs["fast"], self.runs.get("reference")
        if ref is None or not fast.peak_memory_bytes or not ref.peak_memory_bytes:
            return None
        return fast.peak_memory_bytes / ref.peak_memory_bytes

    def as_dict(self) -> dict[str, Any]:
        ratio = self.ratio()
        return {
            **self.resolved,
            "config": self.config.as_dict(),
            "plan": self.plan,
            "runs": {name: run.as_dict() for name, run in self.runs.items()},
            "ratio": _round(ratio[0]) if ratio else None,
            "ratio_min": _round(ratio[1]) if ratio else None,
            "ratio_max": _round(ratio[2]) if ratio else None,
            "memory_ratio": _round(self.memory_ratio()),
        }


def _round(x: float | None, n: int = 4) -> float | None:
    return None if x is None else round(x, n)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated q-th percentile (0..100)."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


# ----------------------------------------------------------------------------------------------------------------
def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(runners: list, repeats: int, warmup: int, progress: bool, desc: str = "bench",
                     method: str = "step") -> dict[str, list]:
    """Seconds per ``runner.<method>()`` of each runner: ``warmup`` untimed calls each, then ``repeats`` rounds of
    one timed call per runner, the order alternating between rounds."""
    from tqdm.auto import tqdm

    total = len(runners) * (warmup + repeats)
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    with tqdm(total=total, desc=desc, unit="step", leave=False, disable=not progress, dynamic_ncols=True) as bar:
        for r in runners:
            for _ in range(warmup):
                getattr(r, method)()
                r.sync()
                bar.update()
        for i in range(repeats):
            for r in runners if i % 2 == 0 else runners[::-1]:
                t0 = time.perf_counter()
                getattr(r, method)()
                r.sync()
                times[r.name].append(time.perf_counter() - t0)
                bar.update()
    return times


def time_latency(runners: list, repeats: int, progress: bool) -> dict[str, list[float]]:
    """Seconds per batch-1 step, interleaved, after three untimed calls each; runs that cannot take batch 1
    (training-mode BatchNorm on a 1x1 feature map) get an empty list."""
    if repeats < 1:
        return {r.name: [] for r in runners}
    ok = []
    for r in runners:
        try:
            for _ in range(3):
                r.latency_step()
            r.sync()
            ok.append(r)
        except ValueError:
            pass
    times = time_interleaved(ok, repeats, 0, progress, "latency (batch 1)", "latency_step") if ok else {}
    return {r.name: times.get(r.name, []) for r in runners}


# ----------------------------------------------------------------------------------------------------------------
def _rss_status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    return out


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_step_peak(runner, warmup: int) -> tuple[int, str]:
    """(bytes, method): the peak resident memory of one step of ``runner`` beyond the memory held before it."""
    reset = False
    if warmup > 0 and _reset_peak_rss():
        for _ in range(warmup):
            runner.step()
        trim_heap()  # freed blocks the allocator kept would be reused unseen by the resident set
        reset = _reset_peak_rss()
    before = _rss_status()
    runner.step()
    after = _rss_status()
    method = "cpu: VmHWM during a step after warm-up - VmRSS before" if reset else \
        "cpu: VmHWM of a fresh process over its first step - VmRSS before"
    return max(0, after["VmHWM"] - before["VmRSS"]), method


def cuda_step_peak(runner, device) -> tuple[int, str]:
    import torch

    runner.step()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    runner.step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    return peak, "cuda: max_memory_allocated during a step - allocated before"


def memory_in_subprocess(cfg: BenchConfig, which: str) -> tuple[int | None, str | None]:
    """Run :mod:`convmixer.bench.memory` for one run in a fresh interpreter; (None, reason) if it fails."""
    payload = json.dumps({"config": cfg.as_dict(), "which": which})
    # glibc keeps freed blocks resident once its mmap threshold has adapted to them; a fixed threshold returns
    # every large block to the system when it is freed, so the resident set follows live memory
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}
    try:
        proc = subprocess.run([sys.executable, "-m", "convmixer.bench.memory", payload], capture_output=True,
                              text=True, timeout=1800, env=env)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"failed: {e}"
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"failed: {tail}"
    data = json.loads(lines[-1])
    return data["peak_memory_bytes"], data["memory_method"]


# ----------------------------------------------------------------------------------------------------------------
def run_bench(cfg: BenchConfig) -> BenchResult:
    """Measure ``cfg``'s model against the reference; see the module docstring for what is measured."""
    import torch

    check_config(cfg)
    backend = get_backend(cfg.backend)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    setup = backend.setup(cfg)
    runners = [setup.fast] + ([setup.reference] if setup.reference is not None else [])
    times = time_interleaved(runners, cfg.repeats, cfg.warmup, cfg.progress)
    latency = time_latency(runners, cfg.latency_repeats, cfg.progress)
    runs = {r.name: RunResult(r.name, r.description, setup.batch_size, times[r.name], latency[r.name])
            for r in runners}
    if cfg.memory:
        for r in runners:
            if setup.device.type == "cuda":
                runs[r.name].peak_memory_bytes, runs[r.name].memory_method = cuda_step_peak(r, setup.device)
            else:
                runs[r.name].peak_memory_bytes, runs[r.name].memory_method = memory_in_subprocess(cfg, r.name)
    resolved = {
        "model": cfg.model,
        "backend": backend.name,
        "mode": cfg.mode,
        "input_shape": list(setup.input_shape),
        "batch_size": setup.batch_size,
        "device": str(setup.device),
        "device_name": setup.device_name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    return BenchResult(cfg, resolved, setup.plan, runs)
