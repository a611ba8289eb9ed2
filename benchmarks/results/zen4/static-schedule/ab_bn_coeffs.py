"""In-process A/B of the act+BN operators' Python bodies: the coefficient math as float64 torch operators (a0653b4)
against cmx_bn_coeffs / cmx_bn_bwd_coeffs (this change). Both bodies run in convmixer.fast.ops' namespace; every
WINDOW steps the two functions' code objects are swapped. Default recipe, 2 threads. Usage, from the repository root:
    git show a0653b4:src/convmixer/fast/ops.py > /tmp/ops-a0653b4.py
    python benchmarks/results/zen4/static-schedule/ab_bn_coeffs.py /tmp/ops-a0653b4.py 1000    # [AVX2 env for fp32]
Output of 2026-12-05 (machine D): ab_bn_coeffs.txt"""
import ast, statistics, sys, tempfile, time
import torch
from convmixer.fast import ops
from convmixer.fast.allocator import tune_malloc
from convmixer.training.config import load_config
from convmixer.training.engine import Trainer

old_src, steps, window, warmup = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1500, 10, 40
tree = ast.parse(open(old_src).read())
names = ("act_bn_train", "act_bn_train_backward")
ns = dict(vars(ops))
for node in tree.body:
    if isinstance(node, ast.FunctionDef) and node.name in names:
        node.decorator_list = []
        exec(compile(ast.Module([node], []), old_src, "exec"), ns)
targets = {n: getattr(ops, n)._init_fn for n in names}
codes = [{n: ns[n].__code__ for n in names}, {n: f.__code__ for n, f in targets.items()}]
def use(i):
    for n, f in targets.items(): f.__code__ = codes[i][n]
times, win, cur, count, last = [[], []], [[], []], [0], [0], [None]
buf = []
def hook(_):
    now = time.perf_counter(); count[0] += 1
    if count[0] > warmup and last[0] is not None:
        t = (now - last[0]) * 1e3; times[cur[0]].append(t); buf.append(t)
        if len(buf) == window:
            win[cur[0]].append(statistics.median(buf)); buf.clear(); cur[0] ^= 1; use(cur[0])
    last[0] = time.perf_counter()
tune_malloc(); torch.set_num_threads(2); use(0)
with tempfile.TemporaryDirectory() as tmp:
    cfg = load_config("fmnist", [f"run.out_dir={tmp}", "run.progress=false", "run.tensorboard=false",
                                 "run.checkpoint_minutes=0", f"run.max_steps={steps}"])
    tr = Trainer(cfg, on_step=hook); tr.fit(); plan = tr.plan.describe()
use(1)
n = min(map(len, win)); r = [a / b for a, b in zip(win[0][:n], win[1][:n])]
print(f"old: {statistics.median(times[0]):.2f} ms, new: {statistics.median(times[1]):.2f} ms (median steps); "
      f"old/new per window pair: median {statistics.median(r):.3f}, range {min(r):.3f}-{max(r):.3f}, {n} pairs; {plan}")
