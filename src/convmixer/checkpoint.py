"""Reading and writing ConvMixer weights in every layout found in the wild.

Layouts (depth d), see shared/reference: the official ``nn.Sequential`` one (``0.*``, ``2.*``,
``{3+i}.0.fn.0.*`` ... ``{d+5}.*``) and timm's (``stem.0.*`` ... ``head.*``), which is also this
project's. Files may be ``.pth``/``.pth.tar`` (read with ``torch.load(weights_only=True)``: no pickled
code runs) or ``.safetensors``; weights may be wrapped in ``state_dict``/``model``/``state_dict_ema``
and prefixed by ``module.`` (DDP) or ``_orig_mod.`` (torch.compile).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import re
import urllib.parse
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError, first_line
from .io import atomic_write, cache_dir

StateDict = dict[str, torch.Tensor]

WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")
PREFIXES = ("module.", "_orig_mod.")
FORMAT = "convmixer"  # safetensors metadata tag of this project's own files

# ----------------------------------------------------------------------------------------------------------------
# Layout conversion: the one place that knows both key schemes.
# ----------------------------------------------------------------------------------------------------------------
_OFFICIAL_KEY = re.compile(r"^(\d+)\.(.+)$")
_TIMM_KEY = re.compile(r"^(stem\.\d+|blocks\.(\d+)|head)\.(.+)$")


def detect_layout(state_dict: StateDict) -> str:
    """"official" when every key starts with a Sequential index, "timm" otherwise."""
    if state_dict and all(_OFFICIAL_KEY.match(k) for k in state_dict):
        return "official"
    return "timm"


def official_to_timm(state_dict: StateDict) -> StateDict:
    """Rename official ``nn.Sequential`` keys to timm/project keys. Depth is read off the classifier index."""
    indices = {int(_OFFICIAL_KEY.match(k).group(1)) for k in state_dict}
    head = max(indices)
    depth = head - 5
    expected = {0, 2, head} | set(range(3, 3 + depth))
    if depth < 1 or indices != expected:
        raise CheckpointError(
            f"keys do not form the official ConvMixer layout (module indices {sorted(indices)[:8]}...)"
        )
    out: StateDict = {}
    for key, value in state_dict.items():
        idx, rest = _OFFICIAL_KEY.match(key).groups()
        i = int(idx)
        new = f"stem.{i}" if i in (0, 2) else "head" if i == head else f"blocks.{i - 3}"
        out[f"{new}.{rest}"] = value
    return out


def timm_to_official(state_dict: StateDict) -> StateDict:
    """Rename timm/project keys to the official ``nn.Sequential`` layout."""
    blocks = {int(m.group(2)) for k in state_dict if (m := _TIMM_KEY.match(k)) and m.group(2) is not None}
    depth = max(blocks) + 1 if blocks else 0
    out: StateDict = {}
    for key, value in state_dict.items():
        m = _TIMM_KEY.match(key)
        if m is None:
            raise CheckpointError(f"key {key!r} is not part of a ConvMixer (timm layout)")
        part, block, rest = m.groups()
        idx = int(part.split(".")[1]) if part.startswith("stem") else depth + 5 if part == "head" else 3 + int(block)
        out[f"{idx}.{rest}"] = value
    return out


def convert_layout(state_dict: StateDict, to: str) -> StateDict:
    """Return ``state_dict`` in layout ``to`` ("timm" or "official"), converting only when needed."""
    if to not in ("timm", "official"):
        raise ValueError(f"unknown layout {to!r}")
    have = detect_layout(state_dict)
    if have == to:
        return dict(state_dict)
    return official_to_timm(state_dict) if to == "timm" else timm_to_official(state_dict)


# ----------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """What a weights file holds: the state dict (already unwrapped) and, if saved by us, the model config."""

    state_dict: StateDict
    model_config: dict[str, Any] | None = None  # constructor kwargs, e.g. ConvMixer(**model_config)
    model_name: str | None = None  # registry name the weights were trained as
    metadata: dict[str, Any] = field(default_factory=dict)  # everything else stored beside the weights


def _strip_prefixes(state_dict: StateDict) -> StateDict:
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def unwrap_state_dict(obj: Any, use_ema: bool = False) -> StateDict:
    """Find the tensor dict inside a loaded checkpoint object and strip DDP/compile prefixes."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"expected a dict of tensors, found a {type(obj).__name__}")
    if use_ema:
        for key in ("state_dict_ema", "model_ema"):
            if isinstance(obj.get(key), dict) and obj[key]:
                return unwrap_state_dict(obj[key])
        raise CheckpointError("the checkpoint holds no EMA weights (no 'state_dict_ema' entry)")
    for key in WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, dict) and inner:
            return unwrap_state_dict(inner)
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"no tensors found in the checkpoint (top-level keys: {sorted(map(str, obj))[:8]})")
    return _strip_prefixes(tensors)


