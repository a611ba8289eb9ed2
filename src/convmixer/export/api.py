"""From a checkpoint to a deployable file in one call (what ``convmixer export`` runs)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError
from .common import (Agreement, ExportError, as_input, build_metadata, check_input_dtype, check_output_path,
                     compare_logits, random_images, reference_logits, require, write_atomically)

FORMATS = ("onnx", "torchscript")
CHECK_BATCH = 8
DEFAULT_ATOL = 1e-4


@dataclass
class ExportReport:
    path: Path
    format: str
    model_name: str | None
    bytes: int
    seconds: float
    input_shape: list  # "batch" or an int first
    input_dtype: str
    num_classes: int
    opset: int | None = None
    agreement: Agreement | None = None  # None when the check was skipped
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {"path": str(self.path), "format": self.format, "model_name": self.model_name, "bytes": self.bytes,
               "seconds": round(self.seconds, 3), "input_shape": self.input_shape, "input_dtype": self.input_dtype,
               "num_classes": self.num_classes, "opset": self.opset}
        if self.agreement is not None:
            a = self.agreement
            out["check"] = {"images": a.images, "max_abs_diff": a.max_abs_diff, "max_rel_diff": a.max_rel_diff,
                            "logit_scale": a.logit_scale, "top1_agree": a.top1_agree}
            if a.pixels_differ is not None:
                out["check"]["pixels_differ"] = a.pixels_differ
        return out


def check_image_size(image_size: Any, patch_size: int, name: str) -> int:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ConfigError(f"image size must be a positive integer, got {image_size!r}")
    if image_size < patch_size:
        raise ConfigError(f"image size {image_size} is smaller than {name}'s patch size {patch_size}; "
                          f"use --image-size {patch_size} or more")
    return image_size


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, *, fmt: str = "onnx",
                      model_name: str | None = None, image_size: int | None = None, dynamic_batch: bool = True,
                      use_ema: bool = False, opset: int | None = None, input_dtype: str = "uint8",
                      check: bool = True, atol: float = DEFAULT_ATOL, seed: int = 0,
                      dynamic_size: bool = False) -> ExportReport:
    """Load ``checkpoint`` (any layout :func:`convmixer.inference.load_for_inference` reads), fold it, export it to
    ``out`` as ``fmt`` ("onnx" | "torchscript") and, with ``check``, compare the export with the original PyTorch
    model on a random uint8 batch before writing: a mismatch beyond ``atol`` (relative to the logit scale when the
    logits exceed 1) or any top-1 disagreement (a segmentation model's: any pixel's argmax) raises
    :class:`ExportError` and writes nothing.

    A segmentation model exports the same way; its output is (batch, num_classes, height, width). ``dynamic_size``
    (ONNX only) makes height and width dynamic axes; the check then also runs at ``image_size + 1``.
    """
    from ..inference import load_for_inference
    from .folded import fold_for_inference

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    check_input_dtype(input_dtype)
    if atol <= 0:
        raise ConfigError(f"the check tolerance must be positive, got {atol}")
    out = check_output_path(out)
    if fmt == "onnx":
        from .onnx import DEFAULT_OPSET, check_opset

        opset = DEFAULT_OPSET if opset is None else opset
        check_opset(opset)
        for module in ("onnxscript", "onnxruntime"):
            require(module)
    elif opset is not None:
        raise ConfigError("--opset applies to ONNX export only")
    elif input_dtype != "uint8":
        raise ConfigError("the TorchScript export takes both uint8 and float input; --input-dtype is for ONNX only")
    elif dynamic_size:
        raise ConfigError("the TorchScript export is traced at one image size; --dynamic-size is for ONNX only")
    if Path(checkpoint).resolve() == out.resolve():
        raise ConfigError(f"the output {out} is the checkpoint itself; choose another --out")

    start = time.perf_counter()
    try:
        info = load_for_inference(checkpoint, model_name, use_ema=use_ema)
    except CheckpointError as e:
        raise CheckpointError(e if str(checkpoint) in str(e) else f"{checkpoint}: {e}") from None
    name = info.name or type(info.model).__name__
    folded = fold_for_inference(info.model, info.mean, info.std)  # ConfigError for anything but a ConvMixer
    size = check_image_size(image_size if image_size is not None else info.image_size, folded.patch_size, name)
    if info.classes is not None and len(info.classes) != folded.num_classes:
        raise ConfigError(f"the checkpoint names {len(info.classes)} classes but the model predicts "
                          f"{folded.num_classes}")
    metadata = build_metadata(folded, image_size=size, input_dtype=input_dtype,
                              dynamic_batch=dynamic_batch or fmt == "torchscript", model_name=info.name,
                              classes=info.classes, crop_pct=info.crop_pct, interpolation=info.interpolation,
                              dataset=info.dataset, source=Path(checkpoint).name, fmt=fmt,
                              extra={"opset": opset} if fmt == "onnx" else None, dynamic_size=dynamic_size)

    if fmt == "onnx":
        from .onnx import OnnxRunner, onnx_bytes

        data = onnx_bytes(folded, image_size=size, in_chans=folded.in_chans, input_dtype=input_dtype,
                          dynamic_batch=dynamic_batch, opset=opset, metadata=metadata, check=True,
                          dynamic_size=dynamic_size)
        run = (lambda x: OnnxRunner(data)(x)) if check else None
    else:
        from .torchscript import load_torchscript, torchscript_bytes

        data = torchscript_bytes(folded, image_size=size, metadata=metadata)
        run = (lambda x: load_torchscript(data)[0](x).detach().numpy()) if check else None

    agreement = None
    if check:
        batch = CHECK_BATCH if dynamic_batch or fmt == "torchscript" else 1
        for i, side in enumerate([size, size + 1] if dynamic_size else [size]):
            images = random_images(batch, folded.in_chans, side, seed=seed + i)
            found = compare_logits(reference_logits(info.model, images, info.mean, info.std).numpy(),
                                   run(as_input(images, input_dtype)))
            if not found.ok(atol):
                raise ExportError(f"the {fmt} export does not reproduce the PyTorch model at {side}x{side} "
                                  f"({found.describe()}; tolerance {atol:g}); nothing was written")
            agreement = agreement or found  # the report's: at the export's image size
    path = write_atomically(out, data)
    return ExportReport(path, fmt, info.name, len(data), time.perf_counter() - start, metadata["input_shape"],
                        input_dtype, folded.num_classes, opset, agreement, metadata)
