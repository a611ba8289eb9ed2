"""Building models: the one module that joins the registry (:mod:`convmixer.models`) and weights files
(:mod:`convmixer.checkpoint`).

It sits above both, so neither imports the other: ``errors``/``io`` <- ``models``, ``checkpoint`` <- ``factory``
<- ``inference``, ``training``, ``experiments``, ``export``, ``cli`` (tests/test_layers.py checks the order).

- :func:`create_model`: a registered model by name, optionally with pretrained weights.
- :func:`build_model`: a registered model sized for its data (channels, classes, image size), what training builds.
- :func:`model_from_checkpoint` / :func:`build_from_checkpoint`: the model a weights file holds, weights loaded.
- :func:`load_pretrained_backbone`: a segmentation model's backbone from a classifier's (or a segmenter's) weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import (Checkpoint, LoadReport, detect_layout, fetch_weights, load_checkpoint, match_state_dict,
                         official_to_timm, read_checkpoint)
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
            more); every other weight must fit exactly. A segmentation model (one with a ConvMixer ``backbone``)
            takes its backbone from the file and starts with fresh heads (:func:`load_pretrained_backbone`; its
            report is kept as ``model.pretrained_report``).
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
    if isinstance(getattr(model, "backbone", None), ConvMixer):  # a segmenter: the backbone only, fresh heads
        model.pretrained_report = load_pretrained_backbone(model, source)
        return
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


BACKBONE = "backbone."  # a segmentation model's backbone keys: a ConvMixer classifier's under this prefix
BACKBONE_PARTS = ("stem.", "blocks.")  # what of a ConvMixer is backbone (its head is not)


@dataclass
class BackboneReport:
    """What :func:`load_pretrained_backbone` did."""

    source: str
    loaded: list[str]  # the model's keys set from the file (backbone.stem.*, backbone.blocks.*)
    skipped: list[str]  # the file's keys left unused (a classifier's head.*, a segmenter's decode/aux heads)
    adapted: list[tuple[str, int, int]]  # (key, channels in file, in model): the stem filters made to fit

    def describe(self) -> str:
        shown = ", ".join(self.skipped[:4]) + (f" and {len(self.skipped) - 4} more" if len(self.skipped) > 4 else "")
        adapted = "".join(f"; {k} adapted from {a} to {b} input channel(s)" for k, a, b in self.adapted)
        return (f"backbone: {len(self.loaded)} tensors loaded from {self.source}{adapted}; "
                f"skipped: {shown or 'nothing'}; heads freshly initialized")


def _prefixed(report: LoadReport, prefix: str) -> LoadReport:
    return LoadReport([prefix + k for k in report.loaded], [prefix + k for k in report.missing],
                      [prefix + k for k in report.unexpected], [(prefix + k, a, b) for k, a, b in report.mismatched],
                      [(prefix + k, a, b) for k, a, b in report.adapted])


def load_pretrained_backbone(model: nn.Module, source: str | os.PathLike, *, use_ema: bool = False) -> BackboneReport:
    """Initialize ``model.backbone`` (a segmentation model's ConvMixer: stem and blocks) from a weights file and
    re-initialize the model's heads.

    ``source``: a path or URL of a ConvMixer classifier's weights (a training run's ``last.pt``/``best.pt``, a
    ``save_checkpoint`` .safetensors file, the released ImageNet weights in the official or the timm layout) or of
    a segmentation model's (its ``backbone.*`` keys). The classifier's head (or the segmenter's heads) is skipped.
    A file for another input-channel count has its stem filters adapted as the classifier path does
    (:func:`~convmixer.checkpoint.adapt_input_channels`). Every backbone key must be in the file with the model's
    shape, and the file may hold no other blocks: anything else (another dim, depth, kernel or patch size) is a
    one-line :class:`CheckpointError` naming the parameters, and nothing is loaded.
    """
    backbone = getattr(model, "backbone", None)
    name = getattr(model, "registry_name", None) or type(model).__name__
    if not isinstance(backbone, ConvMixer):
        raise ConfigError(f"{name} has no ConvMixer backbone to initialize")
    path = fetch_weights(source)
    state = read_checkpoint(path, use_ema=use_ema).state_dict
    if detect_layout(state) == "official":
        state = official_to_timm(state)
    prefix = BACKBONE if any(k.startswith(BACKBONE) for k in state) else ""

    def part(key: str) -> str | None:  # the backbone-relative key, None for what is not backbone
        rest = key[len(prefix):]
        return rest if key.startswith(prefix) and rest.startswith(BACKBONE_PARTS) else None

    wanted = {part(k): v for k, v in state.items() if part(k) is not None}
    fitting, report = match_state_dict(backbone, wanted, adapt_in_chans=True)
    if not report.ok:
        raise CheckpointError(f"{path} does not fit the backbone of {name} (build it with the file's dim, depth, "
                              f"kernel_size and patch_size): {_prefixed(report, BACKBONE).describe()}")
    backbone.load_state_dict(fitting)
    model.reset_heads()
    return BackboneReport(str(path), [BACKBONE + k for k in fitting], [k for k in state if part(k) is None],
                          _prefixed(report, BACKBONE).adapted)
