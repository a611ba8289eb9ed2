"""The model a server runs: a checkpoint (or an exported ONNX file) loaded for one backend, with the library's
preprocessing.

Loading goes through the library's inference path: :func:`convmixer.inference.load_for_inference` reads any
checkpoint, the ``torch`` backend runs :func:`convmixer.export.optimize_for_inference` (the folded model on the
:mod:`convmixer.fast` plan) and the ``onnxruntime`` backend runs the folded model exported in memory (or a file
``convmixer export`` wrote) in :class:`convmixer.export.OnnxRunner`. Either way the model takes uint8 pixels
0..255, the normalization being folded into its first conv. An uploaded image is decoded with
:func:`convmixer.data.decode_image` and resized/cropped with :func:`convmixer.data.eval_transform`, as
``convmixer predict`` does; before that its declared size is read from its header, so a decompression bomb is
refused without being decoded.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError, DataError

BACKENDS = ("torch", "onnxruntime")
# The Pillow decoders a server uses: the image folder's formats (convmixer.data.IMG_EXTENSIONS). Restricting them
# keeps uploads away from decoders that call out to other programs (EPS: Ghostscript).
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
DEFAULT_MAX_PIXELS = 4096 * 4096  # an upload declaring more pixels is refused before decoding


class BadImage(DataError):
    """An upload that is not an image the server can read (HTTP 400)."""

    status = 400


class ImageTooLarge(BadImage):
    """An upload that declares more pixels than the server decodes (HTTP 413)."""

    status = 413


class _Upload(io.BytesIO):
    """Uploaded bytes that name themselves in messages (decode_image and Pillow print the file they read)."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name

    def __str__(self) -> str:
        return self.name

    __repr__ = __str__


