"""Deployment: the folded inference model, ONNX and TorchScript export, an onnxruntime runner.

    from convmixer.export import export_checkpoint, fold_for_inference, optimize_for_inference, OnnxRunner
    report = export_checkpoint("runs/fmnist/best.pt", "fmnist.onnx")      # what `convmixer export` does
    logits = OnnxRunner("fmnist.onnx")(uint8_images)                         # (B, 10) numpy

See docs/deploy.md. Importing this package imports neither onnx nor onnxruntime (the ``export`` extra): they are
loaded when an ONNX function runs, with a ConfigError that says how to install them if they are missing.
"""

from .api import FORMATS, ExportReport, export_checkpoint
from .common import Agreement, ExportError, build_metadata, compare_logits, decode_metadata, encode_metadata
from .folded import FoldedConvMixer, InferenceModel, fold_for_inference, optimize_for_inference
from .onnx import (OnnxBenchRunner, OnnxRunner, export_onnx, load_onnx, onnx_bytes, onnxruntime_bench_runner,
                   read_onnx_metadata)
from .torchscript import export_torchscript, load_torchscript, torchscript_bytes

__all__ = [
    "FORMATS", "ExportReport", "export_checkpoint", "Agreement", "ExportError", "build_metadata", "compare_logits",
    "decode_metadata", "encode_metadata", "FoldedConvMixer", "InferenceModel", "fold_for_inference",
    "optimize_for_inference", "OnnxBenchRunner", "OnnxRunner", "export_onnx", "load_onnx", "onnx_bytes",
    "onnxruntime_bench_runner", "read_onnx_metadata", "export_torchscript", "load_torchscript", "torchscript_bytes",
]
