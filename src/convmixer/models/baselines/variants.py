"""Registered baselines for the paper's comparison: one line each.

The small ones are built for Fashion-MNIST (1 x 28 x 28, 10 classes) and come in three sizes per family,
about 0.1M, 0.3M, 0.6M and 1M parameters, to stand beside the small ConvMixers (see docs/baselines.md for the
counts). The patch-based families also have a p=2 model of about 0.6M, whose 14 x 14 grid matches
ConvMixer-256/8 with p=2. ``resnet18_cifar`` and ``vit_tiny_p4`` keep the standard ResNet-18 and ViT-Ti
geometries, on CIFAR-10 (3 x 32 x 32). Override ``in_chans``/``img_size``/``num_classes`` for other data: e.g.
``create_model("mixer_96_8_p4", img_size=32, in_chans=3)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from ..registry import PretrainedCfg, register_model
from ..variants import CIFAR10, FASHION_MNIST, FMNIST_SCENES
from .mlp_mixer import MlpMixer
from .resmlp import ResMLP
from .resnet import ResNet
from .unet import UNet
from .vit import VisionTransformer

FMNIST = PretrainedCfg(**FASHION_MNIST)
CIFAR = PretrainedCfg(**CIFAR10)


def register_baseline(name: str, builder: Callable[..., nn.Module], family: str, description: str,
                      cfg: PretrainedCfg = FMNIST, **kwargs) -> None:
    """Register with ``num_classes``, ``in_chans`` (and ``img_size`` where the builder takes it) from ``cfg``."""
    if "img_size" in inspect.signature(builder).parameters:
        kwargs["img_size"] = cfg.input_size[1]
    register_model(name, builder, cfg=cfg, family=family, description=description,
                   num_classes=cfg.num_classes, in_chans=cfg.input_size[0], **kwargs)


def resnet(name: str, n: int, widths: tuple[int, ...], description: str, **kwargs) -> None:
    register_baseline(name, ResNet, "resnet", description, depths=(n,) * len(widths), widths=widths, **kwargs)


def vit(name: str, dim: int, depth: int, heads: int, p: int, **kwargs) -> None:
    register_baseline(name, VisionTransformer, "vit", f"ViT D={dim}, depth {depth}, {heads} heads, p={p}",
                      dim=dim, depth=depth, num_heads=heads, patch_size=p, **kwargs)


def mixer(name: str, dim: int, depth: int, p: int, **kwargs) -> None:
    register_baseline(name, MlpMixer, "mlp_mixer", f"Mixer C={dim}, depth {depth}, p={p}",
                      dim=dim, depth=depth, patch_size=p, **kwargs)


def resmlp(name: str, dim: int, depth: int, p: int, **kwargs) -> None:
    register_baseline(name, ResMLP, "resmlp", f"ResMLP d={dim}, depth {depth}, p={p}",
                      dim=dim, depth=depth, patch_size=p, **kwargs)


# ResNet (He et al. 2016): CIFAR ResNet-6n+2 with option A shortcuts; ResNet-18 with option B, 3x3 stem
resnet("resnet20_10_20_40", 3, (10, 20, 40), "ResNet-20, 10/20/40 (5/8 wide), option A")
resnet("resnet20", 3, (16, 32, 64), "ResNet-20, 16/32/64, option A")
resnet("resnet32", 5, (16, 32, 64), "ResNet-32, 16/32/64, option A")
resnet("resnet44", 7, (16, 32, 64), "ResNet-44, 16/32/64, option A")
resnet("resnet56", 9, (16, 32, 64), "ResNet-56, 16/32/64, option A")
resnet("resnet20_w2", 3, (32, 64, 128), "ResNet-20 x2 wide, 32/64/128")
resnet("resnet18_cifar", 2, (64, 128, 256, 512), "ResNet-18, 3x3 stem, option B", cfg=CIFAR, shortcut="B")

# ViT / DeiT (Dosovitskiy et al. 2021, Touvron et al. 2021): class token, heads of 32 (ViT-Ti: 64)
vit("vit_48_4_p4", 48, 4, 3, 4)  # heads of 16
vit("vit_64_6_p4", 64, 6, 2, 4)
vit("vit_96_6_p4", 96, 6, 3, 4)
vit("vit_128_6_p4", 128, 6, 4, 4)
vit("vit_96_6_p2", 96, 6, 3, 2)
vit("vit_tiny_p4", 192, 12, 3, 4, cfg=CIFAR)

# MLP-Mixer (Tolstikhin et al. 2021): D_S = C/2, D_C = 4C as in Mixer-S/B
mixer("mixer_48_5_p4", 48, 5, 4)
mixer("mixer_64_8_p4", 64, 8, 4)
mixer("mixer_96_8_p4", 96, 8, 4)
mixer("mixer_128_8_p4", 128, 8, 4)
mixer("mixer_80_8_p2", 80, 8, 2)

# ResMLP (Touvron et al. 2021): depth 12 as ResMLP-S12, MLP ratio 4, LayerScale 0.1
resmlp("resmlp_28_12_p4", 28, 12, 4)
resmlp("resmlp_48_12_p4", 48, 12, 4)
resmlp("resmlp_80_12_p4", 80, 12, 4)
resmlp("resmlp_96_12_p4", 96, 12, 4)
resmlp("resmlp_48_12_p2", 48, 12, 2)

# U-Net (Ronneberger et al. 2015): the segmentation baseline, sized to convmixer_seg_fmnist (165,102 vs 169,388)
register_model("unet_fmnist", UNet, cfg=FMNIST_SCENES, family="unet", task="segmentation",
               description="U-Net, width 19, 2 levels", width=19, levels=2, num_classes=11, in_chans=1)
# the deeper check: 3 levels (receptive field 92 px, the ConvMixer's 66 px), 188,961 parameters (11.6% more)
register_model("unet3_fmnist", UNet, cfg=FMNIST_SCENES, family="unet", task="segmentation",
               description="U-Net, width 10, 3 levels", width=10, levels=3, num_classes=11, in_chans=1)
