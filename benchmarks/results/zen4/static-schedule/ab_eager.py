"""In-process A/B: the layers calling the custom ops (dwconv2d, act_bn_train) directly, as before, against the eager
autograd.Functions over the same functions (ops.dwconv2d_autograd, ops.act_bn_train_autograd). Every 10 steps the
two attributes of convmixer.fast.ops that the layers call are pointed at one or the other. Default recipe, 2 threads.
Usage, from the repository root: python benchmarks/results/zen4/static-schedule/ab_eager.py 1000   [AVX2 env for fp32]
Output of 2026-12-05 (machine D): ab_eager.txt"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/: the in-run A/B of ab_kernels.py
from ab_kernels import StepAlternator, run_recipe  # noqa: E402

from convmixer.fast import ops  # noqa: E402

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
variants = [(ops.dwconv2d, ops.act_bn_train), (ops.dwconv2d_autograd, ops.act_bn_train_autograd)]


def use(i: int) -> None:
    ops.dwconv2d_autograd, ops.act_bn_train_autograd = variants[i]


use(0)
hook = StepAlternator(2, window=10, warmup=40, on_switch=use)
plan = run_recipe(hook, "fmnist_b32", [], steps, threads=2)
use(1)
print(hook.line(('custom ops', 'eager Functions'), plan))
