"""Semantic segmentation: a class for every pixel; per-pixel cross-entropy, mIoU from a confusion matrix.

Training batch:  uint8 images (B, C, H, W), uint8 masks (B, H, W) -> jointly augmented float images,
                 int64 masks (B, H, W), 255 = ignore (padding, unlabelled borders)
Model output:    logits (B, K, H, W) at the input size; in training mode a model with auxiliary heads returns
                 the tuple (main, aux_1, ..., aux_n), each (B, K, H, W)
Loss:            cross-entropy over the pixels that are not ignored, plus ``aux_weight`` x the same loss of each
                 auxiliary head (SETR weighs its auxiliary heads 0.4)
Evaluation:      the (K, K) confusion matrix of all labelled pixels, summed over batches and ranks; from it the
                 per-class IoU = TP / (TP + FP + FN), mIoU = their mean over the classes that occur (in the
                 ground truth or the predictions), and pixel accuracy = trace / total
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...data.registry import IGNORE_INDEX
from ..distributed import all_reduce_sum
from .base import Task
from .classification import plot_confusion

Tensor = torch.Tensor


def split_outputs(outputs: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """(main logits, auxiliary logits) from a model's output: a tensor, or a tuple (main, *aux) in training."""
    if isinstance(outputs, (tuple, list)):
        return outputs[0], tuple(outputs[1:])
    return outputs, ()


def pixel_cross_entropy(logits: Tensor, masks: Tensor) -> Tensor:
    """Mean cross-entropy of logits (B, K, H, W) against masks (B, H, W) over the labelled pixels, in fp32; 0 (with
    a gradient) when every pixel is ignored, where a plain mean would be 0/0."""
    total = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (masks != IGNORE_INDEX).sum().clamp(min=1)


def confusion_matrix(pred: Tensor, masks: Tensor, num_classes: int) -> Tensor:
    """(K, K) int64 counts of predicted labels (B, H, W) against true ones, rows = true class; ignored pixels and
    labels outside 0..K-1 are left out."""
    valid = masks < num_classes  # also drops IGNORE_INDEX
    index = masks[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def iou_per_class(confusion: Tensor) -> Tensor:
    """IoU (%) per class from a (K, K) confusion matrix; nan for a class absent from both truth and predictions."""
    c = confusion.double()
    tp = c.diag()
    union = c.sum(0) + c.sum(1) - tp
    return torch.where(union > 0, 100 * tp / union.clamp(min=1), torch.full_like(tp, math.nan))


@dataclass
class SegEvalResult:
    loss: float  # mean per-pixel cross-entropy over the labelled pixels
    miou: float  # mean IoU (%) over the classes that occur
    pixel_acc: float  # labelled pixels predicted right (%)
    num_samples: int  # images
    confusion: Tensor  # (K, K) int64 pixel counts, rows = true class, columns = predicted class

    @property
    def per_class_iou(self) -> list[float]:
        return iou_per_class(self.confusion).tolist()

    def as_dict(self, prefix: str = "eval") -> dict[str, float]:
        return {f"{prefix}_loss": self.loss, f"{prefix}_miou": self.miou, f"{prefix}_pixel_acc": self.pixel_acc}


def result_from_confusion(confusion: Tensor, loss: float, num_samples: int) -> SegEvalResult:
    iou = iou_per_class(confusion)
    present = ~iou.isnan()
    miou = float(iou[present].mean()) if present.any() else 0.0
    pixel_acc = float(100 * confusion.diag().sum() / confusion.sum().clamp(min=1))
    return SegEvalResult(loss, miou, pixel_acc, num_samples, confusion)


class FlipAverageMasks(nn.Module):
    """Test-time augmentation for dense outputs: the mean of the logits (B, K, H, W) of the images and of their
    mirrors, mirrored back so that every pixel averages its own two predictions."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        main, _ = split_outputs(self.model(x))
        mirrored, _ = split_outputs(self.model(x.flip(-1)))
        return (main + mirrored.flip(-1)) / 2


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    prepare: Callable[[Tensor], Tensor],
    num_classes: int,
    autocast=None,
    progress: bool = False,
    total: int | None = None,
) -> SegEvalResult:
    """Run ``model`` over (uint8 images (B, C, H, W), uint8 masks (B, H, W)) batches of this rank's shard; the
    loss and the confusion matrix are summed over ranks, so every rank returns the global result."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum over labelled pixels, labelled pixels, images
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=total, desc="eval", leave=False, unit="batch", dynamic_ncols=True)
    try:
        for images, masks in batches:
            with autocast if autocast is not None else torch.autocast(device.type, enabled=False):
                logits, _ = split_outputs(model(prepare(images)))
            logits, masks = logits.float(), masks.long()
            sums += torch.stack([
                F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX, reduction="sum").double(),
                (masks != IGNORE_INDEX).sum().double(),
                torch.tensor(float(len(masks)), dtype=torch.float64, device=device),
            ])
            confusion += confusion_matrix(logits.argmax(1), masks, num_classes)
    finally:
        model.train(was_training)
    all_reduce_sum(sums)
    all_reduce_sum(confusion)
    loss_sum, pixels, images = sums.tolist()
    return result_from_confusion(confusion.cpu(), loss_sum / max(pixels, 1), int(images))


