"""Reference points for the segmentation experiments that need no training.

A ConvMixer predicts at H/p x W/p, one vector per patch, and its head upsamples to the input size. How much can
that cost on a dataset? :func:`resolution_ceiling` answers with the ground truth itself: each p x p block is
given its most frequent labelled class (the best one block-constant prediction can do for pixel accuracy) and
upsampled back by repetition; the mIoU of that against the full-resolution truth is what a perfect predictor at
H/p scores. A learnable upsampling head (PixelShuffle) can in principle beat it, since it predicts p^2 values
per patch; a bilinear head can recover a little at block borders. Either way it says how much of the gap to
100% is the patch grid's, not the network's.

    python -m convmixer.experiments.segmentation --dataset fashion_mnist_scenes --patches 1 2 4 8
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from ..training.tasks.segmentation import IGNORE_INDEX, SegEvalResult, confusion_matrix, result_from_confusion


def block_majority(masks: torch.Tensor, patch: int, num_classes: int) -> torch.Tensor:
    """Masks (N, H, W) -> the most frequent labelled class of each ``patch`` x ``patch`` block, repeated back to
    (N, H, W) (a side that is not a multiple of ``patch`` keeps its partial last block). Ties go to the lower class;
    a block with no labelled pixel gets class 0 (its pixels are ignored anyway)."""
    n, h, w = masks.shape
    labelled = masks != IGNORE_INDEX
    one_hot = F.one_hot(torch.where(labelled, masks.long(), 0), num_classes).permute(0, 3, 1, 2).float()
    one_hot *= labelled[:, None]
    counts = F.avg_pool2d(one_hot, patch, stride=patch, ceil_mode=True)  # (N, K, ceil(H/p), ceil(W/p))
    blocks = counts.argmax(1)
    return blocks.repeat_interleave(patch, 1).repeat_interleave(patch, 2)[:, :h, :w]


def resolution_ceiling(masks: torch.Tensor, patch: int, num_classes: int, chunk: int = 1024) -> SegEvalResult:
    """mIoU and pixel accuracy of :func:`block_majority` predictions against ``masks`` (N, H, W) themselves."""
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for part in masks.split(chunk):
        confusion += confusion_matrix(block_majority(part, patch, num_classes), part.long(), num_classes)
    return result_from_confusion(confusion, loss=float("nan"), num_samples=len(masks))


def main(argv: list[str] | None = None) -> int:
    from ..data.config import DataConfig
    from ..data.loaders import load_array_dataset

    ap = argparse.ArgumentParser(prog="python -m convmixer.experiments.segmentation",
                                 description="mIoU ceiling of predicting at H/p, from the test masks")
    ap.add_argument("--dataset", default="fashion_mnist_scenes", help="an in-memory segmentation dataset")
    ap.add_argument("--patches", type=int, nargs="+", default=[1, 2, 4, 8], help="patch sizes p (px)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    ds = load_array_dataset(DataConfig(dataset=args.dataset).validate(), "test")
    rows = []
    for p in args.patches:
        r = resolution_ceiling(ds.labels, p, len(ds.classes))
        rows.append({"patch": p, "miou": round(r.miou, 2), "pixel_acc": round(r.pixel_acc, 2)})
        print(f"p={p}: mIoU ceiling {r.miou:.2f}%  pixel accuracy {r.pixel_acc:.2f}%  ({len(ds)} test masks)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"dataset": args.dataset, "images": len(ds), "ceilings": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
