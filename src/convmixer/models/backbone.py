"""What dense-prediction code needs from a backbone: chosen blocks' feature maps, their description, and gradient
checkpointing.

- :func:`take_indices`: which blocks ``indices`` / ``out_indices`` name (an int n: the last n blocks; a list of block
  indices, negative ones counted from the end; None: every block).
- :class:`FeatureInfo`: one dict per feature map (``num_chs``, ``reduction``, ``module``) with list-valued helpers.
- :class:`FeatureExtractor`: a model whose forward returns the chosen blocks' maps as a list; what
  ``create_model(name, features_only=True, out_indices=...)`` builds.
- :func:`checkpointed`: run a block with its activations recomputed in backward instead of kept.

A backbone here is a model with ``blocks`` (an ``nn.Sequential``), ``feature_info`` (one entry per block),
``forward_intermediates`` and ``prune_intermediate_layers``, as :class:`~convmixer.models.ConvMixer` has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError

OUTPUT_FORMATS = ("NCHW", "NHWC")


def take_indices(num_blocks: int, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
    """(the chosen block indices in ascending order, the highest of them) for a model of ``num_blocks`` blocks.

    ``None``: every block; an int ``n`` (1..num_blocks): the last ``n`` blocks; a sequence: those blocks, where
    ``-1`` is the last one. A block named twice is taken once. Anything else is a :class:`ConfigError`.
    """
    if indices is None:
        chosen = list(range(num_blocks))
    elif isinstance(indices, int) and not isinstance(indices, bool):
        if not 1 <= indices <= num_blocks:
            raise ConfigError(f"an int of indices takes the last n blocks; n must be 1..{num_blocks}, got {indices}")
        chosen = list(range(num_blocks - indices, num_blocks))
    else:
        try:
            items = list(indices)
        except TypeError:
            raise ConfigError(f"indices must be None, an int or a list of block indices, got {indices!r}") from None
        bad = [i for i in items if not isinstance(i, int) or isinstance(i, bool) or not -num_blocks <= i < num_blocks]
        if not items or bad:
            raise ConfigError(f"block indices must be integers in {-num_blocks}..{num_blocks - 1} (the model has "
                              f"{num_blocks} blocks), got {list(items) if not bad else bad}")
        chosen = sorted({i % num_blocks for i in items})
    return chosen, chosen[-1]


class FeatureInfo(list):
    """A list of dicts, one per feature map: ``num_chs`` (channels), ``reduction`` (input size / map size) and
    ``module`` (the name of the module whose output it is, e.g. ``"blocks.3"``). ``channels()``, ``reduction()``
    and ``module_name()`` give one field for every map, or for the map at ``idx``."""

    def _field(self, key: str, idx: int | None) -> Any:
        return [info[key] for info in self] if idx is None else self[idx][key]

    def channels(self, idx: int | None = None) -> Any:
        return self._field("num_chs", idx)

    def reduction(self, idx: int | None = None) -> Any:
        return self._field("reduction", idx)

    def module_name(self, idx: int | None = None) -> Any:
        return self._field("module", idx)

    def __getitem__(self, item):  # a slice is a FeatureInfo again
        got = super().__getitem__(item)
        return FeatureInfo(got) if isinstance(item, slice) else got


def block_feature_info(num_blocks: int, channels: int, reduction: int) -> FeatureInfo:
    """One entry per block of an isotropic model: every block keeps the same map."""
    return FeatureInfo({"num_chs": channels, "reduction": reduction, "module": f"blocks.{i}"} for i in range(num_blocks))


class FeatureExtractor(nn.Module):
    """The maps of a backbone's chosen blocks as a list, ``[(B, C, H/r, W/r), ...]`` in block order.

    Built by ``create_model(name, features_only=True, out_indices=...)``: the blocks after the last chosen one and
    the classifier head are removed (:meth:`prune_intermediate_layers`), so they cost nothing. ``out_indices`` is
    what :func:`take_indices` takes (None: every block). The backbone is ``self.model``, so state-dict keys carry a
    ``model.`` prefix: load weights into the backbone before wrapping it (``create_model(..., pretrained=...)`` does).
    """

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] | None = None,
                 output_fmt: str = "NCHW") -> None:
        super().__init__()
        if not hasattr(model, "forward_intermediates"):
            name = getattr(model, "registry_name", None) or type(model).__name__
            raise ConfigError(f"{name} offers no feature maps (features_only needs a ConvMixer)")
        if output_fmt not in OUTPUT_FORMATS:
            raise ConfigError(f"output_fmt must be one of {', '.join(OUTPUT_FORMATS)}, got {output_fmt!r}")
        self.out_indices = tuple(model.prune_intermediate_layers(out_indices, prune_head=True))
        self.model = model
        self.output_fmt = output_fmt
        self.feature_info = FeatureInfo(model.feature_info[i] for i in self.out_indices)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, indices=list(self.out_indices), output_fmt=self.output_fmt,
                                                intermediates_only=True)


def _running_stat_buffers(module: nn.Module) -> Iterator[torch.Tensor]:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            yield from (b for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None)


@contextlib.contextmanager
def _running_stats_kept(module: nn.Module) -> Iterator[None]:
    """Undo what a recomputation does to BatchNorm running statistics: the forward pass already updated them once,
    and a second update would apply the momentum twice per step."""
    saved = [(b, b.clone()) for b in _running_stat_buffers(module)]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def checkpointed(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block(x)`` keeping only ``x`` for backward: the block's activations are recomputed when the gradient
    needs them (``torch.utils.checkpoint``, non-reentrant). Gradients are those of ``block(x)``; BatchNorm running
    statistics are updated once, as without checkpointing."""
    return checkpoint(block, x, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), _running_stats_kept(block)))
