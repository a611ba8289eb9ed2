"""Evaluation: top-1, top-5, loss, per-class accuracy and the confusion matrix, reduced over ranks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import all_reduce_sum


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

    from ..io import atomic_write

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
