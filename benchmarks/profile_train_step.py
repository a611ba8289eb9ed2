"""Where the real training step's time goes: torch.profiler over Trainer steps, grouped by operator.

    python benchmarks/profile_train_step.py                                   # fmnist_v2 (convmixer_fmnist), 2 threads
    CONVMIXER_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python benchmarks/profile_train_step.py --json-out avx2.json          # the fp32 path of an AVX2-only CPU

``bench_kernels.py`` times each kernel alone; this profiles the whole step the engine takes (augmentation, forward,
loss, backward, clipping, AdamW, the EMA update) after a warm-up, and sums the profiler's self CPU time into the
parts of a ConvMixer step. The own kernels are called through ctypes, so their time is the self time of the
operator around the call: in eager mode the layers' ``torch.autograd.Function``\\ s (``_ActBnTrain``, ``_DwConv2d``
and their ``...Backward`` nodes, which hold both depthwise gradients); where the ``torch.library`` custom ops run
instead (before 2026-12-05, or traced), a custom op's forward is recorded under torch's generated autograd function
(``GeneratedBackwardFor_convmixer_<op>_default``), its backward kernels under their own names. The profiler adds
a few microseconds to each of the step's ~3,000 small operator calls, so "the rest" is an upper bound.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from torch.profiler import ProfilerActivity, profile

from convmixer.bench.machine import machine
from convmixer.training.engine import Trainer
from recipe_steps import add_recipe_args, prepare_process, step_config

# operator name -> part of the step; everything else is "the rest" (optimizer, EMA, loss, per-channel statistics,
# data, dispatch)
PARTS = {
    "aten::mkldnn_convolution": "1x1 and stem convolutions, forward",
    "aten::convolution_backward": "1x1 and stem convolutions, backward",
    "_ActBnTrain": "act + BN (+ residual), forward",
    "_ActBnTrainBackward": "act + BN (+ residual), backward",
    "_DwConv2d": "depthwise conv, forward",
    "_DwConv2dBackward": "depthwise conv, input and weight gradients",
    "GeneratedBackwardFor_convmixer_act_bn_train_default": "act + BN (+ residual), forward",
    "convmixer::act_bn_train_backward": "act + BN (+ residual), backward",
    "GeneratedBackwardFor_convmixer_dwconv2d_default": "depthwise conv, forward",
    "convmixer::dwconv2d_input_grad": "depthwise conv, input gradient",
    "convmixer::dwconv2d_weight_grad": "depthwise conv, weight gradient",
    "Optimizer.step#AdamW.step": "AdamW step (own time)",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_recipe_args(ap)
    ap.add_argument("--warmup", type=int, default=60, help="steps before profiling (default 60)")
    ap.add_argument("--steps", type=int, default=60, help="steps profiled (default 60)")
    ap.add_argument("--json-out", help="also write the parts and the machine as JSON here")
    args = ap.parse_args()
    if args.warmup < 3 or args.steps < 1:
        ap.error("--warmup must be at least 3 and --steps at least 1")
    prepare_process(args.threads)
    stamps: list[float] = []
    prof = profile(activities=[ProfilerActivity.CPU])

    def on_step(_) -> None:
        stamps.append(time.perf_counter())
        if len(stamps) == args.warmup:
            prof.__enter__()
        elif len(stamps) == args.warmup + args.steps:
            prof.__exit__(None, None, None)

    with tempfile.TemporaryDirectory(prefix="convmixer-profile-") as tmp:
        cfg = step_config(args.config, args.set, tmp, args.warmup + args.steps + 1)
        Trainer(cfg, on_step=on_step).fit()
    skip = min(10, args.warmup // 2)  # the first steps build kernels and warm the allocator
    warm = [b - a for a, b in zip(stamps[skip:args.warmup - 1], stamps[skip + 1:args.warmup])]
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    parts: dict[str, float] = {}
    for e in events:
        part = PARTS.get(e.key, "the rest")
        parts[part] = parts.get(part, 0.0) + e.self_cpu_time_total
    ms = {k: v / 1000 / args.steps for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}
    print(f"median step without the profiler: {1000 * statistics.median(warm):.1f} ms (steps {skip}-{args.warmup})")
    print(f"profiled: {total / 1000 / args.steps:.1f} ms a step, of which")
    for part, value in ms.items():
        print(f"  {value:6.2f} ms  {100 * value * 1000 * args.steps / total:5.1f}%  {part}")
    print(events.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=55))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"config": args.config, "overrides": args.set, "threads": args.threads,
                       "batch_size": cfg.data.batch_size, "steps": args.steps,
                       "step_ms_unprofiled": round(1000 * statistics.median(warm), 2),
                       "step_ms_profiled": round(total / 1000 / args.steps, 2),
                       "parts_ms": {k: round(v, 3) for k, v in ms.items()}, "machine": machine()}, f, indent=1)


if __name__ == "__main__":
    main()
