"""In-process A/B: the layers calling the custom ops (dwconv2d, act_bn_train) directly, as before, against the eager
autograd.Functions over the same functions (ops.dwconv2d_autograd, ops.act_bn_train_autograd). Every 10 steps the
two attributes of convmixer.fast.ops that the layers call are pointed at one or the other. Default recipe, 2 threads.
Usage, from the repository root: python benchmarks/results/zen4/static-schedule/ab_eager.py 1000   [AVX2 env for fp32]
Output of 2026-12-05 (machine D): ab_eager.txt"""
import statistics, sys, tempfile, time
import torch
from convmixer.fast import ops
from convmixer.fast.allocator import tune_malloc
from convmixer.training.config import load_config
from convmixer.training.engine import Trainer

steps, window, warmup = int(sys.argv[1]) if len(sys.argv) > 1 else 1000, 10, 40
variants = [(ops.dwconv2d, ops.act_bn_train), (ops.dwconv2d_autograd, ops.act_bn_train_autograd)]
def use(i):
    ops.dwconv2d_autograd, ops.act_bn_train_autograd = variants[i]
times, win, cur, count, last, buf = [[], []], [[], []], [0], [0], [None], []
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
print(f"custom ops: {statistics.median(times[0]):.2f} ms, eager Functions: {statistics.median(times[1]):.2f} ms (median steps); "
      f"ops/eager per window pair: median {statistics.median(r):.3f}, range {min(r):.3f}-{max(r):.3f}, {n} pairs; {plan}")
