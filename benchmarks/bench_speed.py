"""The speed targets of docs/RESULTS.md (speed section), measured with the harness behind ``convmixer bench``.

    python benchmarks/bench_speed.py              # the issue's target matrix, JSON to benchmarks/results/speed.json
    python benchmarks/bench_speed.py --only train --repeats 20 --out /tmp/speed.json
    python benchmarks/bench_speed.py --ablation            # also each idea on its own (training step)
    python benchmarks/bench_speed.py --onnxruntime         # also the exported models in onnxruntime (issue 6)

Each entry is one ``convmixer bench`` run (the command is printed with it): the fast path against the plain
reference (eager, NCHW, fp32) in the same process, interleaved rounds, median of per-round ratios. On a machine
with a GPU the CUDA entries run too (autocast against the autocast reference).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from pathlib import Path

import torch

from convmixer.bench import BenchConfig, format_table, run_bench
from convmixer.bench.machine import ISA_FLAGS
from convmixer.fast.allocator import tune_malloc
from convmixer.fast.hardware import cpu_family, cpu_flags, cpu_name
from convmixer.io import atomic_write

FMNIST_K9 = dict(model="convmixer_256_8_ks5_p2", model_args={"kernel_size": 9}, in_chans=1, num_classes=10,
                 image_size=28)
TARGETS = {  # name: (config, target speed ratio)
    "train 256/8 k9 p2 28px b128": (dict(FMNIST_K9, mode="train", batch_size=128), 3.0),
    "infer 256/8 k9 p2 28px b256": (dict(FMNIST_K9, mode="infer", batch_size=256), 2.5),
    "infer 1024/20 k9 p14 224px b32": (dict(model="convmixer_1024_20_ks9_p14", mode="infer", image_size=224,
                                            batch_size=32), 2.0),
}
ONNXRUNTIME = {  # issue 6: the exported model (folded, uint8 input) in onnxruntime against the same reference
    "onnxruntime convmixer_fmnist 28px b256": (dict(model="convmixer_fmnist", mode="infer", image_size=28,
                                                    batch_size=256, backend="onnxruntime"), None),
    "onnxruntime 1024/20 k9 p14 224px b32": (dict(model="convmixer_1024_20_ks9_p14", mode="infer", image_size=224,
                                                  batch_size=32, backend="onnxruntime"), None),
}
CUDA_TARGETS = {
    f"{mode} {name} 224px cuda": (dict(model=name, mode=mode, image_size=224, batch_size=64, device="cuda"), 2.0)
    for name in ("convmixer_768_32", "convmixer_1536_20") for mode in ("train", "infer")
}
ABLATION = {  # one idea at a time on the training target (kernel / memory format / dtype)
    "eager NCHW bf16": dict(kernel="native", channels_last=False, dtype="bfloat16"),
    "eager channels_last fp32": dict(kernel="native", channels_last=True, dtype="float32"),
    "eager channels_last bf16": dict(kernel="native", channels_last=True, dtype="bfloat16"),
    "own depthwise conv, channels_last bf16": dict(kernel="dwconv", dtype="bfloat16"),
    "fused kernels, fp32": dict(kernel="fused", dtype="float32"),
    "fused kernels, bf16 (auto)": dict(kernel="fused", dtype="bfloat16"),
}




def command(cfg: dict) -> str:
    """The ``convmixer bench`` command line that reproduces ``cfg``."""
    argv = ["convmixer", "bench", "--model", cfg["model"]]
    for key, value in cfg.get("model_args", {}).items():
        argv += ["--model-arg", f"{key}={value}"]
    for key in ("image_size", "batch_size", "in_chans", "num_classes", "repeats", "threads"):
        if cfg.get(key) is not None:
            argv += [f"--{key.replace('_', '-')}", str(cfg[key])]
    argv += ["--mode", cfg["mode"]]
    if cfg.get("device", "cpu") != "cpu":
        argv += ["--device", cfg["device"]]
    if cfg.get("backend", "torch") != "torch":
        argv += ["--backend", cfg["backend"]]
    for key in ("dtype", "kernel"):
        if cfg.get(key, "auto") != "auto":
            argv += [f"--{key}", cfg[key]]
    if cfg.get("channels_last") is not None:
        argv.append("--channels-last" if cfg["channels_last"] else "--no-channels-last")
    if cfg.get("compile") is not None:
        argv.append("--compile" if cfg["compile"] else "--no-compile")
    return shlex.join(argv)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/speed.json", help="JSON file to write")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int)
    p.add_argument("--only", help="run only the entries whose name contains this text")
    p.add_argument("--ablation", action="store_true", help="also time each idea alone on the training target")
    p.add_argument("--onnxruntime", action="store_true", help="also the exported models in onnxruntime")
    p.add_argument("--no-memory", action="store_true")
    args = p.parse_args(argv)
    tune_malloc()  # as every `convmixer` command does at start-up

    entries = dict(TARGETS)
    if torch.cuda.is_available():
        entries.update(CUDA_TARGETS)
    if args.onnxruntime:
        entries.update(ONNXRUNTIME)
    if args.ablation:
        base, _ = TARGETS["train 256/8 k9 p2 28px b128"]
        entries.update({f"ablation: {k}": (dict(base, **v), None) for k, v in ABLATION.items()})
    if args.only:
        entries = {k: v for k, v in entries.items() if args.only in k}
    results = []
    for name, (cfg, target) in entries.items():
        cfg = dict(cfg, repeats=args.repeats, threads=args.threads, memory=not args.no_memory)
        print(f"\n== {name}\n$ {command(cfg)}", flush=True)
        result = run_bench(BenchConfig(**cfg))
        print(format_table(result), flush=True)
        data = result.as_dict()
        met = None if target is None or data["ratio"] is None else data["ratio"] >= target
        results.append({"name": name, "command": command(cfg), "target_ratio": target, "met": met, **data})
    flags = cpu_flags()
    machine = {"platform": platform.platform(), "cpu": cpu_name(), "cores": os.cpu_count(),
               "cpu_family": cpu_family(), "isa": [f for f in ISA_FLAGS if f in flags],
               "python": sys.version.split()[0], "torch": torch.__version__,
               "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w") as f:
        json.dump({"machine": machine, "results": results}, f, indent=1)
        f.write("\n")
    print(f"\nwrote {out}")
    for r in results:
        mem = f", memory {r['memory_ratio']:.2f}x" if r.get("memory_ratio") else ""
        print(f"{r['name']:<48} {r['ratio'] or 0:6.2f}x (target {r['target_ratio'] or '-'}){mem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
