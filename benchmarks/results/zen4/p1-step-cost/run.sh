#!/bin/bash
# Step cost of the patch-1 shapes against the default (ConvMixer-128/8 p2) (docs/RESULTS.md, machine D, fifth session).
# The same protocol as benchmarks/bench_step_cost.py (shapes alternate, 5 rounds of 20 steps, batch 32, 2 threads,
# native then AVX2 emulated). summary.json beside this file was written by an earlier inline copy of that script, with
# other key names (ratio_to_default_median / k3_over_k5 / w160_over_w128 for ratio_median); the figures mean the same.
set -e
cd "$(dirname "$0")/../../../.."
exec .venv/bin/python benchmarks/bench_step_cost.py --shape w128p2: --shape w128p1:patch_size=1 --shape w160p1:dim=160,patch_size=1 --shape w192p1:dim=192,patch_size=1 --out-dir "${OUT:-/tmp/step-cost}" --summary "${SUMMARY:-/tmp/step-cost/summary.json}"
