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

import torch

from convmixer.bench.machine import gemm_gflops, machine
from convmixer.fast.allocator import tune_malloc
from convmixer.training.config import load_config
from convmixer.training.engine import Trainer

WINDOW = 200  # steps per reported median


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="fmnist_v2",
                    help="recipe (default fmnist_v2: the patch-2 model of issue 15's step figures); progressive "
                         "resizing is off unless --set turns it on, so every step has the full image size")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--steps", type=int, default=600, help="optimizer steps to run (default 600)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    args = ap.parse_args()
    if args.steps <= WINDOW:
        ap.error(f"--steps must be more than {WINDOW}: speeds are medians over complete windows of {WINDOW} steps")
    tune_malloc()  # as the CLI does
    torch.set_num_threads(args.threads)
    before = gemm_gflops()
    stamps: list[float] = []
    with tempfile.TemporaryDirectory(prefix="convmixer-steps-") as tmp:
        cfg = load_config(args.config, ["schedule.resize_from=0", *args.set, f"run.out_dir={tmp}",
                                        "run.progress=false", "run.tensorboard=false", "run.checkpoint_minutes=0",
                                        f"run.max_steps={args.steps}"])
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
