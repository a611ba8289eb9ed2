"""ONNX export of the folded inference model, and an onnxruntime runner for it.

The graph has one input ``images`` (uint8 pixels 0..255 by default, or float32 0..1; NCHW; the batch axis dynamic
unless asked otherwise; height and width fixed to the export's image size unless ``dynamic_size``) and one output
``logits`` (float32, (batch, num_classes); a segmentation model's (batch, num_classes, height, width)). Normalization is folded into the first conv, so a caller feeds decoded, resized pixels and
nothing else. The file's ``metadata_props`` say all of this (see :func:`convmixer.export.common.build_metadata`).

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export-based; the default and recommended one since PyTorch 2.9)
for opset 18 and newer. It cannot produce opset 17 (its version converter fails on ReduceMean), so opset 17 goes
through the older TorchScript-based exporter (``dynamo=False``), which upstream has deprecated but still ships.
onnx, onnxscript and onnxruntime are imported only when needed (the ``export`` extra).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..errors import ConfigError, InputShapeError, first_line
from .common import (INPUT_NAME, OUTPUT_NAME, ExportError, check_input_dtype, decode_metadata, encode_metadata,
                     require, write_atomically)

DEFAULT_OPSET = 18
MIN_OPSET = 17
DYNAMO_MIN_OPSET = 18
_ORT_TYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16,
              "tensor(double)": np.float64}


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the exporters' deprecation notices and progress logging off the user's terminal."""
    import torch.jit

    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            for category in (FutureWarning, DeprecationWarning, UserWarning, torch.jit.TracerWarning):
                warnings.simplefilter("ignore", category)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def check_opset(opset: int) -> None:
    if not isinstance(opset, int) or isinstance(opset, bool) or opset < MIN_OPSET:
        raise ConfigError(f"ONNX opset must be an integer >= {MIN_OPSET}, got {opset!r}")
    onnx = require("onnx")
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ConfigError(f"ONNX opset {opset} is newer than this onnx package supports ({newest})")


def onnx_model_proto(model: nn.Module, *, image_size: int, in_chans: int, input_dtype: str = "uint8",
                     dynamic_batch: bool = True, opset: int = DEFAULT_OPSET, dynamic_size: bool = False):
    """Export ``model`` (normally :func:`~convmixer.export.fold_for_inference`'s result; any module taking one
    (B, C, S, S) tensor works) to an in-memory ``onnx.ModelProto`` with input "images" and output "logits".

    ``dynamic_size``: height and width are dynamic axes too ("height", "width"), traced at ``image_size``."""
    import torch

    from .folded import FoldedConvMixer, is_dense

    check_input_dtype(input_dtype)
    check_opset(opset)
    require("onnxscript")
    if input_dtype == "uint8" and not isinstance(model, FoldedConvMixer):
        raise ConfigError("uint8 input needs the folded model (convmixer.export.fold_for_inference); "
                          "export other models with input_dtype='float32'")
    model = model.eval()
    dtype = torch.uint8 if input_dtype == "uint8" else torch.float32
    # batch 2: torch.export specializes a dimension whose example size is 0 or 1 to a constant
    batch = 2 if dynamic_batch else 1
    if dynamic_size and image_size < 2:
        raise ConfigError("a dynamic-size export needs an example image size of at least 2")
    example = torch.zeros(batch, in_chans, image_size, image_size, dtype=dtype)
    try:
        with _quiet_exporter(), torch.no_grad():
            if opset >= DYNAMO_MIN_OPSET:
                axes = {0: torch.export.Dim("batch")} if dynamic_batch else {}
                if dynamic_size:
                    axes.update({2: torch.export.Dim("height"), 3: torch.export.Dim("width")})
                dynamic = (axes,) if axes else None
                program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT_NAME],
                                            output_names=[OUTPUT_NAME], dynamic_shapes=dynamic, opset_version=opset,
                                            optimize=True, verbose=False, external_data=False)
                proto = program.model_proto
            else:
                import io

                onnx = require("onnx")
                buf = io.BytesIO()
                names = ({0: "batch"} if dynamic_batch else {}) | ({2: "height", 3: "width"} if dynamic_size else {})
                axes = {INPUT_NAME: names, OUTPUT_NAME: dict(names) if is_dense(model) else
                        ({0: "batch"} if dynamic_batch else {})} if names else None
                torch.onnx.export(model, (example,), buf, dynamo=False, input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=opset,
                                  do_constant_folding=True)
                proto = onnx.load_from_string(buf.getvalue())
    except ConfigError:
        raise
    except Exception as e:  # the exporters raise a variety of errors; none of them is the user's to fix
        first = first_line(e)
        raise ExportError(f"the ONNX exporter failed ({type(e).__name__}: {first})") from e
    return proto