def _allow_namespace() -> contextlib.AbstractContextManager:
    """Let the weights-only unpickler accept ``argparse.Namespace``: timm's training script stores its arguments
    beside the weights, and they hold only plain values. ``safe_globals`` is torch >= 2.5; torch 2.4 has only the
    process-wide ``add_safe_globals``; on older torch such files are refused like any other non-tensor object."""
    scoped = getattr(torch.serialization, "safe_globals", None)
    if scoped is not None:
        return scoped([argparse.Namespace])
    allow = getattr(torch.serialization, "add_safe_globals", None)
    if allow is not None:
        allow([argparse.Namespace])
    return contextlib.nullcontext()


def _check_file(path: Path) -> None:
    """CheckpointError unless ``path`` is a file that can be read and is not empty."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}" if not path.exists() else f"not a file: {path}")
    try:
        with open(path, "rb") as f:
            empty = not f.read(1)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or first_line(e)}") from None
    if empty:
        raise CheckpointError(f"{path} is empty (0 bytes): an interrupted download or copy? Fetch or copy it again")


def pickle_globals(data: bytes) -> list[str]:
    """The globals (``module.name``) a pickle refers to, in order of appearance, found by reading its opcodes
    without running any of them. What it cannot parse (a truncated pickle) ends the list."""
    import pickletools

    found: list[str] = []
    recent: list[str | None] = []  # the last (up to) two values pushed in a row: strings, or None for anything else
    memo: dict[int, str | None] = {}
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name in ("GLOBAL", "INST"):  # protocols 0-3: "module name" in the opcode's argument
                found.append(".".join(str(arg).split(" ", 1)))
            elif name == "STACK_GLOBAL" and len(recent) == 2 and None not in recent:
                found.append(f"{recent[0]}.{recent[1]}")  # protocol 4+: the two strings just pushed
            if name == "MEMOIZE" or name.endswith("PUT"):  # the stack is unchanged; its top is remembered
                memo[len(memo) if name == "MEMOIZE" else arg] = recent[-1] if recent else None
            elif name.endswith("GET"):
                recent = [*recent, memo.get(arg)][-2:]
            elif isinstance(arg, str) and ("UNICODE" in name or "STRING" in name):
                recent = [*recent, arg][-2:]
            else:
                recent = []
    except (ValueError, KeyError, IndexError):  # truncated, or not a pickle at all
        pass
    return list(dict.fromkeys(found))


def _refused_globals(path: Path, error: Exception) -> list[str]:
    """The globals of ``path``'s pickle that torch's weights-only unpickler does not allow: those torch's message
    names, or else those a scan of the pickle finds (torch stops at the first opcode it does not support, e.g. the
    FRAME of a plain protocol-4 pickle, before it sees any global)."""
    named = re.findall(r"GLOBAL ([\w.]+)", str(error))
    if named:
        return list(dict.fromkeys(named))
    try:  # torch.save's format is a zip archive, the pickle its data.pkl; else the file is a bare pickle
        data = _zip_member(path, "data.pkl", read=True) or path.read_bytes()
    except OSError:
        return []
    # torch's own allow-list (a private function, hence the fallback: then every global counts) and the user's
    allowed = set(getattr(torch._weights_only_unpickler, "_get_allowed_globals", dict)())
    user = getattr(torch.serialization, "get_safe_globals", list)()  # torch >= 2.5
    allowed |= {f"{g.__module__}.{g.__qualname__}" for g in user if hasattr(g, "__qualname__")}
    return [name for name in pickle_globals(data) if name not in allowed]


def _zip_member(path: Path, name: str, read: bool = False) -> bytes:
    """The content of the first member of ``path``'s zip archive named ``name`` (the name only, not its folder),
    empty when there is none or ``path`` is no zip archive; with ``read=False`` just b"x" when there is one."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            member = next((m for m in archive.namelist() if m.rsplit("/", 1)[-1] == name), None)
            return b"" if member is None else archive.read(member) if read else b"x"
    except (OSError, zipfile.BadZipFile):
        return b""


