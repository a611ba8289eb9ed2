"""CPU inference speed of the deployment paths against the reference implementation (docs/RESULTS.md, export section).

    python benchmarks/bench_export.py                                   # both models, table + JSON
    python benchmarks/bench_export.py --models convmixer_fmnist --repeats 15 --json-out /tmp/export.json

For each model (random weights: speed does not depend on them), in one process, with the same thread count:

- reference:    the paper's ConvMixer as one plain nn.Sequential (convmixer.bench.reference), eager, NCHW, fp32,
                fed normalized float input (the normalization itself is not timed);
- fast:         the folded model on the convmixer.fast inference plan (optimize_for_inference, fp32), fed uint8;
- torchscript:  the folded model traced (native kernels), fed uint8;
- onnxruntime:  the exported ONNX file (uint8 input, CPUExecutionProvider, ORT_ENABLE_ALL), fed uint8.

Throughput is batch / median step time over ``--repeats`` interleaved rounds (the order alternates per round, so
load from other processes falls on every path alike); latency is the median (p50) of batch-1 calls. Each path's
logits are compared with the reference's on the timed batch (max |diff|), so a fast wrong path would show.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from convmixer import create_model
from convmixer.fast.hardware import cpu_info
from convmixer.models import get_model_entry

DEFAULTS = {  # model: (image size, batch size)
    "convmixer_fmnist": (28, 256),
    "convmixer_1024_20_ks9_p14": (224, 16),
}
PATHS = ("reference", "fast", "torchscript", "onnxruntime")


def build_paths(name: str, size: int, threads: int, which: tuple[str, ...]) -> tuple[dict, dict]:
    """({path: callable(uint8 batch) -> logits}, {path: description})."""
    from convmixer.export import OnnxRunner, export_onnx, fold_for_inference, optimize_for_inference
    from convmixer.export.torchscript import load_torchscript, torchscript_bytes

    torch.manual_seed(0)
    model = create_model(name).eval()
    cfg = get_model_entry(name).cfg
    mean = torch.tensor(cfg.mean).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std).view(1, -1, 1, 1)
    runs, notes = {}, {}
    if "reference" in which:
        try:
            from convmixer.bench.reference import reference_from

            ref, notes["reference"] = reference_from(model).eval(), "paper's nn.Sequential, eager NCHW fp32"
        except ImportError:  # the bench package is not there: the plain ConvMixer is the same computation
            ref, notes["reference"] = model, "plain ConvMixer, eager NCHW fp32 (convmixer.bench.reference missing)"
        runs["reference"] = lambda x: ref((x.float() / 255 - mean) / std)
    if "fast" in which:
        fast = optimize_for_inference(model, cfg.mean, cfg.std, batch_size=256, image_size=size)
        runs["fast"], notes["fast"] = fast, "folded, " + fast.plan.describe()
    folded = fold_for_inference(model, cfg.mean, cfg.std)
    if "torchscript" in which:
        script, _ = load_torchscript(torchscript_bytes(folded, image_size=size))
        runs["torchscript"], notes["torchscript"] = script, "folded, torch.jit.trace, native kernels, fp32"
    if "onnxruntime" in which:
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(folded, Path(tmp) / "model.onnx", image_size=size, metadata={"model_name": name})
            onnx_mb = path.stat().st_size / 2**20
            runner = OnnxRunner(path, threads=threads)
        import onnxruntime

        runs["onnxruntime"] = runner.torch
        notes["onnxruntime"] = (f"folded, ONNX opset 18 ({onnx_mb:.1f} MiB), onnxruntime {onnxruntime.__version__} "
                                f"CPU, {threads} intra-op threads")
    return runs, notes


def time_paths(runs: dict, x: torch.Tensor, repeats: int, warmup: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    with torch.inference_mode():
        for k in names:
            for _ in range(warmup):
                runs[k](x)
        for i in range(repeats):
            for k in names if i % 2 == 0 else names[::-1]:
                t0 = time.perf_counter()
                runs[k](x)
                times[k].append(time.perf_counter() - t0)
    return times


def bench_model(name: str, size: int, batch: int, args) -> dict:
    which = tuple(p for p in PATHS if p in args.paths)
    runs, notes = build_paths(name, size, args.threads, which)
    g = torch.Generator().manual_seed(0)
    chans = get_model_entry(name).cfg.input_size[0]
    x = torch.randint(0, 256, (batch, chans, size, size), generator=g, dtype=torch.uint8)
    with torch.inference_mode():
        logits = {k: torch.as_tensor(f(x)).float() for k, f in runs.items()}
    base = logits.get("reference")
    times = time_paths(runs, x, args.repeats, args.warmup)
    latency = time_paths(runs, x[:1], args.latency_repeats, 2) if args.latency_repeats else {k: [] for k in runs}
    out = {"model": name, "image_size": size, "batch_size": batch, "paths": {}}
    ref_ips = batch / statistics.median(times["reference"]) if "reference" in times else None
    for k in runs:
        ips = batch / statistics.median(times[k])
        out["paths"][k] = {
            "description": notes[k],
            "images_per_s": round(ips, 2),
            "step_ms_median": round(1000 * statistics.median(times[k]), 2),
            "step_ms": [round(1000 * t, 2) for t in times[k]],
            "latency_ms_p50": round(1000 * statistics.median(latency[k]), 3) if latency[k] else None,
            "vs_reference": round(ips / ref_ips, 3) if ref_ips else None,
            "max_abs_logit_diff_vs_reference": float((logits[k] - base).abs().max()) if base is not None else None,
        }
    return out


def table(results: list[dict]) -> str:
    lines = [f"{'model':<28} {'path':<12} {'batch':>5} {'images/s':>10} {'vs ref':>7} {'p50 ms@1':>9} "
             f"{'max|dlogit|':>11}"]
    for r in results:
        for k, p in r["paths"].items():
            lat = f"{p['latency_ms_p50']:.2f}" if p["latency_ms_p50"] is not None else "-"
            ratio = f"{p['vs_reference']:.2f}x" if p["vs_reference"] is not None else "-"
            d = p["max_abs_logit_diff_vs_reference"]
            diff = f"{d:.1e}" if d is not None else "-"
            lines.append(f"{r['model'] + ' ' + str(r['image_size']) + 'px':<28} {k:<12} {r['batch_size']:>5} "
                         f"{p['images_per_s']:>10.1f} {ratio:>7} {lat:>9} {diff:>11}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(DEFAULTS), help="registered model names")
    ap.add_argument("--image-size", type=int, help="override every model's image size")
    ap.add_argument("--batch-size", type=int, help="override every model's batch size")
    ap.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated subset of {','.join(PATHS)}")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds (default: 7)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls per path first (default: 2)")
    ap.add_argument("--latency-repeats", type=int, default=20, help="batch-1 calls per path (default: 20; 0: skip)")
    ap.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: torch's)")
    ap.add_argument("--json-out", help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    results = []
    for name in args.models:
        size, batch = DEFAULTS.get(name, (get_model_entry(name).cfg.input_size[1], 16))
        results.append(bench_model(name, args.image_size or size, args.batch_size or batch, args))
    report = {
        "machine": {"cpu": cpu_info().name, "avx512": cpu_info().simd512, "cpus": os.cpu_count(),
                    "threads": args.threads, "torch": torch.__version__, "python": platform.python_version()},
        "command": " ".join(["python", "benchmarks/bench_export.py", *(argv if argv is not None else sys.argv[1:])]),
        "results": results,
    }
    print(table(results))
    print(json.dumps(report))
    if args.json_out:
        from convmixer.io import atomic_write

        with atomic_write(args.json_out, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
