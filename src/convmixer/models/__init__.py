from .backbone import FeatureExtractor, FeatureInfo
from .classifier import GlobalPool2d
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
from .segmentation import ConvMixerSegmenter

__all__ = [
    "ACTIVATIONS", "ConvMixer", "ConvMixerSegmenter", "FeatureExtractor", "FeatureInfo", "GlobalPool2d", "Residual", "IMAGENET_MEAN", "IMAGENET_STD", "ModelEntry", "PretrainedCfg",
    "build_registered", "get_model_entry", "list_models", "model_kwargs", "register_model",
]
