#!/bin/bash
# Step cost of the default model with depthwise kernel 3 instead of 5 (docs/RESULTS.md, machine D, sixth session).
# The same protocol as benchmarks/bench_step_cost.py (shapes alternate, 5 rounds of 20 steps, batch 32, 2 threads,
# native then AVX2 emulated). summary.json beside this file was written by an earlier inline copy of that script, with
# other key names (ratio_to_default_median / k3_over_k5 / w160_over_w128 for ratio_median); the figures mean the same.
set -e
cd "$(dirname "$0")/../../../.."
exec .venv/bin/python benchmarks/bench_step_cost.py --shape k5: --shape k3:kernel_size=3 --out-dir "${OUT:-/tmp/step-cost}" --summary "${SUMMARY:-/tmp/step-cost/summary.json}"
