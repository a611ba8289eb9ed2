"""Training-step cost of model shapes against a baseline shape, side by side: `convmixer bench --mode train` for each
shape in turn, several rounds, on the native path and on the fp32 AVX2 path emulated.

    python benchmarks/bench_step_cost.py --shape default: --shape k3:kernel_size=3 --out-dir /tmp/sb \\
        --summary benchmarks/results/zen4/k3-step-cost/summary.json

Each ``--shape LABEL:ARG=V,ARG=V`` is ``convmixer_fmnist`` with those ``--model-arg`` values (the first shape is the
baseline). The shapes alternate within each round; each run's figure is the median of ``--repeats`` steps (batch 32,
1x28x28, 2 threads, no reference); a shape's ratio is its step time over the baseline's in the same round, and the
summary keeps the per-round times, their median and the median and range of the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from convmixer.bench.machine import machine

AVX2 = {"CONVMIXER_CPU_ISA": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
ISAS = {"native": ("native (bf16 where the CPU has it)", {}),
        "avx2": ("avx2 (fp32 AVX2 emulated: " + " ".join(f"{k}={v}" for k, v in AVX2.items()) + ")", AVX2)}


def parse_shape(text: str) -> tuple[str, list[str]]:
    label, _, args = text.partition(":")
    if not label:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LABEL:ARG=V,... (LABEL: alone for the plain model)")
    return label, [a for a in args.split(",") if a]


def run_bench(shape_args: list[str], env: dict, repeats: int, out: Path) -> float:
    cmd = [sys.executable, "-m", "convmixer", "bench", "--model", "convmixer_fmnist", "--mode", "train", "--in-chans",
           "1", "--num-classes", "10", "--image-size", "28", "--batch-size", "32", "--no-memory",
           "--latency-repeats", "0", "--threads", "2", "--no-progress", "--no-reference", "--repeats", str(repeats),
           "--json-out", str(out), *sum((["--model-arg", a] for a in shape_args), [])]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, **env})
    return json.loads(out.read_text())["runs"]["fast"]["step_ms_median"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=parse_shape, action="append", required=True, help="LABEL:ARG=V,... (repeat)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--repeats", type=int, default=20, help="timed steps per run (default 20)")
    ap.add_argument("--isa", nargs="+", choices=list(ISAS), default=list(ISAS), help="paths (default both)")
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/step-cost"), help="one JSON per run here")
    ap.add_argument("--summary", type=Path, required=True, help="summary JSON to write")
    args = ap.parse_args()
    if len(args.shape) < 2:
        ap.error("give at least two --shape: the baseline first, then what is compared with it")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"what": "training step (forward, loss, backward, AdamW) of convmixer_fmnist shapes, 1x28x28, batch 32, "
               "2 threads, `convmixer bench --mode train --no-reference`; the shapes alternate, each round's step "
               f"time the median of {args.repeats} steps; ratio = per-round step time over the first shape's",
               "command": " ".join(["python benchmarks/bench_step_cost.py", *sys.argv[1:]]),
               "shapes": {label: shape_args for label, shape_args in args.shape},
               "date": time.strftime("%Y-%m-%d"), "machine": machine(), "results": {}}
    for isa in args.isa:
        name, env = ISAS[isa]
        ms = {label: [] for label, _ in args.shape}
        for r in range(1, args.rounds + 1):
            for label, shape_args in args.shape:
                ms[label].append(run_bench(shape_args, env, args.repeats, args.out_dir / f"{isa}-{label}-r{r}.json"))
        base = ms[args.shape[0][0]]
        results = {}
        for label, times in ms.items():
            ratio = [a / b for a, b in zip(times, base)]
            results[label] = {"step_ms_per_round": times, "step_ms_median": round(statistics.median(times), 1),
                              "ratio_median": round(statistics.median(ratio), 3),
                              "ratio_range": [round(min(ratio), 3), round(max(ratio), 3)]}
        summary["results"][name] = results
        print(isa, json.dumps({label: r["ratio_median"] for label, r in results.items()}), flush=True)
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    args.summary.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
