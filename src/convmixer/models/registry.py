"""The model registry: every architecture this project can build, by name.

A registered entry is a builder plus its default keyword arguments and a :class:`PretrainedCfg`
saying how its released weights (if any) expect input. Registering a name twice is an error, so a
name always means one architecture.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from torch import nn

from ..errors import CheckpointError, ConfigError, UnknownModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    kwargs: Mapping[str, Any]  # default builder arguments; create_model's overrides replace them
    cfg: PretrainedCfg = field(default_factory=PretrainedCfg)
    family: str = "convmixer"  # "convmixer" or a baseline family ("resnet", "vit", ...)
    description: str = ""


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    builder: Callable[..., nn.Module],
    *,
    cfg: PretrainedCfg | None = None,
    family: str = "convmixer",
    description: str = "",
    **kwargs: Any,
) -> ModelEntry:
    """Register ``builder(**kwargs)`` under ``name``; a name that is already taken is refused."""
    if name in _REGISTRY:
        raise ConfigError(f"model {name!r} is already registered")
    entry = ModelEntry(name, builder, MappingProxyType(dict(kwargs)), cfg or PretrainedCfg(), family, description)
    _REGISTRY[name] = entry
    return entry


def _ensure_populated() -> None:
    # The variants register themselves on import; importing here keeps registry.py free of cycles.
    from . import baselines, variants  # noqa: F401


def list_models(pattern: str | None = None, family: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell-style ``pattern`` and ``family``."""
    _ensure_populated()
    names = sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)
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
    """The builder arguments ``create_model(name, **overrides)`` would use."""
    entry = get_model_entry(name)
    return {**entry.kwargs, **overrides}


def create_model(name: str, *, pretrained: bool | str | Path = False, **overrides: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        pretrained: ``True`` downloads the released weights into the cache; a path or URL loads that file.
            With a ``num_classes`` override that differs from the weights', the head is left freshly
            initialized (fine-tuning); every other weight must fit exactly.
        overrides: builder arguments replacing the registered defaults (``num_classes``, ``in_chans``, ...).
    """
    entry = get_model_entry(name)
    kwargs = {**entry.kwargs, **overrides}
    try:
        model = entry.builder(**kwargs)
    except TypeError as e:  # an override the builder does not take
        raise ConfigError(f"cannot build {name!r} with {overrides}: {e}") from None
    model.registry_name = name  # lets save_checkpoint record which entry built it
    if pretrained:
        _load_pretrained(model, entry, pretrained)
    return model


def _load_pretrained(model: nn.Module, entry: ModelEntry, pretrained: bool | str | Path) -> None:
    from ..checkpoint import fetch_weights, load_checkpoint

    source = entry.cfg.url if pretrained is True else str(pretrained)
    if not source:
        raise CheckpointError(f"{entry.name} has no released weights; pass a checkpoint path as pretrained=")
    path = fetch_weights(source)
    report = load_checkpoint(model, path, strict=False)
    head = getattr(model, "head", None)
    head_keys = {f"head.{k}" for k in head.state_dict()} if isinstance(head, nn.Module) else set()
    problems = [k for k in report.problem_keys() if k not in head_keys]
    if problems:
        raise CheckpointError(f"{path} does not fit {entry.name}: {report.describe(only=problems)}")
