"""Text table of a :class:`~convmixer.bench.harness.BenchResult`."""

from __future__ import annotations

from .harness import BenchResult


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(result: BenchResult) -> str:
    r = result.resolved
    shape = "x".join(map(str, r["input_shape"][1:]))
    lines = [
        f"model      {r['model']}  input {shape}  batch {r['batch_size']}  mode {r['mode']}  backend {r['backend']}",
        f"device     {r['device']} ({r['device_name']}), {r['threads']} threads, torch {r['torch']}",
        f"plan       {result.plan}",
        "",
        f"{'run':<10} {'images/s':>10} {'ms/step':>10} {'p50 ms@1':>9} {'p95 ms@1':>9} {'peak MiB':>9} {'speed':>7}",
    ]
    ratio = result.ratio()
    for name, run in result.runs.items():
        mem = None if run.peak_memory_bytes is None else run.peak_memory_bytes / 2**20
        speed = (f"{ratio[0]:.2f}x" if name == "fast" else "1.00x") if ratio else "-"
        lines.append(f"{name:<10} {run.images_per_s:>10.1f} {1000 * run.batch_size / run.images_per_s:>10.1f} "
                     f"{_fmt(run.latency_ms(50), '.2f'):>9} {_fmt(run.latency_ms(95), '.2f'):>9} "
                     f"{_fmt(mem, '.1f'):>9} {speed:>7}")
    if ratio:
        lines.append(f"\nspeed vs reference: {ratio[0]:.2f}x (median of {len(result.runs['fast'].step_seconds)} "
                     f"interleaved rounds; range {ratio[1]:.2f}-{ratio[2]:.2f})")
    mem_ratio = result.memory_ratio()
    if mem_ratio is not None:
        lines.append(f"peak step memory vs reference: {mem_ratio:.2f}x")
    return "\n".join(lines)
