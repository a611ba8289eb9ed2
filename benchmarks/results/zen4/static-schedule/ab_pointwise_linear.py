"""In-process A/B: the 1x1 convolution of each layer as PyTorch's convolution (oneDNN) against F.linear on the
channels-last (B, H, W, C) view (a GEMM). Every 10 steps the layers' pointwise call is switched."""
import statistics, sys, tempfile, time
import torch
import torch.nn.functional as F
from convmixer.fast import modules
from convmixer.fast.allocator import tune_malloc
from convmixer.training.config import load_config
from convmixer.training.engine import Trainer

def pw_linear(pw, x):
    y = F.linear(x.permute(0, 2, 3, 1), pw.weight.view(pw.out_channels, pw.in_channels), pw.bias)
    return y.permute(0, 3, 1, 2)
state = [0]
orig_forward = modules.FastMixerLayer.forward
def forward(self, x):
    if state[0] == 0:
        return orig_forward(self, x)
    pw = self[1]
    saved = pw.forward
    pw.forward = lambda t: pw_linear(pw, t)
    try:
        return orig_forward(self, x)
    finally:
        pw.forward = saved
modules.FastMixerLayer.forward = forward
steps, window, warmup = int(sys.argv[1]) if len(sys.argv) > 1 else 1000, 10, 40
times, win, count, last, buf = [[], []], [[], []], [0], [None], []
def hook(_):
    now = time.perf_counter(); count[0] += 1
    if count[0] > warmup and last[0] is not None:
        t = (now - last[0]) * 1e3; times[state[0]].append(t); buf.append(t)
        if len(buf) == window:
            win[state[0]].append(statistics.median(buf)); buf.clear(); state[0] ^= 1
    last[0] = time.perf_counter()
tune_malloc(); torch.set_num_threads(2)
with tempfile.TemporaryDirectory() as tmp:
    cfg = load_config("fmnist", [f"run.out_dir={tmp}", "run.progress=false", "run.tensorboard=false",
                                 "run.checkpoint_minutes=0", f"run.max_steps={steps}"])
    tr = Trainer(cfg, on_step=hook); tr.fit(); plan = tr.plan.describe()
n = min(map(len, win)); r = [a / b for a, b in zip(win[0][:n], win[1][:n])]
print(f"conv: {statistics.median(times[0]):.2f} ms, linear: {statistics.median(times[1]):.2f} ms (median steps); "
      f"conv/linear per window pair: median {statistics.median(r):.3f}, range {min(r):.3f}-{max(r):.3f}, {n} pairs; {plan}")
