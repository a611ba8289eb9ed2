"""In-process A/B: the 1x1 convolution of each layer as PyTorch's convolution (oneDNN) against F.linear on the
channels-last (B, H, W, C) view (a GEMM). Every 10 steps the layers' pointwise call is switched.
Usage, from the repository root, with the AVX2 environment: python benchmarks/results/zen4/static-schedule/ab_pointwise_linear.py 800
Output of 2026-12-05 (machine D): ab_pointwise_linear.txt"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/: the in-run A/B of ab_kernels.py
from ab_kernels import StepAlternator, run_recipe  # noqa: E402

import torch.nn.functional as F  # noqa: E402

from convmixer.fast import modules  # noqa: E402

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
state = [0]  # 0: the layers' own 1x1 convolution, 1: F.linear on the (B, H, W, C) view
conv_forward = modules.FastMixerLayer.forward


def pw_linear(pw, x):
    y = F.linear(x.permute(0, 2, 3, 1), pw.weight.view(pw.out_channels, pw.in_channels), pw.bias)
    return y.permute(0, 3, 1, 2)


def forward(self, x):
    if state[0] == 0:
        return conv_forward(self, x)
    pw = self[1]
    saved = pw.forward
    pw.forward = lambda t: pw_linear(pw, t)
    try:
        return conv_forward(self, x)
    finally:
        pw.forward = saved


def use(i: int) -> None:
    state[0] = i


modules.FastMixerLayer.forward = forward
hook = StepAlternator(2, window=10, warmup=40, on_switch=use)
print(hook.line(('conv', 'linear'), run_recipe(hook, "fmnist_b32", [], steps, threads=2)))
