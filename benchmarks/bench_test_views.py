"""Test-time augmentation beyond the flip: a classification checkpoint's test top-1 (model and EMA) when the logits
of several views of each test image are averaged (mirror, and shifts by one or two pixels with a zero border).

    python benchmarks/bench_test_views.py runs/<run>/last.pt
    python benchmarks/bench_test_views.py runs/<run>/last.pt --dataset fashion_mnist --threads 2

The engine's ``aug.test_flip`` averages an image and its mirror; this asks whether more views would pay on a given
checkpoint before anything is built for them. Each view's logits are computed once and combined per view set.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from convmixer.data.augment import normalize
from convmixer.data.datasets import ArrayDataset, load_idx
from convmixer.errors import CheckpointError
from convmixer.fast import FastOptions, apply_plan, plan_execution
from convmixer.inference import load_for_inference

BATCH = 500
FLIP = [(0, 0, False), (0, 0, True)]


def cross(*steps: int) -> list[tuple[int, int, bool]]:
    """Each image and its mirror moved ``step`` px down, up, right and left, for each step."""
    return [(k * dy, k * dx, m) for k in steps for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)) for m in (False, True)]


VIEW_SETS = {  # name: [(dy, dx, mirrored)]
    "none": [(0, 0, False)],
    "flip": FLIP,
    "flip+diag1": [(dy, dy, m) for dy in (0, 1, -1) for m in (False, True)],
    "flip+x1": [(0, dx, m) for dx in (0, 1, -1) for m in (False, True)],
    "flip+y1": [(dy, 0, m) for dy in (0, 1, -1) for m in (False, True)],
    "flip+cross1": [*FLIP, *cross(1)],
    # for models trained with a 2 px pad-crop (configs/fmnist_long.yaml):
    "flip+cross2": [*FLIP, *cross(2)],
    "flip+cross1+cross2": [*FLIP, *cross(1, 2)],
    "flip+grid1": [(dy, dx, m) for dy in (-1, 0, 1) for dx in (-1, 0, 1) for m in (False, True)],
}


def shifted(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """uint8 (N, C, H, W) moved by (dy, dx) px, the vacated border filled with 0 (Fashion-MNIST's background)."""
    if dy == 0 and dx == 0:
        return images
    p = max(abs(dy), abs(dx))
    H, W = images.shape[-2:]
    return F.pad(images, (p, p, p, p))[..., p - dy:p - dy + H, p - dx:p - dx + W]


def view_accuracies(checkpoint: str, test: ArrayDataset, use_ema: bool) -> dict[str, float]:
    loaded = load_for_inference(checkpoint, use_ema=use_ema)
    model = loaded.model.eval()
    plan = plan_execution(model, mode="infer", device=torch.device("cpu"),
                          input_shape=(BATCH, *test.images.shape[1:]), options=FastOptions())
    apply_plan(model, plan)
    logits: dict[tuple[int, int, bool], torch.Tensor] = {}
    with torch.no_grad():
        for view in {v for views in VIEW_SETS.values() for v in views}:
            dy, dx, mirrored = view
            outs = []
            for i in range(0, len(test), BATCH):
                x = normalize(shifted(test.images[i:i + BATCH], dy, dx), loaded.mean, loaded.std)
                with plan.autocast():
                    outs.append(model(plan.prepare_input(x.flip(-1) if mirrored else x)).float())
            logits[view] = torch.cat(outs)
    return {name: round(100 * (sum(logits[v] for v in views).argmax(1) == test.labels).float().mean().item(), 2)
            for name, views in VIEW_SETS.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a training checkpoint (.pt)")
    ap.add_argument("--dataset", default="fashion_mnist", help="an IDX dataset (default fashion_mnist)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    test = load_idx(args.dataset, "test")
    result = {"checkpoint": args.checkpoint, "views": {name: len(v) for name, v in VIEW_SETS.items()}}
    for use_ema in (False, True):
        try:
            result["ema" if use_ema else "model"] = view_accuracies(args.checkpoint, test, use_ema)
        except CheckpointError as err:  # no EMA in this checkpoint
            result["ema"] = f"not evaluated: {err}"
        print(("EMA  " if use_ema else "model"), result["ema" if use_ema else "model"], flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
