"""Load any checkpoint for inference, together with the preprocessing its model expects.

Eval, predict and export all start here: a training checkpoint (.pt) carries its data settings (classes,
image size, mean/std); a ``save_checkpoint`` file or a released paper file falls back to the registry's
:class:`~convmixer.models.PretrainedCfg` for the named model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from torch import nn

from .checkpoint import read_checkpoint
from .factory import model_from_checkpoint
from .models import get_model_entry


@dataclass
class LoadedModel:
    model: nn.Module  # in eval mode, on the CPU
    name: str | None  # registry name
    num_classes: int
    in_chans: int
    image_size: int  # square input side (px) the model was trained/evaluated at
    mean: tuple[float, ...]  # per-channel mean of 0..1 pixels
    std: tuple[float, ...]
    crop_pct: float  # eval: resize to image_size / crop_pct, then center crop
    interpolation: str
    classes: list[str] | None  # class names: recorded in the checkpoint, or the ImageNet names of released weights
    dataset: str | None  # the dataset it was trained on, when recorded
    data_config: dict | None = None  # the training run's DataConfig fields, when recorded
    test_flip: bool = False  # the run evaluated with test-time flip (aug.test_flip), so eval reproduces it
    task: str = "classification"  # what the model predicts: its registry entry's task (segmentation: masks)


def load_for_inference(path: str | os.PathLike, model_name: str | None = None, use_ema: bool = False) -> LoadedModel:
    ckpt = read_checkpoint(path, use_ema=use_ema)
    model = model_from_checkpoint(ckpt, model_name).eval()
    name = model_name or ckpt.model_name
    meta = ckpt.metadata
    train_cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    data_cfg = train_cfg.get("data", {})
    entry_cfg = get_model_entry(name).cfg if name else None
    in_chans = getattr(model, "in_chans", entry_cfg.input_size[0] if entry_cfg else 3)
    num_classes = getattr(model, "num_classes", entry_cfg.num_classes if entry_cfg else 0)

    def pick(key: str, default):
        for source in (meta, data_cfg):
            if source.get(key) is not None:
                return source[key]
        return default

    image_size = int(pick("image_size", entry_cfg.input_size[1] if entry_cfg else 224))
    mean = tuple(pick("mean", entry_cfg.mean if entry_cfg else (0.5,) * in_chans))
    std = tuple(pick("std", entry_cfg.std if entry_cfg else (0.5,) * in_chans))
    if len(mean) != in_chans:  # registry defaults are RGB; a 1-channel model trained without records
        mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
    crop_pct = float(pick("crop_pct", entry_cfg.crop_pct if entry_cfg else 1.0))
    interpolation = str(pick("interpolation", entry_cfg.interpolation if entry_cfg else "bicubic"))
    classes = meta.get("classes") if isinstance(meta.get("classes"), list) else None
    if classes is None and entry_cfg and entry_cfg.class_names == "imagenet" and num_classes == 1000:
        from .data.imagenet import imagenet_classes  # the released weights store no names

        classes = imagenet_classes()
    return LoadedModel(model, name, num_classes, in_chans, image_size, mean, std, crop_pct, interpolation, classes,
                       data_cfg.get("dataset"), data_cfg or None,
                       bool((train_cfg.get("aug") or {}).get("test_flip", False)),
                       get_model_entry(name).task if name else "classification")
