"""Time to accuracy of one training recipe: train it, and at fixed points evaluate the whole test set outside
the timed loop, so the curve says how many images and how many seconds of training a test accuracy costs.

    python -m convmixer.experiments.tta --config fmnist --set schedule.epochs=3 --eval-every 15000 --json out.json

``benchmarks/bench_tta.py`` runs this once per recipe and seed in a fresh process (so oneDNN's and ATen's ISA
caps can be set before torch is imported) and compares recipes side by side. At each point it evaluates the
model, the model with test-time horizontal flip (the logits of an image and its mirror averaged), and the same two
for the EMA of the weights when the recipe keeps one. ``--ema-decays`` adds EMAs of other decays beside it
(``ema@0.998_flip``: evaluated with flip only): an EMA does not change the training, so one run measures several
decays, each the same as a run with ``run.ema_decay`` set to it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..bench.machine import gemm_gflops, machine


def first_reach(points: list[dict[str, Any]], metric: str, target: float) -> dict[str, Any] | None:
    """The first point whose ``metric`` is at least ``target`` (%): its images and training seconds."""
    for point in points:
        value = point["metrics"].get(metric)
        if value is not None and value >= target:
            return {"images": point["images"], "train_s": point["train_s"], "epoch": point["epoch"], "value": value}
    return None


ETA_CHECK_S = (60.0, 300.0)  # seconds of training after which the run's ETA is recorded


def ema_name(decay: float) -> str:
    """The metric prefix of an extra EMA: ``ema@0.998``."""
    return f"ema@{decay:g}"


def run_recipe(config: str, overrides: list[str], *, eval_every: int, out_dir: Path,
               ema_decays: tuple[float, ...] = (), log=print) -> dict[str, Any]:
    """Train ``config`` with ``overrides`` and evaluate every ``eval_every`` training images (and at the end).

    Returns {"points": [{"images", "train_s", "epoch", "metrics": {name: %}}], "eta_checks", "summary", "plan"}:
    ``eta_checks`` are the progress bar's run ETA after 1 and 5 minutes of training against the time the run then
    took (``error``: predicted / actual - 1); ``metrics`` are the task's
    primary metric (classification: test top-1, segmentation: test mIoU) of ``model``, ``model_flip`` and, with an
    EMA, ``ema`` and ``ema_flip``; and ``ema@D_flip`` for each decay D of ``ema_decays``, an EMA of the weights
    (and BatchNorm buffers, as the recipe's own) kept by this driver from the first step on.
    """
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from ..training.config import load_config
    from ..training.engine import Trainer

    cfg = load_config(config, [*overrides, f"run.out_dir={out_dir}", "run.name=tta", "run.progress=false",
                               "run.tensorboard=false", "run.checkpoint_minutes=0", "run.eval_every=1000000"])
    points: list[dict[str, Any]] = []
    extra_emas: dict[str, Any] = {}  # ema@D -> AveragedModel, made at the first step like the trainer's own
    started = time.monotonic()

    def measure(trainer: Trainer) -> None:
        p, data = trainer.progress, trainer.data

        def prepare(images):
            return trainer.plan.prepare_input(data.normalize(images))

        models = {"model": trainer.model}
        if trainer.ema is not None and trainer.cfg.run.ema_bn_images:
            trainer.recalibrate_ema()  # as the trainer does before it evaluates the EMA
        if trainer.ema is not None:
            models["ema"] = trainer.ema.module
        metrics, task = {}, trainer.task
        views = {name: (("", False), ("_flip", True)) for name in models}
        for name, ema in extra_emas.items():
            models[name], views[name] = ema.module, (("_flip", True),)
        for name, model in models.items():
            for suffix, flip in views[name]:
                result = task.evaluate(model, data, prepare, autocast=trainer.plan.autocast(), test_flip=flip)
                metrics[name + suffix] = round(result.as_dict()[f"eval_{task.primary}"], 2)
        epoch = p.epoch + p.batch / max(len(data.train_loader), 1)
        points.append({"images": p.images, "train_s": round(p.elapsed, 2), "epoch": round(epoch, 3),
                       "metrics": metrics})
        log(f"  {p.images:>8,} images  {p.elapsed:7.1f} s  "
            + "  ".join(f"{k} {v:.2f}%" for k, v in metrics.items()))

    eta_checks: list[dict[str, float]] = []  # the progress bar's run ETA after 1 and 5 minutes of training

    def on_step(trainer: Trainer) -> None:
        p = trainer.progress
        for decay in ema_decays:
            name = ema_name(decay)
            if name not in extra_emas:
                extra_emas[name] = AveragedModel(trainer.model, multi_avg_fn=get_ema_multi_avg_fn(decay),
                                                 use_buffers=True)
            extra_emas[name].update_parameters(trainer.model)
        if len(eta_checks) < len(ETA_CHECK_S) and p.elapsed >= ETA_CHECK_S[len(eta_checks)]:
            eta_checks.append({"train_s": round(p.elapsed, 1), "eta_s": round(trainer.eta_seconds(), 1)})
        if p.images >= (len(points) + 1) * eval_every:
            measure(trainer)

    trainer = Trainer(cfg, on_step=on_step)
    result = trainer.fit()
    if not points or points[-1]["images"] != trainer.progress.images:
        measure(trainer)  # the end of the run (the last step of the schedule or run.max_steps)
    # the ETA covers training and the run's epoch ends (its last evaluation and checkpoints); this driver's own
    # evaluations are in neither
    final_s = trainer.progress.elapsed + (trainer._epoch_end_s or 0.0)
    for check in eta_checks:
        check["predicted_total_s"] = round(check["train_s"] + check["eta_s"], 1)
        check["error"] = round(check["predicted_total_s"] / max(final_s, 1e-9) - 1, 3)
    return {"config": config, "overrides": overrides, "points": points, "eta_checks": eta_checks,
            "summary": result.summary,
            "plan": result.summary.get("execution"), "command_s": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m convmixer.experiments.tta", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="fmnist", help="config name or YAML path (default fmnist)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--eval-every", type=int, default=30000, help="evaluate every N training images (default 30000)")
    ap.add_argument("--ema-decays", type=float, nargs="*", default=[], metavar="D",
                    help="also keep and evaluate (with flip) an EMA of the weights per decay D, e.g. 0.995 0.998")
    ap.add_argument("--json", required=True, help="where to write the result")
    args = ap.parse_args(argv)
    if any(not 0 < d < 1 for d in args.ema_decays):
        ap.error("--ema-decays must lie strictly between 0 and 1")
    from ..fast.allocator import tune_malloc

    tuned = tune_malloc()  # as `convmixer train` does: without it, large temporaries come back as page faults
    before = gemm_gflops()
    with tempfile.TemporaryDirectory(prefix="convmixer-tta-") as tmp:
        result = run_recipe(args.config, args.set, eval_every=args.eval_every, out_dir=Path(tmp),
                            ema_decays=tuple(args.ema_decays), log=lambda m: print(m, file=sys.stderr, flush=True))
    result.update(machine=machine(), malloc_tuned=tuned,
                  gemm_gflops={"before": round(before, 1), "after": round(gemm_gflops(), 1)})
    Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
