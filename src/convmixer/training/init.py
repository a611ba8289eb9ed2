"""Initializations beyond the architecture's defaults, applied once to a freshly built model before training
(``model.init``; a resumed run loads its weights instead). Time-to-accuracy techniques from small-image training:

- ``whiten``: the patch embedding's first filters become the whitening filters of the training data's p x p
  patches, ``+/- v_i / sqrt(lambda_i + eps)`` for the eigenpairs of their covariance (airbench's first layer).
  A ConvMixer's stem is exactly a stride-p patch convolution, so the filters map onto it one to one. With more
  filters than ``2 x C x p x p`` the rest keep their default initialization; with fewer, the leading components.
- ``zero_residual``: the BatchNorm that ends each residual branch starts at weight 0, so every block starts as
  the identity on its residual path (the "zero-init residual" of large-batch ResNet training).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

INITS = ("whiten", "zero_residual")


def parse_inits(spec: str) -> tuple[str, ...]:
    """``"whiten,zero_residual"`` -> ("whiten", "zero_residual"); ``""`` -> (); unknown names are an error."""
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    for name in names:
        if name not in INITS:
            raise ConfigError(f"unknown model.init {name!r}; choose from {', '.join(INITS)} (comma-separated)")
    return names


def zero_init_residual(model: nn.Module) -> int:
    """Zero the weight of the BatchNorm that ends each residual branch (``Residual.fn[-1]``); returns how many."""
    count = 0
    for module in model.modules():
        branch = getattr(module, "fn", None)
        if isinstance(branch, nn.Sequential) and isinstance(branch[-1], nn.BatchNorm2d):
            nn.init.zeros_(branch[-1].weight)
            count += 1
    return count


def patch_whitening_filters(images: torch.Tensor, patch_size: int, eps: float = 5e-4) -> torch.Tensor:
    """Whitening filters of the non-overlapping p x p patches of ``images`` (N, C, H, W), normalized floats:
    (2D, C, p, p) with D = C p^2, ordered by decreasing eigenvalue, each as +v/sqrt(lambda+eps) then -v/..."""
    c, p = images.shape[1], patch_size
    patches = F.unfold(images.double(), p, stride=p).transpose(1, 2).reshape(-1, c * p * p)  # (N*L, D)
    cov = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
    order = eigenvalues.argsort(descending=True)
    filters = (eigenvectors[:, order] / (eigenvalues[order] + eps).sqrt()).T  # (D, D), row i = component i
    return torch.stack([filters, -filters], 1).reshape(2 * c * p * p, c, p, p).float()


def whiten_stem(model: nn.Module, images: torch.Tensor) -> int:
    """Set the first filters of ``model.stem[0]`` (a stride-p conv) to :func:`patch_whitening_filters` of
    ``images`` and their biases to 0; returns how many filters were set."""
    conv = model.stem[0] if hasattr(model, "stem") else None
    if not (isinstance(conv, nn.Conv2d) and conv.stride == conv.kernel_size):
        raise ConfigError("model.init=whiten needs a model whose stem starts with a patch convolution (a ConvMixer)")
    filters = patch_whitening_filters(images, conv.kernel_size[0])
    n = min(len(filters), conv.out_channels)
    with torch.no_grad():
        conv.weight[:n] = filters[:n].to(conv.weight)
        if conv.bias is not None:
            conv.bias[:n] = 0
    return n


def apply_inits(model: nn.Module, names: Iterable[str], images: torch.Tensor | None) -> dict[str, int]:
    """Apply the named initializations; ``images`` (N, C, H, W), normalized, feed ``whiten``."""
    done = {}
    for name in names:
        if name == "whiten":
            if images is None:
                raise ConfigError("model.init=whiten needs training images")
            done[name] = whiten_stem(model, images)
        elif name == "zero_residual":
            done[name] = zero_init_residual(model)
    return done
