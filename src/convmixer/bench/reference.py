"""The reference every speed figure is a ratio against: the paper's ConvMixer as one plain ``nn.Sequential``.

It is the straightforward implementation: eager, NCHW, fp32 (on CUDA the harness runs it under autocast, as the
paper trained), PyTorch's built-in layers only. Its state_dict uses the official layout (``0.*``, ``2.*``,
``{3+i}.0.fn.0.*`` ... ``{d+5}.*``), so :func:`reference_from` can copy any ConvMixer's weights into it and both
compute the same function.
"""

from __future__ import annotations

from torch import Tensor, nn

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


class SkipAdd(nn.Module):
    """``x + fn(x)``; the child is called ``fn`` as in the official layout."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x) + x


def build_reference(dim: int, depth: int, kernel_size: int = 9, patch_size: int = 7, num_classes: int = 1000,
                    in_chans: int = 3, act: str = "gelu") -> nn.Sequential:
    """ConvMixer-``dim``/``depth`` as the paper lists it: patch embedding, ``depth`` mixer layers, pooled head."""
    act_cls = _ACTIVATIONS[act]
    layers: list[nn.Module] = [
        nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size),  # 0
        act_cls(),  # 1
        nn.BatchNorm2d(dim),  # 2
    ]
    for _ in range(depth):  # 3 .. depth + 2
        spatial = nn.Sequential(nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same"), act_cls(),
                                nn.BatchNorm2d(dim))
        layers.append(nn.Sequential(SkipAdd(spatial), nn.Conv2d(dim, dim, kernel_size=1), act_cls(),
                                    nn.BatchNorm2d(dim)))
    layers += [nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(dim, num_classes)]
    return nn.Sequential(*layers)


def reference_from(model: nn.Module) -> nn.Sequential:
    """A reference network with ``model``'s architecture and a copy of its weights and buffers (a ConvMixer)."""
    from ..checkpoint import timm_to_official

    cfg = model.config()
    if cfg["num_classes"] < 1:
        raise ValueError("the reference network needs a classifier head (num_classes >= 1)")
    ref = build_reference(**cfg)
    ref.load_state_dict({k: v.detach().clone() for k, v in timm_to_official(model.state_dict()).items()})
    return ref.train(model.training)
