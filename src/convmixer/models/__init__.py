from .convmixer import ACTIVATIONS, ConvMixer, Residual
from .registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelEntry,
    PretrainedCfg,
    create_model,
    get_model_entry,
    list_models,
    model_kwargs,
    register_model,
)

__all__ = [
    "ACTIVATIONS", "ConvMixer", "Residual", "IMAGENET_MEAN", "IMAGENET_STD", "ModelEntry", "PretrainedCfg",
    "create_model", "get_model_entry", "list_models", "model_kwargs", "register_model",
]
