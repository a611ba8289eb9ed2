"""What the step benchmarks share: the recipe they train and how the process is set up for it.

``bench_train_steps.py``, ``ab_kernels.py`` and ``profile_train_step.py`` all time real ``Trainer`` steps of a
shipped recipe. They take the same ``--config``/``--set``/``--threads`` arguments and build the same config:
every step at the full image size (progressive resizing off unless ``--set`` turns it back on), nothing written
but a temporary run directory, and the run stopped after the steps the benchmark asks for.

    from recipe_steps import add_recipe_args, prepare_process, step_config   # from the benchmarks/ directory
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from convmixer.fast.allocator import tune_malloc
from convmixer.training.config import TrainConfig, load_config

DEFAULT_CONFIG = "fmnist_v2"  # the patch-2 model of issue 15's step figures (docs/RESULTS.md, Time to accuracy)


def add_recipe_args(ap: argparse.ArgumentParser) -> None:
    """``--config``, ``--set`` (repeatable KEY=VALUE overrides) and ``--threads``."""
    ap.add_argument("--config", default=DEFAULT_CONFIG,
                    help=f"recipe (default {DEFAULT_CONFIG}: the patch-2 model of issue 15's step figures); "
                         "progressive resizing is off unless --set turns it on, so every step has the full image size")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")


def prepare_process(threads: int) -> None:
    """Set the process up as ``convmixer train`` does: the allocator tuning, then ``threads`` intra-op threads."""
    tune_malloc()
    torch.set_num_threads(threads)


def step_config(config: str, overrides: list[str], out_dir: str | Path, max_steps: int) -> TrainConfig:
    """``config`` with ``overrides`` for ``max_steps`` optimizer steps, writing only under ``out_dir``."""
    return load_config(config, ["schedule.resize_from=0", *overrides, f"run.out_dir={out_dir}", "run.progress=false",
                                "run.tensorboard=false", "run.checkpoint_minutes=0", f"run.max_steps={max_steps}"])
