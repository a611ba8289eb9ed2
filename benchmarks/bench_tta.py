"""Time to accuracy: recipes trained side by side on one machine, test top-1 (or, for a segmentation recipe, test
mIoU) against images and training seconds.

    python benchmarks/bench_tta.py --recipe "today: fmnist_v1" --recipe "new: fmnist"
    python benchmarks/bench_tta.py --recipe "new: fmnist" --seeds 0 1 2 --isa avx2
    python benchmarks/bench_tta.py --recipe "short: fmnist_v1 schedule.epochs=3" --eval-every 15000 --threads 1
    python benchmarks/bench_tta.py --recipe "seg: fmnist_seg" --targets 70 75 --eval-every 10000

Each recipe ("LABEL: CONFIG [KEY=VALUE ...]") is trained once per seed, each run in a fresh process
(``python -m convmixer.experiments.tta``), in the order A B B A ... so that a machine that slows down or speeds up
weighs on every recipe alike; each run also times an fp32 matrix product before and after, as a yardstick of the
machine's speed. The whole test set is evaluated every ``--eval-every`` training images, outside the timed loop.
Recorded per run: the images and training seconds at which test top-1 first reached each target (93.0% and 94.0%
by default), the final accuracy, the curve, the CPU model and vector extensions, the ISA cap and the execution plan.

``--isa avx2`` runs the fp32 AVX2 path on a CPU with AVX-512: oneDNN and ATen are capped at AVX2
(``ONEDNN_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY``), the own kernels are built for 8 lanes and bf16 is off
(``CONVMIXER_CPU_ISA=avx2``). JSON to ``benchmarks/results/tta-<date>.json`` and a plot beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from convmixer.experiments.tta import first_reach

RESULTS = Path(__file__).resolve().parent / "results"
ISA_ENV = {"avx2": {"CONVMIXER_CPU_ISA": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                    "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
           "native": {}}


def parse_recipe(text: str) -> dict:
    label, sep, rest = text.partition(":")
    words = shlex.split(rest)
    if not sep or not label.strip() or not words:
        raise SystemExit(f"--recipe must look like 'LABEL: CONFIG [KEY=VALUE ...]', got {text!r}")
    return {"label": label.strip(), "config": words[0], "overrides": words[1:]}


def order(recipes: list[dict], seeds: list[int]) -> list[tuple[dict, int]]:
    """A B B A A B ...: every recipe runs early and late as often as the others."""
    runs = []
    for i, seed in enumerate(seeds):
        batch = recipes if i % 2 == 0 else recipes[::-1]
        runs += [(r, seed) for r in batch]
    return runs


def run_one(recipe: dict, seed: int, args) -> dict:
    env = {**os.environ, **ISA_ENV[args.isa], "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory(prefix="bench-tta-") as tmp:
        out = Path(tmp) / "run.json"
        cmd = [sys.executable, "-m", "convmixer.experiments.tta", "--config", recipe["config"], "--eval-every",
               str(args.eval_every), "--json", str(out), "--ema-decays", *map(str, args.ema_decays),
               "--set", *recipe["overrides"], f"run.seed={seed}"]
        print(f"== {recipe['label']} seed {seed} ({args.isa}): {shlex.join(cmd[1:])}", flush=True)
        proc = subprocess.run(cmd, check=False, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"the run of {recipe['label']!r} (seed {seed}) failed with exit code {proc.returncode}")
        result = json.loads(out.read_text())
    result.update(label=recipe["label"], seed=seed, isa=args.isa)
    metric = args.metric or default_metric(result)
    result["metric"] = metric
    result["first_reach"] = {f"{t:.1f}": first_reach(result["points"], metric, t) for t in args.targets}
    result["final"] = result["points"][-1]["metrics"][metric]
    return result


def default_metric(result: dict) -> str:
    """What the recipe reports: the EMA's accuracy where it keeps one, with flip TTA where it asks for it."""
    flip = bool(result["summary"].get("test_flip"))  # the resolved aug.test_flip, from the recipe or an override
    base = "ema" if "ema" in result["points"][-1]["metrics"] else "model"
    return base + ("_flip" if flip else "")


