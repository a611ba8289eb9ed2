"""The classifier interface every model here shares: ConvMixer and the baselines are :class:`ImageClassifier`\\ s.

``forward = forward_head(forward_features(x))``, a linear ``head`` over ``num_features`` pooled features that
``get_classifier`` returns and ``reset_classifier`` replaces, and ``config()`` (the kwargs that rebuild the model).
:class:`GlobalPool2d` is the choice of pooling a convolutional model's head offers (``global_pool``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

POOL_TYPES = ("avg", "max", "avgmax", "")


def check_num_classes(num_classes: Any) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
        raise ConfigError(f"num_classes must be an integer >= 0, got {num_classes!r}")


class GlobalPool2d(nn.Module):
    """(B, C, H, W) -> (B, C): ``"avg"`` (the mean over positions), ``"max"``, ``"avgmax"`` (the mean of the two);
    ``""`` pools nothing and returns the map (B, C, H, W) unchanged. It holds no weights (no state-dict keys)."""

    def __init__(self, pool_type: str = "avg") -> None:
        super().__init__()
        if pool_type not in POOL_TYPES:
            raise ConfigError(f"global_pool must be one of {', '.join(map(repr, POOL_TYPES))}, got {pool_type!r}")
        self.pool_type = pool_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "avg":
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
        if self.pool_type == "max":
            return F.adaptive_max_pool2d(x, 1).flatten(1)
        if self.pool_type == "avgmax":
            return 0.5 * (F.adaptive_avg_pool2d(x, 1) + F.adaptive_max_pool2d(x, 1)).flatten(1)
        return x

    def extra_repr(self) -> str:
        return repr(self.pool_type)


def linear_head(num_features: int, num_classes: int) -> nn.Module:
    """``Linear(num_features -> num_classes)``; ``num_classes=0`` gives ``Identity`` (pooled features out)."""
    return nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()


class ImageClassifier(nn.Module):
    """Base of every model: ``forward = forward_head(forward_features(x))`` and a resettable linear ``head``.

    Subclasses set ``num_classes``, ``num_features`` and ``head`` (with :func:`linear_head`) and define
    ``forward_features``, ``forward_head`` and ``config``. The base registers no submodules, so a subclass's
    state-dict keys are exactly the attributes it assigns.
    """

    num_classes: int
    num_features: int
    head: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def head_hidden_size(self) -> int:
        """Width of what ``forward_head(x, pre_logits=True)`` returns: ``num_features`` (no model here has a hidden
        pre-logits layer)."""
        return self.num_features

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a fresh ``num_classes``-way linear layer (0: no head, pooled features out)."""
        check_num_classes(num_classes)
        self.num_classes = num_classes
        self.head = linear_head(self.num_features, num_classes)
