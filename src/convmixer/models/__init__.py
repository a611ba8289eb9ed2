from .convmixer import ACTIVATIONS, ConvMixer, Residual
from .registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelEntry,
    PretrainedCfg,
    build_registered,
    get_model_entry,
    list_models,
    model_kwargs,
    register_model,
)

__all__ = [
    "ACTIVATIONS", "ConvMixer", "Residual", "IMAGENET_MEAN", "IMAGENET_STD", "ModelEntry", "PretrainedCfg",
    "build_registered", "get_model_entry", "list_models", "model_kwargs", "register_model",
]