def finalize_proto(proto, metadata: dict[str, Any] | None = None, check: bool = True):
    """Store ``metadata`` as ``metadata_props`` (strings; non-strings as JSON) and run ``onnx.checker``."""
    onnx = require("onnx")
    if metadata:
        del proto.metadata_props[:]
        onnx.helper.set_model_props(proto, encode_metadata(metadata))
    proto.doc_string = "ConvMixer (Patches Are All You Need?), folded for inference by convmixer export"
    if check:
        try:
            onnx.checker.check_model(proto, full_check=True)
        except onnx.checker.ValidationError as e:
            first = (str(e).strip().splitlines() or ["invalid model"])[0]
            raise ExportError(f"onnx.checker rejects the exported model: {first}") from None
    return proto


def serialize(proto) -> bytes:
    if proto.ByteSize() >= 2**31:
        raise ExportError("the model is larger than 2 GB, the limit of a single-file ONNX model")
    return proto.SerializeToString()


def onnx_bytes(model: nn.Module, *, image_size: int, in_chans: int, input_dtype: str = "uint8",
               dynamic_batch: bool = True, opset: int = DEFAULT_OPSET, metadata: dict[str, Any] | None = None,
               check: bool = True, dynamic_size: bool = False) -> bytes:
    """The serialized, checked ONNX model (see :func:`onnx_model_proto`), with ``metadata``."""
    proto = onnx_model_proto(model, image_size=image_size, in_chans=in_chans, input_dtype=input_dtype,
                             dynamic_batch=dynamic_batch, opset=opset, dynamic_size=dynamic_size)
    return serialize(finalize_proto(proto, metadata, check=check))


