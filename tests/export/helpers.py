"""Builders shared by the export tests: models with non-trivial BatchNorm statistics, reference logits."""

import functools

import pytest
import torch
from torch import nn

from convmixer import create_model
from convmixer.errors import DataError

from convmixer.models import ConvMixer

FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)


def randomize(model: nn.Module, seed: int = 0, head_scale: float = 1.0) -> nn.Module:
    """Give every BatchNorm random running statistics and affine parameters (so the folds are not trivial) and the
    head a larger random weight (so logits are of order 1 and a wrong fold would show); eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.25)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
        head = getattr(model, "head", None)
        if isinstance(head, nn.Linear):
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * head_scale / head.in_features ** 0.5)
            head.bias.copy_(torch.randn(head.bias.shape, generator=g) * 0.1)
    return model.eval()


def tiny_convmixer(seed: int = 0, in_chans: int = 1, num_classes: int = 10, **kw) -> ConvMixer:
    torch.manual_seed(seed)
    kw = {"dim": 32, "depth": 2, "kernel_size": 5, "patch_size": 4, **kw}
    return randomize(ConvMixer(num_classes=num_classes, in_chans=in_chans, **kw), seed, head_scale=4.0)


def fmnist_model(seed: int = 0) -> ConvMixer:
    torch.manual_seed(seed)
    return randomize(create_model("convmixer_fmnist"), seed, head_scale=4.0)


def reference(model: nn.Module, images: torch.Tensor, mean=FMNIST_MEAN, std=FMNIST_STD) -> torch.Tensor:
    """The original model on uint8 images, normalized the usual way (the data pipeline's order)."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    with torch.no_grad():
        return model((images.float() / 255 - m) / s)


def random_uint8(n: int, chans: int = 1, size: int = 28, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, chans, size, size), generator=g, dtype=torch.uint8)


@functools.lru_cache(maxsize=1)
def _fmnist_test_images() -> torch.Tensor | None:
    from convmixer.data import load_idx

    try:
        return load_idx("fashion_mnist", "test", download=False).images[:64].clone()
    except DataError:
        return None


def fmnist_images() -> torch.Tensor:
    """64 real Fashion-MNIST test images, uint8 (64, 1, 28, 28); skips the test where the dataset is not installed
    (Debian: apt install dataset-fashion-mnist)."""
    images = _fmnist_test_images()
    if images is None:
        pytest.skip("Fashion-MNIST is not installed here (apt install dataset-fashion-mnist)")
    return images
