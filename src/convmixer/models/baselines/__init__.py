"""Baselines for the paper's comparison (ResNet, ViT, MLP-Mixer, ResMLP) and for segmentation (U-Net), registered
on import.

See docs/baselines.md for what each follows, how it was scaled to small images and the registered sizes.
"""

from . import variants  # noqa: F401  (registers the baseline variants)
from .mlp_mixer import MlpMixer
from .resmlp import ResMLP
from .resnet import ResNet
from .unet import UNet
from .vit import VisionTransformer

__all__ = ["MlpMixer", "ResMLP", "ResNet", "UNet", "VisionTransformer"]