def export_onnx(model: nn.Module, path: str | os.PathLike, *, image_size: int, in_chans: int | None = None,
                dynamic_batch: bool = True, metadata: dict[str, Any] | None = None, opset: int = DEFAULT_OPSET,
                input_dtype: str = "uint8", check: bool = True, dynamic_size: bool = False) -> Path:
    """Export ``model`` to the ONNX file ``path``, written atomically (a failure leaves no file behind).

    ``model`` is normally :func:`~convmixer.export.fold_for_inference`'s result. ``in_chans`` defaults to
    ``model.in_chans``. ``check`` runs ``onnx.checker.check_model(full_check=True)``. Returns ``path``.
    """
    from .common import check_output_path

    check_output_path(path)
    in_chans = in_chans or getattr(model, "in_chans", None)
    if not in_chans:
        raise ConfigError("in_chans is needed for a model that does not record it")
    data = onnx_bytes(model, image_size=image_size, in_chans=in_chans, input_dtype=input_dtype,
                      dynamic_batch=dynamic_batch, opset=opset, metadata=metadata, check=check,
                      dynamic_size=dynamic_size)
    return write_atomically(path, data)


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``metadata_props`` of an ONNX file, JSON values decoded (see :func:`common.decode_metadata`)."""
    onnx = require("onnx", "reading ONNX files")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise ConfigError(f"ONNX file not found: {path}") from None
    except Exception as e:
        raise ConfigError(f"{path} is not a readable ONNX model ({type(e).__name__})") from None
    return decode_metadata({p.key: p.value for p in proto.metadata_props})


class OnnxRunner:
    """An onnxruntime session on the CPU for an exported model (a path, or the serialized bytes).

    ``runner(images)`` returns the logits as a float32 numpy array; ``runner.torch(images)`` as a torch tensor.
    ``images`` may be a numpy array or a torch tensor (B, C, H, W) of the input dtype (``runner.input_dtype``);
    a float32 graph also takes uint8 pixels (divided by 255 here). ``threads`` sets onnxruntime's intra-op threads
    (default: onnxruntime's choice, one per physical core).
    """

    def __init__(self, source: str | os.PathLike | bytes, *, threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        ort = require("onnxruntime", "running ONNX models")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.source = "<bytes>" if isinstance(source, bytes) else str(source)
        if not isinstance(source, bytes) and not Path(source).is_file():
            raise ConfigError(f"ONNX file not found: {source}")
        try:
            self.session = ort.InferenceSession(source if isinstance(source, bytes) else str(source),
                                                sess_options=options, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime reports unreadable models as its own exception types
            first = first_line(e)
            raise ConfigError(f"{self.source} is not a usable ONNX model ({first})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ConfigError(f"{self.source} has {len(inputs)} inputs; expected one image batch")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.input_shape: list[int | str | None] = list(inputs[0].shape)
        if inputs[0].type not in _ORT_TYPES:
            raise ConfigError(f"{self.source} takes {inputs[0].type}; expected an image tensor")
        self.input_dtype = np.dtype(_ORT_TYPES[inputs[0].type])
        self.metadata = decode_metadata(dict(self.session.get_modelmeta().custom_metadata_map))
        self.threads = threads

    def prepare(self, images: Any) -> np.ndarray:
        """``images`` as the contiguous numpy array the session takes; InputShapeError for what it cannot take."""
        x = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
        if x.dtype != self.input_dtype:
            if x.dtype == np.uint8 and self.input_dtype.kind == "f" and self.metadata.get("input_range") == "0..1":
                x = x.astype(self.input_dtype) / np.asarray(255, dtype=self.input_dtype)
            elif x.dtype.kind == "f" and self.input_dtype.kind == "f":
                x = x.astype(self.input_dtype)
            else:
                raise InputShapeError(f"the ONNX model takes {self.input_dtype} images "
                                      f"({self.metadata.get('input_range', 'see its metadata')}), got {x.dtype}")
        if x.ndim != len(self.input_shape):
            raise InputShapeError(f"the ONNX model takes a {len(self.input_shape)}-D batch "
                                  f"{self._shape_text()}, got shape {tuple(x.shape)}")
        for axis, (want, got) in enumerate(zip(self.input_shape, x.shape)):
            if isinstance(want, int) and want != got:
                raise InputShapeError(f"the ONNX model takes input of shape {self._shape_text()}, got {tuple(x.shape)} "
                                      f"(axis {axis}); resize/crop images to the model's size first")
        return np.ascontiguousarray(x)

    def _shape_text(self) -> str:
        return "(" + ", ".join(str(d) if d is not None else "?" for d in self.input_shape) + ")"

    def __call__(self, images: Any) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: self.prepare(images)})[0]

    def torch(self, images: Any):
        import torch

        return torch.from_numpy(self(images))

    def bench_runner(self, input_shape: tuple[int, int, int, int], *, name: str = "fast", seed: int = 0,
                     description: str | None = None) -> OnnxBenchRunner:
        """An object :mod:`convmixer.bench`'s harness can time (``step``/``latency_step``/``sync``)."""
        return OnnxBenchRunner(self, input_shape, name=name, seed=seed, description=description)


def load_onnx(path: str | os.PathLike, threads: int | None = None) -> OnnxRunner:
    """``OnnxRunner(path, threads=threads)``."""
    return OnnxRunner(path, threads=threads)


class OnnxBenchRunner:
    """What ``convmixer bench``'s harness times: ``step()`` runs one batch of ``input_shape`` through onnxruntime,
    ``latency_step()`` one image, ``sync()`` nothing (onnxruntime returns when it is done)."""

    mode = "infer"

    def __init__(self, runner: OnnxRunner, input_shape: tuple[int, int, int, int], *, name: str = "fast",
                 seed: int = 0, description: str | None = None) -> None:
        import torch

        from .common import random_images

        b, c, h, w = input_shape
        if h != w:
            raise ConfigError(f"the benchmark input must be square, got {h}x{w}")
        images = random_images(b, c, h, seed=seed)
        if runner.input_dtype != np.uint8:
            images = images.to(torch.float32).div(255)
        self.runner, self.name = runner, name
        self.x = runner.prepare(images)
        self.x1 = np.ascontiguousarray(self.x[:1])
        threads = runner.threads or "default"
        self.description = description or (f"onnxruntime {_ort_version()} CPUExecutionProvider, "
                                            f"{runner.input_dtype} input, intra-op threads {threads}")

    def _run(self, x: np.ndarray) -> None:
        self.runner.session.run([self.runner.output_name], {self.runner.input_name: x})

    def step(self) -> None:
        self._run(self.x)

    def latency_step(self) -> None:
        self._run(self.x1)

    def sync(self) -> None:
        pass


def _ort_version() -> str:
    return require("onnxruntime", "running ONNX models").__version__


def onnxruntime_bench_runner(model: nn.Module, input_shape: tuple[int, int, int, int], *, threads: int | None = None,
                             seed: int = 0, name: str = "fast", opset: int = DEFAULT_OPSET) -> OnnxBenchRunner:
    """Export ``model`` in memory and return a runner ``convmixer bench`` can time on onnxruntime.

    A ConvMixer is folded first (uint8 input, as ``convmixer export`` writes it; the normalization constants do
    not change the cost); any other model is exported as it is, taking float32 input. ``model`` is not changed.
    """
    from ..fast.plan import unwrap
    from ..models.convmixer import ConvMixer
    from .folded import fold_for_inference

    b, c, h, w = input_shape
    target = unwrap(model)
    if isinstance(target, ConvMixer):
        if target.num_classes < 1:
            raise ConfigError("the onnxruntime benchmark needs a classifier head (num_classes >= 1)")
        exported, dtype = fold_for_inference(target, 0.5, 0.25), "uint8"
    else:
        import copy

        from ..fast import swap_convmixer

        exported, dtype = swap_convmixer(copy.deepcopy(target), "native").float().eval(), "float32"
    data = onnx_bytes(exported, image_size=h, in_chans=c, input_dtype=dtype, dynamic_batch=True, opset=opset,
                      metadata={"input_range": "0..255" if dtype == "uint8" else "normalized"}, check=False)
    return OnnxRunner(data, threads=threads).bench_runner(input_shape, name=name, seed=seed)
