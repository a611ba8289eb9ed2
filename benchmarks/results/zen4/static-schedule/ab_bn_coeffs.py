"""In-process A/B of the act+BN operators' Python bodies: the coefficient math as float64 torch operators (a0653b4)
against cmx_bn_coeffs / cmx_bn_bwd_coeffs (this change). Both bodies run in convmixer.fast.ops' namespace; every
WINDOW steps the two functions' code objects are swapped. Default recipe, 2 threads. Usage, from the repository root:
    git show a0653b4:src/convmixer/fast/ops.py > /tmp/ops-a0653b4.py
    python benchmarks/results/zen4/static-schedule/ab_bn_coeffs.py /tmp/ops-a0653b4.py 1000    # [AVX2 env for fp32]
Output of 2026-12-05 (machine D): ab_bn_coeffs.txt"""
import ast

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/: the in-run A/B of ab_kernels.py
from ab_kernels import StepAlternator, run_recipe  # noqa: E402

from convmixer.fast import ops  # noqa: E402

old_src, steps = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1500
names = ("act_bn_train", "act_bn_train_backward")
namespace = dict(vars(ops))
for node in ast.parse(Path(old_src).read_text()).body:
    if isinstance(node, ast.FunctionDef) and node.name in names:
        node.decorator_list = []
        exec(compile(ast.Module([node], []), old_src, "exec"), namespace)
# the functions the custom ops call (the Python bodies before the eager path existed); their code objects are swapped
targets = {n: getattr(ops, n)._init_fn for n in names}
codes = [{n: namespace[n].__code__ for n in names}, {n: f.__code__ for n, f in targets.items()}]


def use(i: int) -> None:
    for n, f in targets.items():
        f.__code__ = codes[i][n]


use(0)
hook = StepAlternator(2, window=10, warmup=40, on_switch=use)
plan = run_recipe(hook, "fmnist_b32", [], steps, threads=2)
use(1)
print(hook.line(('old', 'new'), plan))
