"""The learning-rate schedule: a pure function of the optimizer step.

The paper's "onecycle" (timm's fork, stepped every iteration, no warmup) is piecewise linear in the
fraction of training done, t = step / total_steps:

    lr(t) = 0 -> lr_max at t = peak_at (2/5) -> lr_max / final_div at t = anneal_at (4/5) -> 0 at t = 1
"""

from __future__ import annotations

from .config import ScheduleConfig


def onecycle_lr(step: int, total_steps: int, lr_max: float, peak_at: float = 0.4, anneal_at: float = 0.8,
                final_div: float = 20.0) -> float:
    """LR for optimizer step ``step`` (0-based; the value used *for* that step) of ``total_steps``."""
    if total_steps <= 0:
        raise ValueError("total_steps must be positive")
    t = min(max(step / total_steps, 0.0), 1.0)
    knots = ((0.0, 0.0), (peak_at, lr_max), (anneal_at, lr_max / final_div), (1.0, 0.0))
    for (t0, y0), (t1, y1) in zip(knots, knots[1:]):
        if t <= t1:
            return y1 if t1 == t0 else y0 + (y1 - y0) * (t - t0) / (t1 - t0)
    return 0.0


def lr_at(step: int, total_steps: int, lr_max: float, cfg: ScheduleConfig) -> float:
    """The configured schedule's LR at ``step``."""
    if cfg.kind == "constant":
        return lr_max
    return onecycle_lr(step, total_steps, lr_max, cfg.peak_at, cfg.anneal_at, cfg.final_div)
