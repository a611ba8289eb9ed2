"""Registered ConvMixer variants: one line each.

ImageNet variants are the paper's (Table 1 and the released weights); CIFAR-scale ones are the
official convmixer-cifar10 model and the appendix's p=1 models; the segmentation ones (task "segmentation") put a
decode head on a ConvMixer backbone.
"""

from __future__ import annotations

from ..data.registry import get_dataset_info
from .convmixer import ConvMixer
from .registry import PretrainedCfg, register_model
from .segmentation import ConvMixerSegmenter

RELEASES = "https://github.com/tmp-iclr/convmixer/releases/download/timm-v1.0/"


def _trained_on(dataset: str) -> dict:
    """PretrainedCfg fields of a model trained on ``dataset`` at its native size: the data registry's facts."""
    d = get_dataset_info(dataset)
    return dict(input_size=(d.in_chans, d.image_size, d.image_size), crop_pct=1.0, mean=d.mean, std=d.std,
                num_classes=d.num_classes)


FASHION_MNIST = _trained_on("fashion_mnist")  # (1, 28, 28), 10 classes, mean 0.2860, std 0.3530
CIFAR10 = _trained_on("cifar10")  # (3, 32, 32), 10 classes


def imagenet(weights: str | None = None, top1: float | None = None, top5: float | None = None) -> PretrainedCfg:
    return PretrainedCfg(url=RELEASES + weights if weights else None, top1=top1, top5=top5, class_names="imagenet")


def register_convmixer(name: str, dim: int, depth: int, k: int, p: int, cfg: PretrainedCfg, **kwargs) -> None:
    description = f"ConvMixer-{dim}/{depth}, k={k}, p={p}" + (f", {kwargs['act']}" if "act" in kwargs else "")
    register_model(name, ConvMixer, cfg=cfg, description=description, dim=dim, depth=depth, kernel_size=k,
                   patch_size=p, num_classes=cfg.num_classes, in_chans=cfg.input_size[0], **kwargs)


# ImageNet-1k, 224 x 224 (the paper)
register_convmixer("convmixer_1536_20", 1536, 20, 9, 7, imagenet("convmixer_1536_20_ks9_p7.pth.tar", 81.37, 95.62))
register_convmixer("convmixer_768_32", 768, 32, 7, 7, imagenet("convmixer_768_32_ks7_p7_relu.pth.tar", 80.16, 95.07), act="relu")
register_convmixer("convmixer_1024_20_ks9_p14", 1024, 20, 9, 14, imagenet("convmixer_1024_20_ks9_p14.pth.tar", 76.94, 93.36))
register_convmixer("convmixer_1536_24_ks9_p14", 1536, 24, 9, 14, imagenet())
register_convmixer("convmixer_1024_16_ks9_p7", 1024, 16, 9, 7, imagenet())
register_convmixer("convmixer_512_16_ks8_p7", 512, 16, 8, 7, imagenet(top1=73.76))

# CIFAR-10, 32 x 32
register_convmixer("convmixer_256_8_ks5_p2", 256, 8, 5, 2, PretrainedCfg(**CIFAR10))
register_convmixer("convmixer_256_8_ks9_p1", 256, 8, 9, 1, PretrainedCfg(**CIFAR10))
register_convmixer("convmixer_256_16_ks9_p1", 256, 16, 9, 1, PretrainedCfg(**CIFAR10))

# Fashion-MNIST, 28 x 28 grayscale: the default of `convmixer train` (configs/fmnist.yaml) since 2026-12-07, and the
# one before it (configs/fmnist_v2.yaml; also the shape of the segmentation backbones below)
register_convmixer("convmixer_128_6_ks5_p1", 128, 6, 5, 1, PretrainedCfg(**FASHION_MNIST))
register_convmixer("convmixer_fmnist", 128, 8, 5, 2, PretrainedCfg(**FASHION_MNIST))


# Segmentation: a ConvMixer backbone + a decode head at H/p, upsampled to the input size (models/segmentation.py).
# dim, depth, kernel_size, patch_size, act, head ("linear" | "pixelshuffle") and aux_indices are overridable.
def register_segmenter(name: str, dim: int, depth: int, k: int, p: int, cfg: PretrainedCfg, head: str,
                       **kwargs) -> None:
    description = f"ConvMixer-{dim}/{depth}, k={k}, p={p}, {head} head"
    register_model(name, ConvMixerSegmenter, cfg=cfg, description=description, task="segmentation", dim=dim,
                   depth=depth, kernel_size=k, patch_size=p, num_classes=cfg.num_classes, in_chans=cfg.input_size[0],
                   head=head, aux_indices=(), **kwargs)


# "Fashion-MNIST scenes": 64 x 64 grayscale canvases, 11 classes per pixel (background + the 10 garments)
FMNIST_SCENES = PretrainedCfg(**_trained_on("fashion_mnist_scenes"))
# ADE20K-sized (150 classes, SETR's 512 x 512 crops); pretrained=True initializes the backbone from the released
# ImageNet ConvMixer-768/32
ADE20K_768_32 = PretrainedCfg(url=RELEASES + "convmixer_768_32_ks7_p7_relu.pth.tar", input_size=(3, 512, 512),
                              crop_pct=1.0, num_classes=150)

register_segmenter("convmixer_seg_fmnist", 128, 8, 5, 2, FMNIST_SCENES, "pixelshuffle")
register_segmenter("convmixer_seg_fmnist_linear", 128, 8, 5, 2, FMNIST_SCENES, "linear")
register_segmenter("convmixer_seg_768_32", 768, 32, 7, 7, ADE20K_768_32, "linear", act="relu")
