"""Two versions of the fast CPU kernels (``kernels.c``) side by side inside one training run.

    git show HEAD~1:src/convmixer/fast/kernels.c > /tmp/base.c
    python benchmarks/ab_kernels.py /tmp/base.c                 # against the package's kernels.c, native ISA
    CONVMIXER_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python benchmarks/ab_kernels.py /tmp/base.c --json-out /tmp/ab-avx2.json

Separate processes cannot resolve a 5-10% change on a shared virtual machine whose speed moves by 25% from one
minute to the next (docs/RESULTS.md, machine D). Here one ``Trainer`` runs the recipe, and every ``--window``
steps the kernel libraries it calls are swapped (base, new, base, new, ...), so both versions train on the same
data, from nearly the same weights, on the same machine within seconds of each other. A step is timed from one
``on_step`` call to the next and counts for the version loaded while it ran; the first ``--warmup`` steps are left
out. Printed per version: the median step, and the median and range of the ratio base/new over consecutive window
pairs (above 1: the new version is faster). Only ``kernels.c`` can be compared this way: Python loads once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from torch import nn

from convmixer.bench.machine import machine
from convmixer.fast import build
from convmixer.training.engine import Trainer
from recipe_steps import add_recipe_args, prepare_process, step_config


def depthwise_kernel_sizes(model: nn.Module) -> set[int]:
    """Kernel sizes of the model's depthwise convolutions (the libraries to build besides the elementwise one)."""
    return {m.kernel_size[0] for m in model.modules()
            if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels}


class StepAlternator:
    """``on_step`` hook: times every step (from one call to the next) and, after ``warmup`` calls, switches to the
    next of ``variants`` versions every ``window`` timed steps (:meth:`switch`). Subclasses say what a version is;
    the scripts in benchmarks/results/ that compare Python changes inside one run use it as it is, with ``on_switch``."""

    def __init__(self, variants: int, window: int, warmup: int, on_switch=None) -> None:
        self.variants, self.window, self.warmup, self.on_switch = variants, window, warmup, on_switch
        self.steps_ms: list[list[float]] = [[] for _ in range(variants)]
        self.windows_ms: list[list[float]] = [[] for _ in range(variants)]  # median step of each complete window
        self.current, self.count, self.last = 0, 0, None
        self._window: list[float] = []

    def first_step(self, trainer: Trainer) -> None:
        """Called after the first step, once the trainer has built its model."""

    def switch(self, i: int) -> None:
        self.current = i
        if self.on_switch is not None:
            self.on_switch(i)

    def __call__(self, trainer: Trainer) -> None:
        now = time.perf_counter()
        self.count += 1
        if self.count == 1:
            self.first_step(trainer)
        elif self.count > self.warmup and self.last is not None:
            step_ms = (now - self.last) * 1e3
            self.steps_ms[self.current].append(step_ms)
            self._window.append(step_ms)
            if len(self._window) == self.window:
                self.windows_ms[self.current].append(statistics.median(self._window))
                self._window = []
                self.switch((self.current + 1) % self.variants)
        self.last = time.perf_counter()  # the switch itself is not counted

    def summary(self) -> dict:
        pairs = min(len(w) for w in self.windows_ms)
        if pairs == 0:
            raise SystemExit("ab_kernels: no complete window pair; raise --steps or lower --window")
        ratios = [a / b for a, b in zip(self.windows_ms[0][:pairs], self.windows_ms[1][:pairs])]
        out = {}
        for name, steps in zip(("base", "new"), self.steps_ms):
            out[name] = {"median_step_ms": round(statistics.median(steps), 2), "steps": len(steps)}
        out["ratio_base_over_new"] = {"median": round(statistics.median(ratios), 3), "min": round(min(ratios), 3),
                                      "max": round(max(ratios), 3), "window_pairs": pairs}
        return out

    def line(self, names: tuple[str, str], plan: str) -> str:
        """One line: each version's median step and the first's over the second's per window pair."""
        s, (a, b) = self.summary(), names
        r = s["ratio_base_over_new"]
        return (f"{a}: {s['base']['median_step_ms']:.2f} ms, {b}: {s['new']['median_step_ms']:.2f} ms (median "
                f"steps); {a}/{b} per window pair: median {r['median']:.3f}, range {r['min']:.3f}-{r['max']:.3f}, "
                f"{r['window_pairs']} pairs; {plan}")


