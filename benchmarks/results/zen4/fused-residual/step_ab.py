"""The default model's training step (forward + backward, batch B, T threads) with the fused residual-branch backward
of fused-residual-backward.patch on and off, in one process, interleaved; CPU time per step, medians of R rounds of
N steps. Apply the patch first (git apply benchmarks/results/zen4/fused-residual/fused-residual-backward.patch);
"old" runs the residual branch as the separate operators of the unpatched code. BF=1: bf16 autocast.
Environment: T (threads, 1), B (batch, 128), R (rounds, 8), N (steps per round, 5), BF (0)."""
import os
import statistics
import time

import torch
import torch.nn.functional as F

from convmixer.fast import modules, ops, swap_convmixer
from convmixer.fast.allocator import tune_malloc
from convmixer.models import build_registered

print("malloc tuned", tune_malloc())
torch.set_num_threads(int(os.environ.get("T", "1")))
B, bf = int(os.environ.get("B", "128")), os.environ.get("BF", "0") == "1"
torch.manual_seed(0)
model = build_registered("convmixer_fmnist", in_chans=1, num_classes=10)
model = swap_convmixer(model, "fused").to(memory_format=torch.channels_last).train()
x, y = torch.randn(B, 1, 28, 28), torch.randint(0, 10, (B,))
fused = modules.residual_act_bn_train


def separate(xin, dw, code, bn):
    return modules.act_bn(ops.dwconv2d(xin, dw.weight, dw.bias), code, bn, residual=xin)


def step():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    model.zero_grad(set_to_none=True)


def timed(n):
    t, w = time.process_time(), time.perf_counter()
    for _ in range(n):
        step()
    return (time.process_time() - t) / n * 1000, (time.perf_counter() - w) / n * 1000


variants = {"fused": fused, "old": separate}
res = {v: [] for v in variants}
for v in variants:  # warm-up
    modules.residual_act_bn_train = variants[v]
    step(), step()
for r in range(int(os.environ.get("R", "8"))):
    for v in (("fused", "old") if r % 2 == 0 else ("old", "fused")):
        modules.residual_act_bn_train = variants[v]
        res[v].append(timed(int(os.environ.get("N", "5"))))
for v, xs in res.items():
    print(v, "cpu ms/step median", round(statistics.median(a for a, _ in xs), 1),
          "wall", round(statistics.median(b for _, b in xs), 1))
print("ratio old/fused (cpu):", round(statistics.median(a for a, _ in res["old"])
                                      / statistics.median(a for a, _ in res["fused"]), 3))
