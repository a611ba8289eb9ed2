"""AdamW with the paper's parameter groups, Lookahead (optional), and the soft-target loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decay for weight matrices and conv kernels; none for biases, norm parameters, and any
    parameter a model names in ``no_weight_decay()`` (position embeddings, class tokens, LayerScale)."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    # lr is overwritten every step by the schedule. foreach: torch's multi-tensor path, which torch picks by itself
    # only on GPUs; on the CPU it is the same arithmetic to the bit (tests/training/test_optim.py) and 1.25-1.3x
    # faster for the default model's 70 tensors, about 0.6 ms a step (benchmarks/results/zen4/step-profile/)
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                             foreach=True)


class Lookahead:
    """Lookahead (Zhang, Lucas, Hinton and Ba, 2019) around any optimizer: slow weights phi start as the model's
    parameters; every ``k`` steps of the inner optimizer, phi += alpha * (theta - phi) and the fast weights theta
    restart from phi. The inner optimizer's moments are kept (the paper's default). The slow weights are part of
    the training state (``state_dict``), so a resumed run continues exactly."""

    def __init__(self, params: list[nn.Parameter], k: int, alpha: float) -> None:
        self.params, self.k, self.alpha = list(params), k, alpha
        self.slow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Call after optimizer step number ``step`` (1-based): syncs on every k-th."""
        if step % self.k:
            return
        fast = [p.detach() for p in self.params]
        torch._foreach_lerp_(self.slow, fast, self.alpha)
        torch._foreach_copy_(fast, self.slow)

    def state_dict(self) -> list[torch.Tensor]:
        return self.slow

    def load_state_dict(self, slow: list[torch.Tensor]) -> None:
        if len(slow) != len(self.slow):
            raise ValueError(f"lookahead state has {len(slow)} tensors, the model {len(self.slow)}")
        for mine, saved in zip(self.slow, slow):
            mine.copy_(saved)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against soft targets (B, K) that sum to 1 (mixup/CutMix/label smoothing); fp32."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
