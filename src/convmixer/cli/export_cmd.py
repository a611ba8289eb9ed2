"""``convmixer export``: a checkpoint to an ONNX or TorchScript file for deployment (docs/deploy.md).

    convmixer export --checkpoint runs/fmnist/best.pt --format onnx --out fmnist.onnx
    convmixer export --checkpoint convmixer_1536_20_ks9_p7.pth.tar --model convmixer_1536_20 \\
                     --format onnx --out convmixer_1536_20.onnx
"""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript (normalization folded in)",
                       description="Fold the input normalization and the final BatchNorm into the model, export it, "
                                   "check it against the PyTorch model on a random batch, and write it atomically. "
                                   "The exported model takes raw pixels: uint8 0..255 (or float32 0..1 with "
                                   "--input-dtype float32), NCHW, at --image-size.")
    p.add_argument("--checkpoint", required=True, help="training checkpoint (.pt), weights (.safetensors), or a "
                                                       "released paper file (.pth.tar, give --model)")
    p.add_argument("--format", dest="fmt", required=True, choices=("onnx", "torchscript"), help="output format")
    p.add_argument("--out", required=True, help="file to write (replaced atomically)")
    p.add_argument("--model", help="registry name, for files that do not record it (the released weights)")
    p.add_argument("--image-size", type=int, help="input height = width (default: the model's)")
    p.add_argument("--dynamic-batch", action=argparse.BooleanOptionalAction, default=True,
                   help="ONNX: dynamic batch axis (default); --no-dynamic-batch fixes it to 1")
    p.add_argument("--dynamic-size", action="store_true",
                   help="ONNX: dynamic height and width axes too (checked at --image-size and one pixel more)")
    p.add_argument("--ema", action="store_true", help="export the EMA weights stored in the checkpoint")
    p.add_argument("--opset", type=int, help="ONNX opset, 17 or newer (default: 18)")
    p.add_argument("--input-dtype", choices=("uint8", "float32"), default="uint8",
                   help="ONNX input: uint8 pixels 0..255 (default) or float32 pixels 0..1")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="compare the export with the PyTorch model on a random batch before writing (default: on)")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="largest allowed logit difference in the check, relative to the logit scale above 1 "
                        "(default: 1e-4)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export import export_checkpoint

    report = export_checkpoint(args.checkpoint, args.out, fmt=args.fmt, model_name=args.model,
                               image_size=args.image_size, dynamic_batch=args.dynamic_batch, use_ema=args.ema,
                               opset=args.opset, input_dtype=args.input_dtype, check=args.check, atol=args.atol,
                               dynamic_size=args.dynamic_size)
    if args.json:
        print(json.dumps(report.as_dict()))
        return 0
    shape = ", ".join(str(d) for d in report.input_shape)
    output = ", ".join(str(d) for d in report.metadata.get("output_shape", ["batch", report.num_classes]))
    what = f"ONNX opset {report.opset}" if report.format == "onnx" else "TorchScript"
    print(f"wrote {report.path} ({what}, {report.bytes / 2**20:.1f} MiB, {report.seconds:.1f} s): "
          f"{report.model_name or 'ConvMixer'}, input images {report.input_dtype} ({shape}) "
          f"{'0..255' if report.input_dtype == 'uint8' else '0..1'}, output logits ({output}); "
          "normalization folded in")
    if report.agreement is not None:
        print(f"check vs PyTorch on {report.agreement.images} random images: {report.agreement.describe()}")
    else:
        print("check skipped (--no-check)")
    return 0
