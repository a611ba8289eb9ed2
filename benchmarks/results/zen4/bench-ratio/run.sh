#!/bin/bash
# `convmixer bench --mode train` (fast path against the plain reference in the same process) for the code before
# this session (a0653b4, a worktree at /tmp/wt_base) and after, alternating, AVX2 fp32 emulated and native,
# batch 32 and 128, 2 threads. Run from the repository root: OUT=/tmp/br bash benchmarks/results/zen4/bench-ratio/run.sh
set -e
git worktree add -f /tmp/wt_base a0653b4 >/dev/null 2>&1 || true
OUT=${OUT:-/tmp/br}; mkdir -p $OUT
AVX2="CONVMIXER_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2"
for round in 1 2; do
  for isa in avx2 native; do
    envs=""; [ $isa = avx2 ] && envs="$AVX2"
    for b in 32 128; do
      for side in base new; do
        src=$PWD/src; [ $side = base ] && src=/tmp/wt_base/src
        env $envs PYTHONPATH=$src .venv/bin/convmixer bench --model convmixer_fmnist --mode train --in-chans 1 \
          --num-classes 10 --image-size 28 --batch-size $b --threads 2 --repeats 10 --no-memory --no-progress \
          --json-out $OUT/$isa-b$b-$side-r$round.json > /dev/null 2>&1
      done
    done
  done
done
