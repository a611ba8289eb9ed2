"""Image classification: soft targets (mixup/CutMix/label smoothing), cross-entropy, top-1/top-5 accuracy.

Training batch:  uint8 images (B, C, H, W), int64 labels (B,) -> augmented float images, soft targets (B, K)
Model output:    logits (B, K)
Evaluation:      loss against the hard labels, top-1, top-5, and the (K, K) confusion matrix, summed over ranks
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import all_reduce_sum
from ..optim import soft_cross_entropy
from .base import Task

Tensor = torch.Tensor


@dataclass
class EvalResult:
    loss: float  # mean cross-entropy against the hard labels
    top1: float  # accuracy (%) of the highest logit
    top5: float  # accuracy (%) of the 5 highest logits (top-K for K < 5 classes)
    num_samples: int
    confusion: torch.Tensor  # (K, K) int64 counts, rows = true class, columns = predicted class

    @property
    def per_class(self) -> list[float]:
        """Accuracy (%) per true class (recall); nan for a class with no samples."""
        totals = self.confusion.sum(1).double()
        return (100 * self.confusion.diag().double() / totals).tolist()

    def as_dict(self, prefix: str = "eval") -> dict[str, float]:
        return {f"{prefix}_loss": self.loss, f"{prefix}_top1": self.top1, f"{prefix}_top5": self.top5}


class FlipAverage(nn.Module):
    """Test-time augmentation: the mean of the logits (B, K) of images (B, C, H, W) and of their mirrors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return (self.model(x) + self.model(x.flip(-1))) / 2


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    prepare: Callable[[torch.Tensor], torch.Tensor],
    num_classes: int,
    autocast=None,
    progress: bool = False,
    total: int | None = None,
) -> EvalResult:
    """Run ``model`` over (uint8 images, labels) batches; ``prepare`` turns uint8 into model input; ``total`` is
    the number of batches, for the progress bar.

    Each rank passes its own shard; sums are all-reduced so every rank returns the global result.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top-1 hits, top-5 hits, count
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    k = min(5, num_classes)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=total, desc="eval", leave=False, unit="batch", dynamic_ncols=True)
    try:
        for images, labels in batches:
            with autocast if autocast is not None else torch.autocast(device.type, enabled=False):
                logits = model(prepare(images))
            logits = logits.float()
            top = logits.topk(k, dim=1).indices
            sums += torch.stack([
                F.cross_entropy(logits, labels, reduction="sum").double(),
                (top[:, 0] == labels).sum().double(),
                (top == labels[:, None]).any(1).sum().double(),
                torch.tensor(float(labels.numel()), dtype=torch.float64, device=device),
            ])
            confusion += torch.bincount(labels * num_classes + top[:, 0], minlength=num_classes**2)
    finally:
        model.train(was_training)
    all_reduce_sum(sums)
    all_reduce_sum(confusion)
    loss, hit1, hit5, n = sums.tolist()
    n = max(n, 1)
    return EvalResult(loss / n, 100 * hit1 / n, 100 * hit5 / n, int(n), confusion.view(num_classes, num_classes).cpu())


def plot_confusion(confusion: torch.Tensor, classes: list[str], path: Path, title: str) -> None:
    """Row-normalized confusion matrix with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...io import atomic_write

    k = len(classes)
    rates = confusion.double() / confusion.sum(1, keepdim=True).clamp(min=1)
    size = min(2 + 0.6 * k, 30)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    if k <= 30:
        ax.set_xticks(range(k), classes, rotation=60, ha="right")
        ax.set_yticks(range(k), classes)
        for i in range(k):
            for j in range(k):
                if confusion[i, j]:
                    ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


class ClassificationTask(Task):
    """One label per image; the paper's task."""

    name = "classification"
    primary = "top1"
    stat_names = ("correct",)  # top-1 hits against the argmax of the (soft) targets

    # -- training ---------------------------------------------------------------------------------------------
    def batch(self, data, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(normalized float images, soft targets (B, K)) from the data module's batched augmentation."""
        return data.augment(images, labels, generator)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return soft_cross_entropy(outputs, targets)

    def step_stats(self, outputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            return {"correct": (outputs.argmax(1) == targets.argmax(1)).sum().float()}

    def train_metrics(self, sums: Mapping[str, float]) -> dict[str, float]:
        n = sums["samples"]
        return {"train_loss": sums["loss_sum"] / n, "train_top1": 100 * sums["correct"] / n} if n else {}

    def progress_text(self, sums: Mapping[str, float]) -> str:
        n = max(sums["samples"], 1)
        return f"loss {sums['loss_sum'] / n:.3f} acc {100 * sums['correct'] / n:.1f}%"

    # -- evaluation -------------------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, data, prepare, *, autocast=None, progress: bool = False,
                 test_flip: bool | None = None) -> EvalResult:
        """``model``'s metrics on ``data``'s eval split; with ``aug.test_flip`` its mirror-averaged logits."""
        loader = data.eval_loader
        if data.augment.cfg.test_flip if test_flip is None else test_flip:
            model = FlipAverage(model)
        return evaluate(model, loader.iterate(), prepare, data.num_classes, autocast, progress=progress,
                        total=len(loader))

    def record_text(self, r: Mapping[str, Any]) -> list[str]:
        parts = []
        if "train_loss" in r:
            parts.append(f"train loss {r['train_loss']:.4f} acc {r['train_top1']:.2f}%")
        if "eval_top1" in r:
            parts.append(f"test loss {r['eval_loss']:.4f} top-1 {r['eval_top1']:.2f}% top-5 {r['eval_top5']:.2f}%")
        if "eval_ema_top1" in r:
            parts.append(f"EMA top-1 {r['eval_ema_top1']:.2f}%")
        return parts

    def summary(self, final: Mapping[str, Any], best: float | None) -> dict[str, Any]:
        return {"test_top1": final.get("eval_top1"), "test_top5": final.get("eval_top5"),
                "test_loss": final.get("eval_loss"), "best_top1": best}

    def eval_report(self, result: EvalResult, classes: list[str]) -> dict[str, Any]:
        return {"num_samples": result.num_samples, "top1": result.top1, "top5": result.top5, "loss": result.loss,
                "per_class": dict(zip(classes, result.per_class))}

    def write_eval_outputs(self, result: EvalResult, classes: list[str], path: Path, title: str) -> list[Path]:
        plot_confusion(result.confusion, classes, path, f"{title}: top-1 {result.top1:.2f}%")
        return [path]

    def eval_lines(self, result: EvalResult, classes: list[str]) -> list[str]:
        lines = []
        if len(classes) <= 50:
            width = max(len(c) for c in classes)
            lines = [f"  {name:<{width}}  {acc:6.2f}%" for name, acc in zip(classes, result.per_class)]
        return [*lines, f"top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  loss {result.loss:.4f}"]

    # -- prediction -------------------------------------------------------------------------------------------
    def predictions(self, outputs: Tensor, names: list[str], top_k: int) -> list[dict[str, Any]]:
        """Logits (B, K) -> per image the ``top_k`` classes with their softmax probabilities."""
        top = outputs.float().softmax(1).topk(min(top_k, outputs.shape[1]), dim=1)
        return [{"top": [{"class": names[c], "index": c, "probability": q} for c, q in zip(i, p)]}
                for p, i in zip(top.values.tolist(), top.indices.tolist())]

    def prediction_text(self, prediction: Mapping[str, Any]) -> str:
        return ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in prediction["top"])