def _export_error(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path} is {what}, not a checkpoint; give the checkpoint it was exported from "
                           "(.pt, .safetensors, .pth)")


def read_torch_file(path: Path) -> Any:
    """``torch.load(path, weights_only=True)``, every failure one CheckpointError line: a missing, empty or unreadable
    file, a pickle refused because loading it could run code (naming the globals it refers to), a TorchScript export,
    or corrupt bytes. torch's warnings on the way (e.g. about a pickle protocol) are not shown: the error says what
    matters."""
    path = Path(path)
    _check_file(path)
    try:
        with _allow_namespace(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = _refused_globals(path, e)
        if not refused:
            raise CheckpointError(f"{path} is corrupt or truncated (not a readable PyTorch file)") from None
        shown = ", ".join(refused[:4]) + (f" and {len(refused) - 4} more" if len(refused) > 4 else "")
        raise CheckpointError(
            f"{path} was refused: its pickle refers to {shown}, which weights-only loading does not allow because "
            "unpickling such globals can run arbitrary code; a weights file may hold only tensors and plain values"
        ) from None
    except Exception as e:  # garbage bytes surface as any of a dozen exception types inside the unpickler
        if _zip_member(path, "constants.pkl"):
            raise _export_error(path, "an exported TorchScript model") from None
        raise CheckpointError(f"{path} is corrupt or truncated ({type(e).__name__}: {first_line(e)})") from None


def _read_safetensors(path: Path) -> tuple[StateDict, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is corrupt or truncated ({first_line(e)})") from None


# exported models, which eval, predict and export do not take for weights files (TorchScript's .pt is told apart
# by its content: read_torch_file)
EXPORT_SUFFIXES = {".onnx": "an exported ONNX model"}


def read_checkpoint(path: str | os.PathLike, use_ema: bool = False) -> Checkpoint:
    """Read a weights file of any supported kind and layout. Keys come back as written (layout unchanged)."""
    path = Path(path)
    _check_file(path)
    if path.suffix in EXPORT_SUFFIXES:
        raise _export_error(path, EXPORT_SUFFIXES[path.suffix])
    if path.suffix == ".safetensors":
        if use_ema:  # refused, not ignored: the caller asked for weights the file does not have
            raise CheckpointError(f"{path.name} holds no EMA weights: a .safetensors file keeps one set of weights "
                                  "(a training checkpoint, .pt, keeps the EMA beside them)")
        tensors, meta = _read_safetensors(path)
        config = json.loads(meta["model_config"]) if "model_config" in meta else None
        extra = json.loads(meta.get("extra", "{}"))
        return Checkpoint(_strip_prefixes(tensors), config, meta.get("model_name") or None, extra)
    obj = read_torch_file(path)
    state_dict = unwrap_state_dict(obj, use_ema=use_ema)
    config = obj.get("model_config") if isinstance(obj.get("model_config"), dict) else None
    name = obj.get("model_name") if isinstance(obj.get("model_name"), str) else None
    skip = (*WRAPPER_KEYS, "model_config", "model_name", "optimizer", "scaler", "rng")
    meta = {k: v for k, v in obj.items() if k not in skip}
    return Checkpoint(state_dict, config, name, meta)


# ----------------------------------------------------------------------------------------------------------------
# Another input-channel count
# ----------------------------------------------------------------------------------------------------------------
STEM_WEIGHT = "stem.0.weight"  # the patch-embedding conv: the one weight whose shape depends on the input channels


def adapt_input_channels(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A conv weight (out, C, kh, kw) made to take ``in_chans`` input channels instead of C.

    ``in_chans=1``: the sum over the C filters. More (or other) channels: the C filters repeated cyclically
    (channel j gets filter ``j mod C``), each scaled by ``C / in_chans``. This is timm's convention, and the reason
    is the output scale: on an input whose channels are alike (a grayscale image, or extra bands that look like the
    others), the adapted conv gives what the original gave on a C-channel image with those same channels. For one
    channel that holds exactly (a gray image is an RGB image with R = G = B); for ``in_chans`` a multiple of C too;
    otherwise approximately. The BatchNorm after the stem then sees the statistics it was trained on, which copying
    one filter, or the repeat without the rescaling, would not keep. The rest of the network is unchanged.
    """
    if weight.dim() != 4:
        raise CheckpointError(f"only a conv weight (out, in, kh, kw) can take another channel count, got {tuple(weight.shape)}")
    if not isinstance(in_chans, int) or isinstance(in_chans, bool) or in_chans < 1:
        raise CheckpointError(f"in_chans must be an integer >= 1, got {in_chans!r}")
    have = weight.shape[1]
    w = weight if weight.dtype in (torch.float32, torch.float64) else weight.float()  # half precision: sum in fp32
    if in_chans == 1:
        out = w.sum(dim=1, keepdim=True)
    else:
        out = w[:, torch.arange(in_chans) % have] * (have / in_chans)
    return out.to(weight.dtype)


@dataclass
class LoadReport:
    """How a checkpoint's keys matched a model's."""

    loaded: list[str]
    missing: list[str]  # in the model, not in the file
    unexpected: list[str]  # in the file, not in the model
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # (key, shape in file, shape in model)
    adapted: list[tuple[str, int, int]] = field(default_factory=list)  # (key, channels in file, in model), loaded

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def problem_keys(self) -> list[str]:
        return [*self.missing, *self.unexpected, *(k for k, _, _ in self.mismatched)]

    def describe(self, only: list[str] | None = None, limit: int = 6) -> str:
        keep = (lambda k: k in only) if only is not None else (lambda k: True)

        def fmt(items: list[str]) -> str:
            items = [i for i in items if keep(i)]
            return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")

        parts = []
        shapes = [f"{k} {list(a)} in file vs {list(b)} in model" for k, a, b in self.mismatched if keep(k)]
        if shapes:
            parts.append("shape mismatch: " + "; ".join(shapes[:limit]) +
                         (f" and {len(shapes) - limit} more" if len(shapes) > limit else ""))
        if any(keep(k) for k in self.missing):
            parts.append(f"missing from file: {fmt(self.missing)}")
        if any(keep(k) for k in self.unexpected):
            parts.append(f"not in model: {fmt(self.unexpected)}")
        if only is None:
            parts += [f"{k} adapted from {a} to {b} input channel(s)" for k, a, b in self.adapted]
        return "; ".join(parts) or "all keys match"


def _adapt_stem(state_dict: StateDict, own: StateDict) -> tuple[StateDict, list[tuple[str, int, int]]]:
    """``state_dict`` with the stem conv weight adapted to the model's input channels, where only those differ."""
    have, want = state_dict.get(STEM_WEIGHT), own.get(STEM_WEIGHT)
    if have is None or want is None or have.dim() != 4 or want.dim() != 4:
        return state_dict, []
    if have.shape[1] == want.shape[1] or have.shape[:1] + have.shape[2:] != want.shape[:1] + want.shape[2:]:
        return state_dict, []
    adapted = adapt_input_channels(have, want.shape[1])
    return {**state_dict, STEM_WEIGHT: adapted}, [(STEM_WEIGHT, have.shape[1], want.shape[1])]


def match_state_dict(model: nn.Module, state_dict: StateDict, adapt_in_chans: bool = True) -> tuple[StateDict, LoadReport]:
    """Split ``state_dict`` into what fits ``model`` (same key, same shape) and a report of the rest.

    With ``adapt_in_chans``, a stem conv weight that differs from the model's only in its input channels is made
    to fit (:func:`adapt_input_channels`) and listed in the report's ``adapted``.
    """
    own = model.state_dict()
    if detect_layout(state_dict) == "official" and detect_layout(own) == "timm":
        state_dict = official_to_timm(state_dict)
    adapted: list[tuple[str, int, int]] = []
    if adapt_in_chans:
        state_dict, adapted = _adapt_stem(state_dict, own)
    fitting = {k: v for k, v in state_dict.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    report = LoadReport(
        loaded=list(fitting),
        missing=[k for k in own if k not in state_dict],
        unexpected=[k for k in state_dict if k not in own],
        mismatched=[(k, tuple(state_dict[k].shape), tuple(v.shape)) for k, v in own.items()
                    if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)],
        adapted=adapted,
    )
    return fitting, report


def load_checkpoint(model: nn.Module, path: str | os.PathLike, strict: bool = True, use_ema: bool = False,
                    adapt_in_chans: bool = True) -> LoadReport:
    """Load weights from ``path`` into ``model`` in place, whatever the file's layout.

    strict=True: every key must be present with the same shape, or a :class:`CheckpointError` names the
    offending keys and shapes and nothing is loaded. strict=False: load what fits and report the rest
    (e.g. a 1000-class checkpoint into a 10-class model leaves the head as it was). With ``adapt_in_chans``
    (the default) weights for another input-channel count load: the stem conv's filters are summed (one
    channel) or repeated and rescaled (:func:`adapt_input_channels`), and ``report.adapted`` says so.
    """
    ckpt = read_checkpoint(path, use_ema=use_ema)
    fitting, report = match_state_dict(model, ckpt.state_dict, adapt_in_chans=adapt_in_chans)
    if strict and not report.ok:
        raise CheckpointError(f"{path} does not fit the model: {report.describe()}")
    if not fitting:
        raise CheckpointError(f"{path}: no weight fits the model ({report.describe()})")
    model.load_state_dict(fitting, strict=False)
    return report


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------
def save_checkpoint(
    model: nn.Module | StateDict,
    path: str | os.PathLike,
    *,
    model_config: dict[str, Any] | None = None,
    model_name: str | None = None,
    layout: str = "timm",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write weights as safetensors, with the model config as metadata, atomically.

    ``model_config`` defaults to ``model.config()`` and ``model_name`` to the registry name the model was
    created under, so :func:`convmixer.factory.build_from_checkpoint` can rebuild it. ``layout="official"`` writes the
    official ``nn.Sequential`` key names (for tools that expect them). ``extra`` is any JSON-able dict.
    """
    from safetensors.torch import save as st_save

    if isinstance(model, nn.Module):
        state_dict = model.state_dict()
        model_config = model_config or (model.config() if hasattr(model, "config") else None)
        model_name = model_name or getattr(model, "registry_name", None)
    else:
        state_dict = model
    state_dict = convert_layout(_strip_prefixes(dict(state_dict)), layout)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    metadata = {"format": FORMAT, "layout": layout, "extra": json.dumps(extra or {})}
    if model_config is not None:
        metadata["model_config"] = json.dumps(model_config)
    if model_name:
        metadata["model_name"] = model_name
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"save_checkpoint writes .safetensors files, got {path.name!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            f.write(st_save(tensors, metadata=metadata))
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def fetch_weights(source: str | os.PathLike) -> Path:
    """A local path as is; an http(s) URL downloaded once into the cache (torch.hub writes atomically)."""
    source = str(source)
    scheme = urllib.parse.urlparse(source).scheme
    if scheme not in ("http", "https"):
        return Path(source)
    dest = cache_dir("weights") / Path(urllib.parse.urlparse(source).path).name
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(source, str(dest), progress=True)
    except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors
        raise CheckpointError(
            f"could not download {source} ({e}); download it by hand and pass the file's path instead"
        ) from None
    return dest