def check_declared_size(data: bytes, name: str, max_pixels: int) -> tuple[int, int]:
    """The (width, height) an image's header declares, read without decoding the pixels.

    Raises :class:`BadImage` for bytes that no decoder of :data:`IMAGE_FORMATS` recognizes and
    :class:`ImageTooLarge` for an image of more than ``max_pixels`` pixels (a decompression bomb: a few kilobytes
    of PNG can declare gigapixels)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
                width, height = img.size
        except Image.DecompressionBombError:
            raise ImageTooLarge(f"{name}: the image declares more pixels than Pillow's decompression-bomb limit") \
                from None
        except Exception:  # UnidentifiedImageError, or a header too broken to give a size
            raise BadImage(f"{name}: not an image in a supported format ({', '.join(IMAGE_FORMATS)})") from None
    if width * height > max_pixels:
        raise ImageTooLarge(f"{name}: the image declares {width}x{height} pixels, more than this server's limit of "
                            f"{max_pixels} (--max-pixels)")
    return width, height


@dataclass
class ServedModel:
    """A loaded model with what it needs to answer a request.

    ``run`` maps a uint8 batch (B, C, S, S) to float32 logits (B, K) on the CPU. ``metadata`` holds the facts
    :func:`convmixer.export.build_metadata` records for an export (model name and config, classes, input shape,
    mean/std, crop_pct, interpolation): one home for them, whichever backend runs.
    """

    backend: str
    run: Callable[[Tensor], Tensor]
    metadata: dict[str, Any]
    parameters: int | None  # of the checkpoint's model (None: an .onnx file that does not record its config)
    runtime: str  # how the model runs: the fast plan, or the onnxruntime session
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def name(self) -> str:
        return self.metadata.get("model_name") or "ConvMixer"

    @property
    def image_size(self) -> int:
        return int(self.metadata["image_size"])

    @property
    def in_chans(self) -> int:
        return int(self.metadata["in_chans"])

    @property
    def num_classes(self) -> int:
        return int(self.metadata["num_classes"])

    @property
    def crop_pct(self) -> float:
        return float(self.metadata.get("crop_pct") or 1.0)

    @property
    def interpolation(self) -> str:
        return self.metadata.get("interpolation") or "bicubic"

    @property
    def class_names(self) -> list[str]:
        classes = self.metadata.get("classes")
        return list(classes) if classes else [f"class {i}" for i in range(self.num_classes)]

    def preprocess(self, data: bytes, name: str) -> Tensor:
        """Uploaded bytes -> uint8 (C, S, S), as ``convmixer predict`` prepares a file; BadImage if unreadable."""
        from ..data import decode_image, eval_transform

        if not data:
            raise BadImage(f"{name}: empty image")
        check_declared_size(data, name, self.max_pixels)
        try:
            image = decode_image(_Upload(data, name), self.in_chans)
        except DataError as e:  # truncated or corrupt data behind a valid header
            raise BadImage(str(e)) from None
        return eval_transform(image, self.image_size, self.crop_pct, self.interpolation)

    def predict(self, images: Sequence[Tensor]) -> Tensor:
        """Preprocessed images (each uint8 (C, S, S)) -> float32 logits (B, K)."""
        return self.run(torch.stack(list(images)))

    def top_k(self, logits: Tensor, k: int) -> list[dict[str, Any]]:
        """Logits (B, K) -> per image the ``k`` most probable classes, as ``convmixer predict --json`` prints them."""
        from ..training.tasks import get_task

        return get_task("classification").predictions(logits, self.class_names, k)

    def describe(self) -> dict[str, Any]:
        """What GET /metadata returns about the model."""
        meta, size = self.metadata, self.image_size
        short = math.floor(size / self.crop_pct)
        return {
            "model": self.name,
            "backend": self.backend,
            "runtime": self.runtime,
            "task": "classification",
            "classes": self.class_names,
            "num_classes": self.num_classes,
            "channels": self.in_chans,
            "input_size": [self.in_chans, size, size],
            "parameters": self.parameters,
            "dataset": meta.get("dataset"),
            "preprocessing": {
                "decode": "Pillow, 8-bit " + ("L (grayscale)" if self.in_chans == 1 else "RGB"),
                "resize": f"short side to {short} px ({self.interpolation}, antialiased), then center crop "
                          f"{size}x{size}",
                "crop_pct": self.crop_pct,
                "interpolation": self.interpolation,
                "mean": meta.get("mean"),
                "std": meta.get("std"),
                "normalization": "(x / 255 - mean) / std, folded into the model's first conv",
            },
            "image_formats": list(IMAGE_FORMATS),
            "max_pixels": self.max_pixels,
        }


def _torch_runner(model: torch.nn.Module) -> Callable[[Tensor], Tensor]:
    def run(images: Tensor) -> Tensor:
        with torch.inference_mode():
            return model(images).float()

    return run


def load_served_model(path: str | os.PathLike, *, backend: str = "torch", model_name: str | None = None,
                      max_batch: int = 32, kernel: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS,
                      threads: int | None = None, warmup: bool = True) -> ServedModel:
    """Load ``path`` for serving on ``backend`` ("torch" | "onnxruntime").

    ``path`` is anything ``convmixer predict`` reads (``model_name`` for files that do not record it), or, for
    onnxruntime, an ``.onnx`` file written by ``convmixer export``. Only ConvMixers are served (the model is
    folded). ``max_batch`` sizes the fast plan; ``kernel`` is :class:`convmixer.fast.FastOptions`' kernel choice.
    ``threads``: the model's intra-op threads (torch: ``torch.set_num_threads``, for the whole process;
    onnxruntime: the session's); None keeps the library's default, one per core. On a machine shared with other
    busy processes, fewer threads than cores avoid threads waiting on each other. With ``warmup`` the model runs
    once at batch 1 and at ``max_batch`` before it is returned.
    """
    from ..export import OnnxRunner, build_metadata, fold_for_inference, onnx_bytes, optimize_for_inference
    from ..inference import load_for_inference

    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if max_batch < 1 or max_pixels < 1 or (threads is not None and threads < 1):
        raise ConfigError("the largest batch, the pixel limit and the thread count must be >= 1")
    if threads is not None and backend == "torch":
        torch.set_num_threads(threads)
    if Path(path).suffix.lower() == ".onnx":
        served = _load_onnx_file(path, backend, max_pixels, threads)
    else:
        info = load_for_inference(path, model_name)
        if info.task != "classification":
            raise ConfigError(f"{path} is a {info.task} model; the server answers classification only for now "
                              f"(use convmixer predict for masks)")
        parameters = sum(p.numel() for p in info.model.parameters())
        if info.classes is not None and len(info.classes) != info.num_classes:
            raise ConfigError(f"{path} names {len(info.classes)} classes but the model predicts {info.num_classes}")
        if backend == "torch":
            fast = optimize_for_inference(info.model, info.mean, info.std, batch_size=max_batch,
                                          image_size=info.image_size, kernel=kernel)
            folded, run = fast.folded, _torch_runner(fast.eval())
            runtime = f"torch {torch.__version__}, {fast.plan.describe()}"
        else:
            folded = fold_for_inference(info.model, info.mean, info.std)
        metadata = build_metadata(folded, image_size=info.image_size, input_dtype="uint8", dynamic_batch=True,
                                  model_name=info.name, classes=info.classes, crop_pct=info.crop_pct,
                                  interpolation=info.interpolation, dataset=info.dataset, source=Path(path).name,
                                  fmt="onnx" if backend == "onnxruntime" else "torch")
        if backend == "onnxruntime":
            runner = OnnxRunner(onnx_bytes(folded, image_size=info.image_size, in_chans=folded.in_chans,
                                           metadata=metadata), threads=threads)
            run, runtime = runner.torch, _onnx_runtime_text()
        served = ServedModel(backend, run, metadata, parameters, runtime, max_pixels)
    if warmup:
        for batch in sorted({1, max_batch}):
            served.run(torch.zeros(batch, served.in_chans, served.image_size, served.image_size, dtype=torch.uint8))
    return served


def _onnx_runtime_text() -> str:
    from ..export.common import require

    return f"onnxruntime {require('onnxruntime', 'running ONNX models').__version__} CPUExecutionProvider"


def _load_onnx_file(path: str | os.PathLike, backend: str, max_pixels: int, threads: int | None) -> ServedModel:
    """An ONNX file ``convmixer export`` wrote: its metadata says how to feed it."""
    from ..export import OnnxRunner
    from ..models import ConvMixer

    if backend != "onnxruntime":
        raise ConfigError(f"{path} is an ONNX file; serve it with --backend onnxruntime")
    runner = OnnxRunner(path, threads=threads)
    if runner.metadata.get("task", "classification") != "classification":
        raise ConfigError(f"{path} is a {runner.metadata['task']} model; the server answers classification only for "
                          f"now (use convmixer predict for masks)")
    missing = [k for k in ("image_size", "in_chans", "num_classes") if not isinstance(runner.metadata.get(k), int)]
    if missing:
        raise ConfigError(f"{path} does not record {', '.join(missing)}; serve an ONNX file written by "
                          "convmixer export")
    try:  # the parameters of the model it was exported from, built without memory on the meta device
        with torch.device("meta"):
            parameters = sum(p.numel() for p in ConvMixer(**runner.metadata["model_config"]).parameters())
    except (KeyError, TypeError, ValueError):
        parameters = None
    return ServedModel(backend, runner.torch, dict(runner.metadata), parameters, _onnx_runtime_text(), max_pixels)
