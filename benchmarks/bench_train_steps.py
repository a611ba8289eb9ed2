"""Training speed of the real training loop over time: images/s of ``Trainer`` steps in windows of 200 steps.

    python benchmarks/bench_train_steps.py                       # fmnist_v2, 600 steps (2 windows), 2 threads
    python benchmarks/bench_train_steps.py --steps 1875 --set model.act=relu

``convmixer bench`` times forward + backward + AdamW on one fixed batch; this runs the whole step the engine
takes (augmentation, loss, gradient clipping, the EMA update, the statistics' host sync) on the recipe's own data,
and shows whether the speed holds over a run. On a shared virtual machine it need not: the machine's speed can
change under a steady job (docs/RESULTS.md, machine D), which the matrix-product yardstick before and after
also shows. Prints one line per complete window (a trailing partial one is left out) and a JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from convmixer.bench.machine import gemm_gflops, machine
from convmixer.training.engine import Trainer
from recipe_steps import add_recipe_args, prepare_process, step_config

WINDOW = 200  # steps per reported median


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_recipe_args(ap)
    ap.add_argument("--steps", type=int, default=600, help="optimizer steps to run (default 600)")
    args = ap.parse_args()
    if args.steps <= WINDOW:
        ap.error(f"--steps must be more than {WINDOW}: speeds are medians over complete windows of {WINDOW} steps")
    prepare_process(args.threads)
    before = gemm_gflops()
    stamps: list[float] = []
    with tempfile.TemporaryDirectory(prefix="convmixer-steps-") as tmp:
        cfg = step_config(args.config, args.set, tmp, args.steps)
        trainer = Trainer(cfg, on_step=lambda _: stamps.append(time.perf_counter()))
        batch = cfg.data.batch_size  # per step (one process, no accumulation here)
        trainer.fit()
    windows = []
    for start in range(0, len(stamps) - WINDOW, WINDOW):
        gaps = [b - a for a, b in zip(stamps[start:start + WINDOW], stamps[start + 1:start + WINDOW + 1])]
        windows.append(round(batch / statistics.median(gaps), 1))
        print(f"steps {start:>5}-{start + WINDOW:<5} {windows[-1]:7.1f} img/s (median step)")
    print(json.dumps({"config": args.config, "overrides": args.set, "threads": args.threads, "batch_size": batch,
                      "window_steps": WINDOW, "images_per_s": windows, "machine": machine(),
                      "gemm_gflops": {"before": round(before, 1), "after": round(gemm_gflops(), 1)}}))


if __name__ == "__main__":
    main()
