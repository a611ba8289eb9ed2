"""Each kernel of one training step against the machine's limits (issue 15, deliverable 3).

    python benchmarks/bench_kernels.py                                   # convmixer_fmnist's layer, fp32, native ISA
    CONVMIXER_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        python benchmarks/bench_kernels.py --threads 1 --clock cpu        # as on an AVX2-only CPU
    python benchmarks/bench_kernels.py --dtype bfloat16 --threads 1 --out /tmp/kernels.json

For the shapes of one ConvMixer layer of the training step (default: ConvMixer-128/8 k5 p2 at 28 px, batch 128, so
a (128, 128, 14, 14) activation of 12.8 MB in fp32), it times every operator the fast path runs per layer, forward
and backward, and reports its achieved memory traffic (GB/s: the bytes it must read and write at least once) and
arithmetic rate (GFLOP/s) next to two yardsticks measured in the same process:

- copy bandwidth: ``dst.copy_(src)`` of a tensor of the same size (bytes read + written per second);
- FMA peak: the kernel library's register-only FMA loop (``cmx_fma_peak``) on the same threads, and a large fp32
  matrix product as the practical peak of a dense operator.

A memory-bound kernel is near its limit when its GB/s approaches the copy bandwidth; a compute-bound one when its
GFLOP/s approaches the FMA peak. Medians over interleaved repeats; the caches are flushed before every call unless
``--hot``. JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from convmixer.bench.machine import machine
from convmixer.fast import build, ops
from convmixer.fast.allocator import tune_malloc
from convmixer.io import atomic_write

GELU = ops.ACT_CODES[torch.nn.GELU]


def timed(fn: Callable[[], object], repeats: int, clock: Callable[[], float] = time.perf_counter,
          flush: torch.Tensor | None = None) -> list[float]:
    """Times of ``repeats`` calls; with ``flush``, the caches are cleared before each (by writing that buffer)."""
    out = []
    for _ in range(repeats):
        if flush is not None:
            flush.add_(1)
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def fma_peak(threads: int, clock: Callable[[], float]) -> float:
    """GFLOP/s of the kernel library's register-only FMA loop (2 flops per lane per FMA), best of 5."""
    lib = build.load_kernels(0)
    lib.cmx_fma_peak.restype = ctypes.c_double
    iters = 2_000_000
    lib.cmx_fma_peak(ctypes.c_long(iters // 10), threads)  # warm up
    best = 0.0
    for _ in range(5):
        t0 = clock()
        flops = lib.cmx_fma_peak(ctypes.c_long(iters), threads)
        best = max(best, flops / (clock() - t0) / 1e9)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--dim", type=int, default=128, help="channels h")
    p.add_argument("--grid", type=int, default=14, help="H/p = W/p")
    p.add_argument("--kernel-size", type=int, default=5)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--hot", action="store_true",
                   help="leave the operands in cache between calls (default: flush the caches before each call, as "
                        "in a training step, where each tensor was written several operators earlier)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu: the process's CPU time (with --threads 1, robust to other jobs taking the core)")
    p.add_argument("--out", type=Path, default=None, help="write the results here as JSON")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_malloc()  # as the CLI does: large tensors reuse freed memory instead of fresh pages
    threads = torch.get_num_threads()
    dtype = getattr(torch, args.dtype)
    B, C, N, k = args.batch_size, args.dim, args.grid, args.kernel_size
    g = torch.Generator().manual_seed(0)

    def act(shape=(B, C, N, N)):
        return torch.randn(shape, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)

    x, z, res, grad = act(), act(), act(), act()
    w = torch.randn(C, 1, k, k, generator=g) * 0.2
    bias, gamma, beta = torch.randn(C, generator=g), torch.rand(C, generator=g) + 0.5, torch.randn(C, generator=g)
    pw = torch.randn(C, C, 1, 1, generator=g) * 0.1
    out, mean, var = ops.act_bn_train(z, gamma, beta, res, 1e-5, GELU)
    elems = B * C * N * N
    es = x.element_size()
    unit = elems * es  # bytes of one activation tensor
    dst = torch.empty_like(x)
    big_a, big_b = torch.randn(1024, 1024), torch.randn(1024, 1024)

    def pw_fwd():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            return F.conv2d(x, pw)

    def pw_bwd():  # input, weight and bias gradient of the 1x1 convolution (what autograd calls)
        w_ = pw.to(dtype)
        return torch.ops.aten.convolution_backward(grad, x, w_, [C], [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                                                   [True, True, True])

    # name: (function, bytes moved at least once, flops)
    kernels: dict[str, tuple[Callable[[], object], float, float]] = {
        "copy (yardstick)": (lambda: dst.copy_(x), 2 * unit, 0),
        "gemm 1024 fp32 (yardstick)": (lambda: big_a @ big_b, 3 * 1024 * 1024 * 4, 2 * 1024**3),
        "dwconv fwd": (lambda: ops.dwconv2d(x, w, bias), 2 * unit, 2 * k * k * elems),
        "dwconv input grad": (lambda: ops.dwconv2d_input_grad(grad, w), 2 * unit, 2 * k * k * elems),
        "dwconv weight grad": (lambda: ops.dwconv2d_weight_grad(grad, x, k), 2 * unit, 2 * k * k * elems),
        "act+BN fwd (+res)": (lambda: ops.act_bn_train(z, gamma, beta, res, 1e-5, GELU), 3 * unit, 0),
        "act+BN bwd": (lambda: ops.act_bn_train_backward(grad, z, gamma, mean, var, 1e-5, GELU), 3 * unit, 0),
        "1x1 conv fwd": (pw_fwd, 2 * unit, 2 * C * elems),
        "1x1 conv bwd (input + weight)": (pw_bwd, 4 * unit, 4 * C * elems),
    }
    # the operators of one layer of the step, each once: dwconv fwd/in-grad/w-grad, two act+BN fwd and bwd, the
    # 1x1 conv fwd and bwd
    per_layer = {"dwconv fwd": 1, "dwconv input grad": 1, "dwconv weight grad": 1, "act+BN fwd (+res)": 2,
                 "act+BN bwd": 2, "1x1 conv fwd": 1, "1x1 conv bwd (input + weight)": 1}
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    flush = None if args.hot else torch.zeros(64 * 2**20 // 4)  # 64 MB: more than the caches of a 2-core VM
    times: dict[str, list[float]] = {name: [] for name in kernels}
    for name, (fn, _, _) in kernels.items():  # warm up (builds the kernels, sizes the allocator)
        timed(fn, 3)
    for _ in range(args.repeats):  # interleaved: each round runs every kernel once
        for name, (fn, _, _) in kernels.items():
            times[name] += timed(fn, 1, clock, flush)
    peak = fma_peak(threads, clock)
    copy_gbs = kernels["copy (yardstick)"][1] / statistics.median(times["copy (yardstick)"]) / 1e9
    rows = []
    layer_ms = sum(statistics.median(times[n]) * 1e3 * c for n, c in per_layer.items())
    for name, (_, nbytes, flops) in kernels.items():
        t = statistics.median(times[name])
        gbs, gflops = nbytes / t / 1e9, flops / t / 1e9
        rows.append(dict(kernel=name, ms=round(t * 1e3, 3), gb_s=round(gbs, 1), gflop_s=round(gflops, 1),
                         of_copy=round(gbs / copy_gbs, 2), of_fma_peak=round(gflops / peak, 2),
                         share_of_layer=round(statistics.median(times[name]) * 1e3 * per_layer.get(name, 0)
                                              / layer_ms, 3)))
    result = dict(command="python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
                  machine=machine(), kernel_lanes=build.lanes(k), threads=threads, dtype=args.dtype,
                  shape=[B, C, N, N], kernel_size=k, caches="hot" if args.hot else "flushed", clock=args.clock, copy_gb_s=round(copy_gbs, 1), fma_peak_gflop_s=round(peak, 1),
                  layer_ms=round(layer_ms, 2), kernels=rows)
    print(f"{result['machine']['cpu']} ({result['machine']['cpu_family']}), {threads} threads, {args.dtype}, "
          f"{build.lanes(k)} lanes; activation {tuple(x.shape)} = {unit / 1e6:.1f} MB; caches {result['caches']}, "
          f"{args.clock} clock")
    print(f"copy bandwidth {copy_gbs:.1f} GB/s, FMA peak {peak:.1f} GFLOP/s; one layer fwd+bwd {layer_ms:.1f} ms")
    print(f"{'kernel':32s} {'ms':>8s} {'GB/s':>7s} {'of copy':>8s} {'GFLOP/s':>8s} {'of peak':>8s} {'of layer':>9s}")
    for r in rows:
        print(f"{r['kernel']:32s} {r['ms']:8.3f} {r['gb_s']:7.1f} {r['of_copy']:8.2f} {r['gflop_s']:8.1f} "
              f"{r['of_fma_peak']:8.2f} {r['share_of_layer']:9.1%}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(args.out, "w") as f:
            f.write(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
