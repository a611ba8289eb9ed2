"""What the ONNX and TorchScript exports share: optional dependencies, output paths, metadata, the verification."""

from __future__ import annotations

import importlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ConvMixerError
from ..io import check_output_path  # noqa: F401  (re-exported: the export modules import it from here)

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
INPUT_DTYPES = ("uint8", "float32")  # uint8: pixels 0..255 (the default); float32: pixels 0..1
INSTALL_HINT = "pip install -e '.[export]' (or pip install onnx onnxscript onnxruntime)"


class ExportError(ConvMixerError, RuntimeError):
    """An export that could not be written or does not reproduce the PyTorch model."""


def require(module: str, purpose: str = "ONNX export", *, extra: str = "export", hint: str = INSTALL_HINT) -> Any:
    """Import an optional dependency of the ``extra`` extra (``export`` by default), or raise a ConfigError that says
    how to install it (``hint``)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{purpose} needs the {extra} extra ({module} is not installed): {hint}") from None


def input_range(input_dtype: str) -> str:
    return "0..255" if input_dtype == "uint8" else "0..1"


def check_input_dtype(input_dtype: str) -> None:
    if input_dtype not in INPUT_DTYPES:
        raise ConfigError(f"unknown input dtype {input_dtype!r}; choose one of {', '.join(INPUT_DTYPES)}")


def write_atomically(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through :func:`convmixer.io.atomic_write`: all of it or nothing, never a partial
    file; an existing ``path`` keeps its old content if anything fails."""
    from ..io import atomic_write

    path = check_output_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            f.write(data)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def encode_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """String values stay as they are; everything else (numbers, lists, dicts, None, booleans) becomes JSON."""
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}


def decode_metadata(props: dict[str, str]) -> dict[str, Any]:
    """Inverse of :func:`encode_metadata`: a value that parses as JSON is decoded, any other stays a string."""
    out: dict[str, Any] = {}
    for key, value in props.items():
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def build_metadata(folded, *, image_size: int, input_dtype: str, dynamic_batch: bool, model_name: str | None = None,
                   classes: list[str] | None = None, crop_pct: float | None = None, interpolation: str | None = None,
                   dataset: str | None = None, source: str | None = None, fmt: str = "onnx",
                   extra: dict[str, Any] | None = None, dynamic_size: bool = False) -> dict[str, Any]:
    """Everything a deployment needs to feed the exported model and read its output (see docs/deploy.md).

    A segmentation model's output is (batch, num_classes, height, width) logits at the input size (``task``
    "segmentation"); with ``dynamic_size`` height and width are free (any size >= 1 for a segmentation model).
    """
    from .. import __version__
    from .folded import is_dense

    batch = "batch" if dynamic_batch else 1
    height, width = ("height", "width") if dynamic_size else (image_size, image_size)
    dense = is_dense(folded)
    meta: dict[str, Any] = {
        "format": f"convmixer-{fmt}",
        "convmixer_version": __version__,
        "model_name": model_name or "",
        "model_config": folded.config(),
        "task": "segmentation" if dense else "classification",
        "num_classes": folded.num_classes,
        "classes": classes,
        "in_chans": folded.in_chans,
        "image_size": image_size,
        "input_name": INPUT_NAME,
        "input_dtype": input_dtype,
        "input_range": input_range(input_dtype),
        "input_layout": "NCHW",
        "input_shape": [batch, folded.in_chans, height, width],
        "output_name": OUTPUT_NAME,
        "output_shape": [batch, folded.num_classes, height, width] if dense else [batch, folded.num_classes],
        "dynamic_batch": dynamic_batch,
        "dynamic_size": dynamic_size,
        "mean": list(folded.mean),
        "std": list(folded.std),
        "normalization": "folded into the patch-embedding conv: feed raw pixels, do not subtract mean or divide by std",
        "folds": folded.folds,
        "crop_pct": crop_pct,
        "interpolation": interpolation,
        "resize": _resize_text(image_size, crop_pct, interpolation),
        "dataset": dataset,
        "source_checkpoint": source,
    }
    meta.update(extra or {})
    return meta


def _resize_text(image_size: int, crop_pct: float | None, interpolation: str | None) -> str:
    if not crop_pct:
        return f"caller's job: bring images to {image_size}x{image_size}"
    short = math.floor(image_size / crop_pct)
    how = f" ({interpolation}, antialiased)" if interpolation else ""
    return (f"caller's job: resize the short side to {short} px{how}, center-crop {image_size}x{image_size} "
            "(convmixer.data.eval_transform)")


@dataclass
class Agreement:
    """How an export's logits compare with the PyTorch model's on one batch.

    Dense (segmentation) logits (B, K, H, W): ``top1_agree`` counts the images whose argmax masks are identical
    (every pixel's class the same) and ``pixels_differ`` the pixels whose class differs.
    """

    images: int
    max_abs_diff: float
    logit_scale: float  # max |logit| of the PyTorch model
    top1_agree: int
    pixels_differ: int | None = None  # dense logits only

    @property
    def max_rel_diff(self) -> float:
        return self.max_abs_diff / max(self.logit_scale, 1e-12)

    def ok(self, atol: float) -> bool:
        """Within ``atol`` for logits of size up to 1, within ``atol`` relative to the logit scale above that; every
        image's top-1 class (a segmentation model's: every pixel's) the same."""
        return self.max_abs_diff <= atol * max(1.0, self.logit_scale) and self.top1_agree == self.images

    def describe(self) -> str:
        text = f"max |logit diff| {self.max_abs_diff:.3g} (logit scale {self.logit_scale:.3g}), "
        if self.pixels_differ is None:
            return text + f"top-1 agreement {self.top1_agree}/{self.images}"
        return text + f"identical masks {self.top1_agree}/{self.images} ({self.pixels_differ} pixel(s) differ)"


def compare_logits(reference, exported) -> Agreement:
    """:class:`Agreement` of two (B, num_classes) or (B, num_classes, H, W) logit arrays or tensors (float64)."""
    import numpy as np

    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(exported, dtype=np.float64)
    if ref.shape != got.shape:
        raise ExportError(f"the export returns logits of shape {got.shape}, the PyTorch model {ref.shape}")
    diff, scale = float(np.abs(ref - got).max()), float(np.abs(ref).max())
    want, chose = ref.argmax(1), got.argmax(1)
    if ref.ndim == 2:
        return Agreement(int(ref.shape[0]), diff, scale, int((want == chose).sum()))
    differ = (want != chose).reshape(ref.shape[0], -1)  # (B, H * W)
    return Agreement(int(ref.shape[0]), diff, scale, int((~differ).all(axis=1).sum()), int(differ.sum()))


def reference_logits(model, images, mean, std):
    """The original (unfolded) PyTorch model's float32 logits for uint8 ``images``, normalized the usual way."""
    import torch

    x = images.float().div(255)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    with torch.no_grad():
        return model((x - m) / s).float()


def random_images(batch: int, in_chans: int, image_size: int, seed: int = 0):
    """uint8 (batch, in_chans, S, S) noise, reproducible."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, in_chans, image_size, image_size), generator=g, dtype=torch.uint8)


def as_input(images, input_dtype: str):
    """uint8 pixels in the dtype/range the export takes: uint8 as is, float32 divided by 255."""
    return images if input_dtype == "uint8" else images.float().div(255)
