"""TorchScript export of the folded inference model (``torch.jit.trace``, native kernels).

The saved module takes what :class:`~convmixer.export.folded.FoldedConvMixer` takes, uint8 pixels 0..255 or float
pixels 0..1, at any batch size: the dtype branch is a scripted function (``torch.jit.script_if_tracing``), so
tracing does not freeze it. The export's metadata is stored in the file as the extra file ``convmixer.json``.
``torch.jit`` is deprecated upstream (PyTorch 2.13 warns on every trace); ONNX is the recommended deployment format.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError, first_line
from .common import ExportError, write_atomically
from .folded import FoldedConvMixer

METADATA_FILE = "convmixer.json"


@torch.jit.script_if_tracing
def _to_pixels(x: Tensor) -> Tensor:
    if x.dtype == torch.uint8:
        return x.float()
    if x.is_floating_point():
        return x.float() * 255.0  # PIXEL_MAX (a literal: TorchScript does not close over module globals)
    raise ValueError("the model takes uint8 images (0..255) or float images (0..1)")


class _TraceEntry(nn.Module):
    """What is traced: the folded ConvMixer's layers after a dtype-generic input conversion (no Python-side shape
    checks, which tracing would freeze into constants)."""

    def __init__(self, folded: FoldedConvMixer) -> None:
        super().__init__()
        self.model = folded.model

    def forward(self, images: Tensor) -> Tensor:
        m = self.model
        if hasattr(m, "backbone"):  # a segmentation model: its padding and crop are fixed by the traced size
            return m(_to_pixels(images))
        return m.forward_head(m.blocks(m.stem(_to_pixels(images))))


def torchscript_bytes(folded: FoldedConvMixer, *, image_size: int, metadata: dict[str, Any] | None = None) -> bytes:
    """Trace ``folded`` on a uint8 batch at ``image_size`` and return the saved module's bytes."""
    if not isinstance(folded, FoldedConvMixer):
        raise ConfigError("TorchScript export takes the folded model (convmixer.export.fold_for_inference)")
    example = torch.zeros(2, folded.in_chans, image_size, image_size, dtype=torch.uint8)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(_TraceEntry(folded).eval(), (example,), check_trace=False)
            buf = io.BytesIO()
            torch.jit.save(traced, buf, _extra_files={METADATA_FILE: json.dumps(metadata or {})})
    except Exception as e:
        first = first_line(e)
        raise ExportError(f"TorchScript tracing failed ({type(e).__name__}: {first})") from e
    return buf.getvalue()


def export_torchscript(folded: FoldedConvMixer, path: str | os.PathLike, *, image_size: int,
                       metadata: dict[str, Any] | None = None) -> Path:
    """Trace ``folded`` and save it to ``path`` atomically (a failure leaves no file behind)."""
    from .common import check_output_path

    check_output_path(path)
    return write_atomically(path, torchscript_bytes(folded, image_size=image_size, metadata=metadata))


def load_torchscript(source: str | os.PathLike | bytes) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """(module in eval mode on the CPU, its metadata) from a file or the bytes :func:`torchscript_bytes` returns."""
    extra = {METADATA_FILE: ""}
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise ConfigError(f"TorchScript file not found: {source}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(io.BytesIO(source) if isinstance(source, bytes) else str(source),
                                    map_location="cpu", _extra_files=extra)
    except Exception as e:
        first = first_line(e)
        name = "<bytes>" if isinstance(source, bytes) else source
        raise ConfigError(f"{name} is not a TorchScript file ({first})") from None
    raw = extra[METADATA_FILE]
    try:
        meta = json.loads(raw) if raw else {}
    except ValueError:
        meta = {}
    return module.eval(), meta
