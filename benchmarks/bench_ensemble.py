"""Ensembles of trained classifiers: each checkpoint's test top-1, and that of every combination of two or more of
them when their probabilities are averaged.

    python benchmarks/bench_ensemble.py runs/a/last.pt runs/b/last.pt runs/c/last.pt --out ensemble.json
    python benchmarks/bench_ensemble.py long=runs/a/last.pt wide=runs/b/last.pt --weights ema --threads 2

Issue 15 asks the long recipe for 95.5% test top-1; one run of it ends 0.4-0.7 points short and has no time left to
train longer. This asks what more training of the same kind could buy at most: if the averaged predictions of
several finished runs (several times the budget) stay short, no longer single run of that kind will get there.

Each member is evaluated as a training run evaluates it (on the fast path, its logits averaged with those of the
mirrored image when the run trained with ``aug.test_flip``); its softmax probabilities (N, K) are kept, and an
ensemble's prediction is the argmax of its members' mean probabilities. ``--weights``: the trained weights
(``model``), the weights' EMA (``ema``), or both, each scored on its own. Also counted: the test images that exactly
k of the members get wrong, k = 0..n; those most of them get wrong no average of them can put right.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

from convmixer.data.augment import normalize
from convmixer.data.datasets import ArrayDataset, load_idx
from convmixer.errors import ConvMixerError
from convmixer.fast import FastOptions, apply_plan, plan_execution
from convmixer.inference import load_for_inference
from convmixer.io import atomic_write

BATCH = 500  # test images per forward pass


def member_probabilities(checkpoint: str, test: ArrayDataset, use_ema: bool) -> torch.Tensor:
    """Softmax probabilities (N, K) of ``checkpoint`` on ``test`` (uint8 (N, C, H, W)), flip-averaged logits
    where its training run evaluated that way."""
    loaded = load_for_inference(checkpoint, use_ema=use_ema)
    if loaded.num_classes != len(test.classes):
        raise ConvMixerError(f"{checkpoint}: the model predicts {loaded.num_classes} classes, the test set has "
                             f"{len(test.classes)}")
    flip = loaded.test_flip
    model = loaded.model.eval()
    plan = plan_execution(model, mode="infer", device=torch.device("cpu"),
                          input_shape=(BATCH, *test.images.shape[1:]), options=FastOptions())
    apply_plan(model, plan)
    out = []
    with torch.no_grad():
        for i in range(0, len(test), BATCH):
            x = plan.prepare_input(normalize(test.images[i:i + BATCH], loaded.mean, loaded.std))
            with plan.autocast():
                logits = model(x).float()
                if flip:
                    logits = (logits + model(x.flip(-1)).float()) / 2
            out.append(logits.softmax(1))
    return torch.cat(out)


def top1(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """Test top-1 (%) of the argmax of ``probabilities`` (N, K), to 0.01."""
    return round(100 * (probabilities.argmax(1) == labels).double().mean().item(), 2)


def ensemble_table(probs: dict[str, torch.Tensor], labels: torch.Tensor) -> list[dict]:
    """Every member alone and every combination of two or more: its top-1 and its members' mean top-1."""
    alone = {name: top1(p, labels) for name, p in probs.items()}
    rows = []
    for size in range(1, len(probs) + 1):
        for members in itertools.combinations(probs, size):
            mean_p = torch.stack([probs[m] for m in members]).mean(0)
            rows.append({"members": list(members), "top1": top1(mean_p, labels),
                         "members_mean_top1": round(sum(alone[m] for m in members) / size, 2)})
    return rows


def shared_errors(probs: dict[str, torch.Tensor], labels: torch.Tensor, classes: list[str]) -> dict:
    """How many test images exactly k of the members get wrong (k = 0..n), and the true classes of those all of
    them get wrong: images wrong in most members are out of reach of any average of them."""
    wrong = torch.stack([p.argmax(1) != labels for p in probs.values()]).sum(0)
    n = len(probs)
    by_class = torch.bincount(labels[wrong == n], minlength=len(classes)).tolist()
    return {"wrong_in_k_members": torch.bincount(wrong, minlength=n + 1).tolist(),
            "wrong_in_all_by_class": {c: k for c, k in sorted(zip(classes, by_class), key=lambda t: -t[1]) if k}}


def parse_member(arg: str) -> tuple[str, str]:
    """``name=path`` or ``path`` (named after the run directory that holds it)."""
    name, sep, path = arg.partition("=")
    if sep and name and not Path(arg).exists():
        return name, path
    return Path(arg).resolve().parent.name, arg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", metavar="[NAME=]CHECKPOINT",
                    help="training checkpoints (.pt) of classifiers for one dataset")
    ap.add_argument("--dataset", default="fashion_mnist", help="an IDX dataset (default fashion_mnist)")
    ap.add_argument("--root", help="where the dataset's files are (default: the usual places)")
    ap.add_argument("--weights", choices=("model", "ema", "both"), default="model",
                    help="the trained weights, their EMA (the checkpoint must keep one), or each of the two")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="write the table here as JSON")
    args = ap.parse_args()
    members = [parse_member(a) for a in args.checkpoints]
    names = [n for n, _ in members]
    if len(set(names)) != len(names):
        ap.error(f"two checkpoints are named alike ({', '.join(names)}); name them: NAME=CHECKPOINT")
    torch.set_num_threads(args.threads)
    try:
        test = load_idx(args.dataset, "test", root=args.root, download=False)
        result = {"dataset": args.dataset, "checkpoints": dict(members), "test_images": len(test)}
        for weights in (("model", "ema") if args.weights == "both" else (args.weights,)):
            probs = {}
            for name, path in members:
                probs[name] = member_probabilities(path, test, use_ema=weights == "ema")
                print(f"{weights:5s} {name}: {top1(probs[name], test.labels):.2f}%", file=sys.stderr, flush=True)
            result[weights] = ensemble_table(probs, test.labels)
            result[f"{weights}_shared_errors"] = shared_errors(probs, test.labels, test.classes)
    except ConvMixerError as err:
        print(f"bench_ensemble: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    for weights in ("model", "ema"):
        for row in result.get(weights, []):
            if len(row["members"]) > 1:
                print(f"{weights:5s} {' + '.join(row['members'])}: {row['top1']:.2f}% "
                      f"(members {row['members_mean_top1']:.2f}% on average)")
        if weights in result:
            counts = result[f"{weights}_shared_errors"]["wrong_in_k_members"]
            print(f"{weights:5s} test images wrong in 0, 1, ... {len(counts) - 1} of the members: "
                  f"{', '.join(map(str, counts))}")
    if args.out:
        with atomic_write(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