def summarize(runs: list[dict], targets: list[float]) -> list[dict]:
    """Per recipe: medians (and worst) over seeds; ratios against the first recipe."""
    rows = []
    for label in dict.fromkeys(r["label"] for r in runs):
        mine = [r for r in runs if r["label"] == label]
        row = {"label": label, "seeds": [r["seed"] for r in mine], "metric": mine[0]["metric"],
               "final_mean": round(statistics.mean(r["final"] for r in mine), 2),
               "final_min": min(r["final"] for r in mine),
               "images_per_s": round(statistics.median(r["summary"]["train_images_per_s"] for r in mine), 1)}
        for t in targets:
            key = f"{t:.1f}"
            hits = [r["first_reach"][key] for r in mine]
            reached = [h for h in hits if h is not None]
            row[f"reached_{key}"] = f"{len(reached)}/{len(hits)}"
            if reached:
                row[f"images_to_{key}"] = statistics.median(h["images"] for h in reached)
                row[f"train_s_to_{key}"] = round(statistics.median(h["train_s"] for h in reached), 1)
        rows.append(row)
    base = rows[0]
    for row in rows[1:]:
        for t in targets:
            key = f"{t:.1f}"
            if f"images_to_{key}" in row and f"images_to_{key}" in base:
                row[f"fewer_images_{key}"] = round(base[f"images_to_{key}"] / row[f"images_to_{key}"], 2)
                row[f"speedup_{key}"] = round(base[f"train_s_to_{key}"] / row[f"train_s_to_{key}"], 2)
    return rows


def metric_label(run: dict) -> str:
    """What a run's curve measures, from its summary: test mIoU for segmentation, else test top-1."""
    return "test mIoU" if "test_miou" in run["summary"] else "test top-1"


def plot(runs: list[dict], path: Path, title: str, targets: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colors = {}
    for r in runs:
        color = colors.setdefault(r["label"], f"C{len(colors)}")
        values = [p["metrics"][r["metric"]] for p in r["points"]]
        kw = dict(color=color, marker=".", label=r["label"] if r["seed"] == runs[0]["seed"] or
                  r["label"] not in {x["label"] for x in runs[:runs.index(r)]} else None)
        axes[0].plot([p["images"] / 1000 for p in r["points"]], values, **kw)
        axes[1].plot([p["train_s"] / 60 for p in r["points"]], values, **{**kw, "label": None})
    label = metric_label(runs[0])
    finals = [r["final"] for r in runs]
    values = [p["metrics"][r["metric"]] for r in runs for p in r["points"]]
    low = 85 if label == "test top-1" else max(0.0, min(min(targets), min(values)) - 3)
    for ax, xlabel in zip(axes, ("training images (thousands)", "training wall time (min)")):
        for t in targets:
            ax.axhline(t, color="gray", lw=0.6, ls="--")
        ax.set(xlabel=xlabel, ylim=(low, max(max(targets), max(finals)) + 2))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{label} (%)")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", action="append", required=True, help="'LABEL: CONFIG [KEY=VALUE ...]' (repeatable)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--isa", choices=tuple(ISA_ENV), default="native", help="native (default) or avx2 (emulated)")
    ap.add_argument("--eval-every", type=int, default=30000, help="training images between evaluations")
    ap.add_argument("--targets", type=float, nargs="+", default=[93.0, 94.0],
                    help="targets (%%) of the recipe's metric: test top-1, or mIoU for segmentation")
    ap.add_argument("--metric", help="model | model_flip | ema | ema_flip | ema@D_flip (default: what each recipe "
                    "reports)")
    ap.add_argument("--ema-decays", type=float, nargs="*", default=[], metavar="D",
                    help="also evaluate an EMA of each decay D beside the recipe's own (metric ema@D_flip; their "
                         "per-step updates count in the training time)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", help="JSON path (default benchmarks/results/tta-<date>-<isa>.json)")
    args = ap.parse_args(argv)
    if any(not 0 < d < 1 for d in args.ema_decays):
        ap.error("--ema-decays must lie strictly between 0 and 1")
    recipes = [parse_recipe(r) for r in args.recipe]
    out = Path(args.out or RESULTS / f"tta-{time.strftime('%Y%m%d-%H%M')}-{args.isa}.json")
    runs = [run_one(recipe, seed, args) for recipe, seed in order(recipes, args.seeds)]
    rows = summarize(runs, args.targets)
    report = {"command": shlex.join(["python", "benchmarks/bench_tta.py", *(argv if argv is not None else sys.argv[1:])]),
              "machine": runs[0]["machine"], "isa": args.isa, "eval_every": args.eval_every, "summary": rows,
              "runs": runs}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    plot(runs, out.with_suffix(".png"), f"{runs[0]['machine']['cpu']} ({args.isa}): {metric_label(runs[0])} against "
         f"training", args.targets)
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
