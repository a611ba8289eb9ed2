"""``convmixer bench``: speed of a model on the fast path against the plain reference, in the same process."""

from __future__ import annotations

import argparse
import json


def _model_arg(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed: object = json.loads(value)
    except ValueError:
        parsed = value
    return key.replace("-", "_"), parsed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="images/s, latency and memory against the plain reference implementation",
                       description="Time a model on its fast execution plan against the paper's plain nn.Sequential "
                                   "(eager, NCHW, fp32; autocast on CUDA), interleaved in one process. "
                                   "Prints a table, then one JSON line.")
    p.add_argument("--model", required=True, help="registered model name (see `convmixer list`)")
    p.add_argument("--model-arg", dest="model_args", action="append", type=_model_arg, default=[],
                   metavar="KEY=VALUE", help="override a model argument, e.g. kernel_size=9 (repeatable)")
    p.add_argument("--image-size", type=int, help="input height = width (default: the model's)")
    p.add_argument("--batch-size", type=int, help="batch size (default: 128 for images up to 64 px, else 32)")
    p.add_argument("--mode", choices=("train", "infer"), default="infer",
                   help="train: forward + backward + AdamW step; infer: forward only (default)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                   help="autocast dtype of the fast run (default: auto)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the fast run (default: the plan's choice)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: the plan's choice)")
    p.add_argument("--kernel", choices=("auto", "native", "dwconv", "fused"), default="auto",
                   help="depthwise/fusion kernels of the fast run (default: auto)")
    p.add_argument("--plain", action="store_true", help="run the fast side on the plain path too")
    p.add_argument("--no-reference", dest="reference", action="store_false", help="skip the reference run")
    p.add_argument("--in-chans", type=int, help="input channels (default: the model's)")
    p.add_argument("--num-classes", type=int, help="classifier outputs (default: the model's)")
    p.add_argument("--repeats", type=int, default=10, help="timed rounds (default: 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per run first (default: 2)")
    p.add_argument("--latency-repeats", type=int, default=20, help="batch-1 calls for p50/p95 (default: 20; 0: skip)")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory measurement")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                   help="runtime to measure: torch (the fast plan) or onnxruntime (inference; needs the export "
                        "extra) (default: torch)")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON result to FILE")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run_bench_cmd)


def run_bench_cmd(args: argparse.Namespace) -> int:
    from ..bench import BenchConfig, format_table, run_bench
    from ..io import atomic_write

    cfg = BenchConfig(
        model=args.model, mode=args.mode, batch_size=args.batch_size, image_size=args.image_size,
        in_chans=args.in_chans, num_classes=args.num_classes, model_args=dict(args.model_args), device=args.device,
        dtype=args.dtype, compile=args.compile, channels_last=args.channels_last, kernel=args.kernel,
        plain=args.plain, reference=args.reference, repeats=args.repeats, warmup=args.warmup,
        latency_repeats=args.latency_repeats, memory=args.memory, threads=args.threads, backend=args.backend,
        progress=args.progress,
    )
    result = run_bench(cfg)
    data = result.as_dict()
    print(format_table(result))
    print(json.dumps(data))
    if args.json_out:
        with atomic_write(args.json_out, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
    return 0
