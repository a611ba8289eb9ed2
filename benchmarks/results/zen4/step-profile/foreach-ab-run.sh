#!/bin/bash
# foreach AdamW A/B: the real Trainer step (bench_train_steps, 600 steps, 2 threads), base = bd0ba59 (for-loop AdamW),
# new = working tree (foreach); alternating B N N B ...; native and AVX2-emulated
cd /work/main
AVX2="CONVMIXER_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2"
for isa in native avx2; do
  envs=""; [ $isa = avx2 ] && envs="$AVX2"
  for order in "base new" "new base"; do
    for side in $order; do
      src=/work/main/src; [ $side = base ] && src=/tmp/wt_base/src
      echo "== $isa $side"
      env $envs PYTHONPATH=$src .venv/bin/python benchmarks/bench_train_steps.py --steps 601 2>&1 | grep -v Warn | tail -3
    done
  done
done
