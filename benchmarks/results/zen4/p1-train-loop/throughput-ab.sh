# The default recipe (ConvMixer-128/8 p2, batch 64) against fmnist_p1 (the same model with patch 1, batch 32) in the
# real training loop (benchmarks/bench_train_steps.py: augmentation, forward, loss, backward, clipping, AdamW, EMA),
# 2 threads (THREADS=1 for one), 402 steps a run (two 200-step windows), alternated ROUNDS times per path so that
# both see the same machine. Output of 2026-12-06 (THREADS=1 ROUNDS=2, beside one other 1-thread run): throughput-ab-t1.txt
# Usage: bash benchmarks/results/zen4/p1-train-loop/throughput-ab.sh > OUT.txt   (ROUNDS=2 by default)
cd "$(dirname "$0")/../../../.."
AVX2="CONVMIXER_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2"
for path in native avx2; do
  for round in $(seq 1 "${ROUNDS:-2}"); do
    for recipe in fmnist:402 fmnist_p1:402; do
      env=""; [ $path = avx2 ] && env=$AVX2
      echo "path $path round $round recipe ${recipe%%:*}"
      env $env .venv/bin/python benchmarks/bench_train_steps.py --config "${recipe%%:*}" --steps "${recipe##*:}" --threads "${THREADS:-2}" | tail -1
    done
  done
done
