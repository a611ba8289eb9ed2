"""The schedules of a run, pure functions of the optimizer step: the learning rate and the image size.

The paper's "onecycle" (timm's fork, stepped every iteration, no warmup) is piecewise linear in the
fraction of training done, t = step / total_steps:

    lr(t) = 0 -> lr_max at t = peak_at (2/5) -> lr_max / final_div at t = anneal_at (4/5) -> 0 at t = 1

Progressive resizing (off by default; fast.ai's and airbench-era speed runs): the training images start at
``resize_from`` px and grow linearly to the full side by t = ``resize_until``, in whole patches. A ConvMixer runs
at any resolution and its cost is proportional to the number of patches, so early steps are cheaper; the last
part of training is at full size, where the model is evaluated.
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


def image_size_at(step: int, total_steps: int, full: int, cfg: ScheduleConfig, multiple: int = 1) -> int:
    """The side (px) of the training images of step ``step``: ``full`` without progressive resizing, else
    ``resize_from`` at step 0 growing linearly to ``full`` at ``resize_until``, rounded down to a multiple of
    ``multiple`` (the patch size, so that no pixel is cut off by the stem) and never below it."""
    if not cfg.resize_from or total_steps <= 0:
        return full
    t = min(max(step / total_steps, 0.0), 1.0) / cfg.resize_until
    if t >= 1:
        return full
    side = cfg.resize_from + (full - cfg.resize_from) * t
    return min(full, max(multiple, int(side) // multiple * multiple))


def relative_costs(total_steps: int, full: int, cfg: ScheduleConfig, multiple: int = 1) -> list[float]:
    """Each step's cost relative to a full-size step, (side / full)^2 (compute grows with the number of
    patches): what an honest ETA weighs the steps left by."""
    return [(image_size_at(s, total_steps, full, cfg, multiple) / full) ** 2 for s in range(total_steps)]
