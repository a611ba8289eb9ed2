"""ConvMixer ("Patches Are All You Need?", Trockman & Kolter 2022): the exact model, the paper's variants,
checkpoints in every published layout, and the tools to train, evaluate, benchmark and deploy it."""

from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .errors import CheckpointError, ConfigError, ConvMixerError, DataError, InputShapeError, UnknownModelError
from .factory import build_from_checkpoint, build_model, create_model
from .models import ConvMixer, PretrainedCfg, get_model_entry, list_models, register_model

__version__ = "0.1.0"

__all__ = [
    "ConvMixer", "PretrainedCfg", "create_model", "get_model_entry", "list_models", "register_model",
    "load_checkpoint", "save_checkpoint", "read_checkpoint", "build_from_checkpoint", "build_model",
    "ConvMixerError", "ConfigError", "UnknownModelError", "InputShapeError", "CheckpointError", "DataError",
]