class SegmentationTask(Task):
    """A class index for every pixel (masks with 255 = ignore); the paper's future work."""

    name = "segmentation"
    primary = "miou"
    stat_names = ("correct", "pixels")  # labelled pixels predicted right, labelled pixels

    def __init__(self, aux_weight: float = 0.4) -> None:
        self.aux_weight = aux_weight  # loss weight of each auxiliary head's cross-entropy

    # -- training ---------------------------------------------------------------------------------------------
    def batch(self, data, images: Tensor, masks: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(normalized float images, int64 masks) from the data module's joint augmentation."""
        return data.augment(images, masks, generator)

    def resize(self, x: Tensor, masks: Tensor, size: int) -> tuple[Tensor, Tensor]:
        """Progressive resizing: images (B, C, H, W) as in :meth:`Task.resize`, masks (B, H, W) by nearest
        neighbour (class indices and the ignore index are never blended)."""
        x, _ = super().resize(x, masks, size)
        masks = F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest-exact")[:, 0].long()
        return x, masks

    def loss(self, outputs, targets: Tensor) -> Tensor:
        main, aux = split_outputs(outputs)
        loss = pixel_cross_entropy(main, targets)
        for logits in aux:
            loss = loss + self.aux_weight * pixel_cross_entropy(logits, targets)
        return loss

    def step_stats(self, outputs, targets: Tensor) -> dict[str, Tensor]:
        main, _ = split_outputs(outputs)
        with torch.no_grad():
            labelled = targets != IGNORE_INDEX
            correct = ((main.argmax(1) == targets) & labelled).sum().float()
            return {"correct": correct, "pixels": labelled.sum().float()}

    def train_metrics(self, sums: Mapping[str, float]) -> dict[str, float]:
        if not sums["samples"]:
            return {}
        return {"train_loss": sums["loss_sum"] / sums["samples"],
                "train_pixel_acc": 100 * sums["correct"] / max(sums["pixels"], 1)}

    def progress_text(self, sums: Mapping[str, float]) -> str:
        n = max(sums["samples"], 1)
        return f"loss {sums['loss_sum'] / n:.3f} pixel acc {100 * sums['correct'] / max(sums['pixels'], 1):.1f}%"

    # -- evaluation -------------------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, data, prepare, *, autocast=None, progress: bool = False,
                 test_flip: bool | None = None) -> SegEvalResult:
        """``model``'s mIoU, pixel accuracy and loss on ``data``'s eval split; with ``aug.test_flip`` the mean of
        each image's logits and its mirror's."""
        loader = data.eval_loader
        if data.augment.cfg.test_flip if test_flip is None else test_flip:
            model = FlipAverageMasks(model)
        return evaluate(model, loader.iterate(), prepare, data.num_classes, autocast, progress=progress,
                        total=len(loader))

    def record_text(self, r: Mapping[str, Any]) -> list[str]:
        parts = []
        if "train_loss" in r:
            parts.append(f"train loss {r['train_loss']:.4f} pixel acc {r['train_pixel_acc']:.2f}%")
        if "eval_miou" in r:
            parts.append(f"test loss {r['eval_loss']:.4f} mIoU {r['eval_miou']:.2f}% "
                         f"pixel acc {r['eval_pixel_acc']:.2f}%")
        if "eval_ema_miou" in r:
            parts.append(f"EMA mIoU {r['eval_ema_miou']:.2f}%")
        return parts

    def summary(self, final: Mapping[str, Any], best: float | None) -> dict[str, Any]:
        return {"test_miou": final.get("eval_miou"), "test_pixel_acc": final.get("eval_pixel_acc"),
                "test_loss": final.get("eval_loss"), "best_miou": best}

    def eval_report(self, result: SegEvalResult, classes: list[str]) -> dict[str, Any]:
        return {"num_samples": result.num_samples, "miou": result.miou, "pixel_acc": result.pixel_acc,
                "loss": result.loss, "per_class_iou": dict(zip(classes, result.per_class_iou)),
                "classes": list(classes), "confusion": result.confusion.tolist()}

    def write_eval_outputs(self, result: SegEvalResult, classes: list[str], path: Path, title: str) -> list[Path]:
        plot_confusion(result.confusion, classes, path, f"{title}: mIoU {result.miou:.2f}%")
        return [path]

    def eval_lines(self, result: SegEvalResult, classes: list[str]) -> list[str]:
        lines = []
        if len(classes) <= 50:
            width = max(len(c) for c in classes)
            lines = [f"  {name:<{width}}  IoU {iou:6.2f}%" for name, iou in zip(classes, result.per_class_iou)]
        return [*lines, f"mIoU {result.miou:.2f}%  pixel accuracy {result.pixel_acc:.2f}%  loss {result.loss:.4f}"]

    # -- prediction -------------------------------------------------------------------------------------------
    def predictions(self, outputs, names: list[str], top_k: int) -> list[dict[str, Any]]:
        """Logits (B, K, H, W) -> per image its mask (uint8 (H, W) tensor, under "mask": the caller writes it out)
        and the ``top_k`` classes covering most pixels, with their share of the image."""
        main, _ = split_outputs(outputs)
        masks = main.argmax(1)
        k = main.shape[1]
        result = []
        for mask in masks:
            share = torch.bincount(mask.flatten(), minlength=k).double() / mask.numel()
            top = share.topk(min(top_k, k))
            result.append({"mask": mask.to(torch.uint8).cpu(),
                           "classes": [{"class": names[c], "index": c, "fraction": f}
                                       for f, c in zip(top.values.tolist(), top.indices.tolist()) if f > 0]})
        return result

    def prediction_text(self, prediction: Mapping[str, Any]) -> str:
        return ", ".join(f"{t['class']} {100 * t['fraction']:.1f}%" for t in prediction["classes"])
