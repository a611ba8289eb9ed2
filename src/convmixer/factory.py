"""Building models: the one module that joins the registry (:mod:`convmixer.models`) and weights files
(:mod:`convmixer.checkpoint`).

It sits above both, so neither imports the other: ``errors``/``io`` <- ``models``, ``checkpoint`` <- ``factory``
<- ``inference``, ``training``, ``experiments``, ``export``, ``cli`` (tests/test_layers.py checks the order).

- :func:`create_model`: a registered model by name, optionally with pretrained weights.
- :func:`build_model`: a registered model sized for its data (channels, classes, image size), what training builds.
- :func:`model_from_checkpoint` / :func:`build_from_checkpoint`: the model a weights file holds, weights loaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import Checkpoint, fetch_weights, load_checkpoint, match_state_dict, read_checkpoint
from .errors import CheckpointError, ConfigError
from .models import ConvMixer, ModelEntry, build_registered, get_model_entry, model_kwargs
from .models.backbone import FeatureExtractor


def create_model(name: str, *, pretrained: bool | str | Path = False, features_only: bool = False,
                 out_indices: int | Sequence[int] | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`~convmixer.models.list_models`.
        pretrained: ``True`` downloads the released weights into the cache; a path or URL loads that file.
            With a ``num_classes`` override that differs from the weights', the head is left freshly
            initialized (fine-tuning); with an ``in_chans`` override, the stem's filters are adapted
            (:func:`~convmixer.checkpoint.adapt_input_channels`: summed for 1 channel, repeated and rescaled for
            more); every other weight must fit exactly.
        features_only: return a :class:`~convmixer.models.backbone.FeatureExtractor` (ConvMixers only): its
            forward gives the maps of the blocks ``out_indices`` names as a list, and its ``feature_info``
            describes them.
        out_indices: with ``features_only``: None (every block), an int n (the last n blocks) or block indices
            (negative ones from the end).
        overrides: builder arguments replacing the registered defaults (``num_classes``, ``in_chans``, ...).
    """
    if out_indices is not None and not features_only:
        raise ConfigError("out_indices chooses feature maps; pass features_only=True with it")
    entry = get_model_entry(name)
    model = build_registered(name, **overrides)
    if pretrained:
        _load_pretrained(model, entry, pretrained)
    if features_only:
        return FeatureExtractor(model, out_indices)
    return model


def build_model(name: str, *, in_chans: int | None = None, num_classes: int | None = None,
                image_size: int | None = None, pretrained: bool | str | Path = False, **overrides: Any) -> nn.Module:
    """The registered model ``name`` sized for its data, pretrained weights loaded as :func:`create_model` does.

    ``in_chans`` and ``num_classes`` (when given) replace the builder's values. ``image_size`` is passed only to
    builders whose registered arguments take one (as ``image_size`` or ``img_size``: the baselines whose token
    count depends on the input size); a ConvMixer takes any size and ignores it.
    """
    sized = dict(overrides)
    if in_chans is not None:
        sized["in_chans"] = in_chans
    if num_classes is not None:
        sized["num_classes"] = num_classes
    if image_size is not None:
        kwargs = model_kwargs(name, **sized)
        if "image_size" in kwargs or "img_size" in kwargs:  # baselines whose token count depends on the input size
            sized["image_size" if "image_size" in kwargs else "img_size"] = image_size
    return create_model(name, pretrained=pretrained, **sized)


def _load_pretrained(model: nn.Module, entry: ModelEntry, pretrained: bool | str | Path) -> None:
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


def model_from_checkpoint(ckpt: Checkpoint, model_name: str | None = None, **overrides: Any) -> nn.Module:
    """Rebuild the model ``ckpt`` holds and load its weights strictly.

    Files without a stored config (the released paper weights) need ``model_name``; overrides such as
    ``act="relu"`` replace stored settings. An ``in_chans`` override adapts the stem's filters to it
    (:func:`~convmixer.checkpoint.adapt_input_channels`); without one the file's channel count must fit.
    """
    name = model_name or ckpt.model_name
    config = {**(ckpt.model_config or {}), **overrides}
    if name:
        model = build_registered(name, **config)
    elif ckpt.model_config:
        model = ConvMixer(**config)
    else:
        raise CheckpointError("the checkpoint does not say which model it holds; pass the model name (--model NAME)")
    fitting, report = match_state_dict(model, ckpt.state_dict, adapt_in_chans="in_chans" in overrides)
    if not report.ok:
        raise CheckpointError(f"the checkpoint does not fit {name or 'its stored config'}: {report.describe()}")
    model.load_state_dict(fitting)
    return model


def build_from_checkpoint(path: str | os.PathLike, model_name: str | None = None, use_ema: bool = False,
                          **overrides: Any) -> nn.Module:
    """Read ``path`` and rebuild its model with the weights loaded (see :func:`model_from_checkpoint`)."""
    try:
        return model_from_checkpoint(read_checkpoint(path, use_ema=use_ema), model_name, **overrides)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