class Alternator(StepAlternator):
    """Versions of ``kernels.c``: both are built after the first step and installed in turn."""

    def __init__(self, sources: list[str], window: int, warmup: int) -> None:
        super().__init__(len(sources), window, warmup)
        self.sources = sources
        self.libs: list[dict[int, object]] = []

    def first_step(self, trainer: Trainer) -> None:
        sizes = {0} | depthwise_kernel_sizes(trainer.model)
        self.libs = [{k: build.build_source(src, k) for k in sorted(sizes)} for src in self.sources]
        self.switch(0)

    def switch(self, i: int) -> None:
        super().switch(i)
        for k, lib in self.libs[i].items():
            build.install(k, lib)


def run_recipe(hook: StepAlternator, config: str, overrides: list[str], steps: int, threads: int) -> str:
    """Train ``config`` for ``steps`` optimizer steps with ``hook`` as ``on_step``, as the CLI sets the process up;
    returns the execution plan's description."""
    prepare_process(threads)
    with tempfile.TemporaryDirectory(prefix="convmixer-ab-") as tmp:
        cfg = step_config(config, overrides, tmp, steps)
        trainer = Trainer(cfg, on_step=hook)
        trainer.fit()
        return trainer.plan.describe()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base", type=Path, help="the kernels.c to compare against (e.g. from git show REV:...)")
    ap.add_argument("new", type=Path, nargs="?", default=None, help="the other kernels.c (default: the package's)")
    add_recipe_args(ap)
    ap.add_argument("--steps", type=int, default=1200, help="optimizer steps in all (default 1200)")
    ap.add_argument("--window", type=int, default=10, help="steps per version before swapping (default 10)")
    ap.add_argument("--warmup", type=int, default=40, help="steps left out at the start (default 40)")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the result as JSON here")
    args = ap.parse_args(argv)
    texts = []
    for path in (args.base, args.new):
        try:
            texts.append(path.read_text(encoding="utf-8") if path else build.kernel_source())
        except OSError as e:
            ap.error(f"cannot read {path}: {e.strerror}")
    for path, text in zip((args.base, args.new), texts):
        try:
            build.build_source(text, 0)
        except RuntimeError as e:
            ap.error(f"{path or 'the package kernels.c'} does not compile: {e}")
    hook = Alternator(texts, args.window, args.warmup)
    plan = run_recipe(hook, args.config, args.set, args.steps, args.threads)
    build.reset()
    if "kernel=fused" not in plan:
        print(f"ab_kernels: this run's plan does not call the kernels, so both sides timed the same operators: {plan}",
              file=sys.stderr)
        return 2
    result = hook.summary()
    ratio = result["ratio_base_over_new"]
    for name in ("base", "new"):
        print(f"{name}: median step {result[name]['median_step_ms']:.2f} ms over {result[name]['steps']} steps")
    print(f"base / new: {ratio['median']:.3f} (window pairs {ratio['window_pairs']}, range {ratio['min']:.3f}-"
          f"{ratio['max']:.3f}); plan: {plan}")
    if args.json_out:
        doc = {"config": args.config, "overrides": args.set, "threads": args.threads, "window": args.window,
               "warmup": args.warmup, "plan": plan, "machine": machine(),
               "sources": {"base": str(args.base), "new": str(args.new or "package kernels.c")},
               "sha256": {n: hashlib.sha256(t.encode()).hexdigest()[:16] for n, t in zip(("base", "new"), texts)},
               **result}
        args.json_out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
