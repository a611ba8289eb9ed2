"""The model registry: every architecture this project can build, by name.

A registered entry is a builder plus its default keyword arguments and a :class:`PretrainedCfg`
saying how its released weights (if any) expect input. Registering a name twice is an error, so a
name always means one architecture. :func:`build_registered` builds an entry with fresh weights; loading
pretrained weights is :func:`convmixer.factory.create_model`'s job (it needs :mod:`convmixer.checkpoint`,
which sits above this package).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from ..data.registry import IMAGENET_MEAN, IMAGENET_STD, TASKS
from ..errors import ConfigError, UnknownModelError


@dataclass(frozen=True)
class PretrainedCfg:
    """Preprocessing and provenance of a model's reference weights."""

    url: str | None = None  # where the released weights can be downloaded (None: no released weights)
    input_size: tuple[int, int, int] = (3, 224, 224)  # (channels, height, width) in pixels
    crop_pct: float = 0.96  # eval: resize the short side to size / crop_pct, then center-crop `size`
    interpolation: str = "bicubic"  # resampling filter for the eval resize
    mean: tuple[float, ...] = IMAGENET_MEAN  # per-channel mean of 0..1 pixels, subtracted before the model
    std: tuple[float, ...] = IMAGENET_STD  # per-channel std of 0..1 pixels, divided out before the model
    num_classes: int = 1000  # classes the reference weights predict
    top1: float | None = None  # published top-1 accuracy (%) of the released weights
    top5: float | None = None  # published top-5 accuracy (%) of the released weights
    class_names: str | None = None  # names of the reference weights' classes: "imagenet" (ILSVRC-2012) or None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    kwargs: Mapping[str, Any]  # default builder arguments; build_registered's overrides replace them
    cfg: PretrainedCfg = field(default_factory=PretrainedCfg)
    family: str = "convmixer"  # "convmixer" or a baseline family ("resnet", "vit", "unet", ...)
    description: str = ""
    task: str = "classification"  # what it predicts (data.registry.TASKS): a class per image, or one per pixel


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    builder: Callable[..., nn.Module],
    *,
    cfg: PretrainedCfg | None = None,
    family: str = "convmixer",
    description: str = "",
    task: str = "classification",
    **kwargs: Any,
) -> ModelEntry:
    """Register ``builder(**kwargs)`` under ``name``; a name that is already taken is refused. ``task`` says what
    the model predicts: "classification" ((B, num_classes) logits) or "segmentation" ((B, num_classes, H, W))."""
    if name in _REGISTRY:
        raise ConfigError(f"model {name!r} is already registered")
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    entry = ModelEntry(name, builder, MappingProxyType(dict(kwargs)), cfg or PretrainedCfg(), family, description,
                       task)
    _REGISTRY[name] = entry
    return entry


def _ensure_populated() -> None:
    # The variants register themselves on import; importing here keeps registry.py free of cycles.
    from . import baselines, variants  # noqa: F401


def list_models(pattern: str | None = None, family: str | None = None, task: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell-style ``pattern``, ``family`` and ``task``."""
    _ensure_populated()
    names = sorted(n for n, e in _REGISTRY.items()
                   if (family is None or e.family == family) and (task is None or e.task == task))
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; an unknown name raises an error that lists close matches."""
    _ensure_populated()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; run `convmixer list` to see them all"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None


def model_kwargs(name: str, **overrides: Any) -> dict[str, Any]:
    """The builder arguments ``build_registered(name, **overrides)`` (and ``create_model``) would use."""
    entry = get_model_entry(name)
    return {**entry.kwargs, **overrides}


def build_registered(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` with freshly initialized weights (no pretrained weights: see
    :func:`convmixer.factory.create_model`).

    ``overrides`` replace the registered builder arguments (``num_classes``, ``in_chans``, ...); one the builder does
    not take is a :class:`ConfigError`. The model's ``registry_name`` is set to ``name``.
    """
    entry = get_model_entry(name)
    kwargs = {**entry.kwargs, **overrides}
    try:
        model = entry.builder(**kwargs)
    except TypeError as e:  # an override the builder does not take
        raise ConfigError(f"cannot build {name!r} with {overrides}: {e}") from None
    model.registry_name = name  # lets save_checkpoint record which entry built it
    return model


def size_multiple(model: nn.Module) -> int:
    """The side (px) a model's input sides are best multiples of: the model's own ``size_multiple`` (a U-Net's
    2^levels), else its patch size (whole patches, nothing cut off by the stem), else 1."""
    return int(getattr(model, "size_multiple", None) or getattr(model, "patch_size", None) or 1)
